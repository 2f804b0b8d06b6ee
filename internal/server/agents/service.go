// Package agents owns enrolled clients and their agents: enrollment tokens
// and enrollment, agent credentials, heartbeats and the online/offline
// status, and the queue of commands delivered over each agent's stream.
package agents

import (
	"context"

	"github.com/cofferhq/coffer"
)

// Service implements clients and agents.
type Service struct{}

// Authenticate resolves an agent credential (cfr_a_…) to its principal.
// (Scaffolding: the agents helper replaces this file.)
func (s *Service) Authenticate(ctx context.Context, secret string) (*coffer.Principal, error) {
	return nil, coffer.Errorf(coffer.KindUnauthenticated, "invalid_token", "not implemented yet")
}
