package agents

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/protocol"
)

// Heartbeat records that clientID's agent is alive, with what it reports
// about its machine. A client that was offline comes back online with a
// client.online event.
func (s *Service) Heartbeat(ctx context.Context, clientID string, req protocol.HeartbeatRequest) (*protocol.HeartbeatResponse, error) {
	info, err := clientInfo(req.MachineInfo)
	if err != nil {
		return nil, err
	}
	wasOffline, err := s.store.RecordHeartbeat(ctx, clientID, info)
	if err != nil {
		return nil, err
	}
	if wasOffline {
		c, err := s.store.GetClient(ctx, clientID)
		if err != nil {
			return nil, err
		}
		s.log.Info("client online", "client_id", c.ID, "client", c.Name)
		s.publish(ctx, nil, &coffer.Event{Level: coffer.LevelSuccess, Code: "client.online", Title: "Client online",
			Message: "The agent of " + quote(c.Name) + " is sending heartbeats again.", Resource: clientRef(c.ID),
			Audience: coffer.RoleViewer})
	}
	return &protocol.HeartbeatResponse{Message: "Heartbeat recorded.", Success: true, ServerTime: s.now().UTC(),
		HeartbeatSeconds: s.heartbeatSeconds()}, nil
}

// GetClient returns a client, or KindNotFound "client_not_found".
func (s *Service) GetClient(ctx context.Context, id string) (*coffer.Client, error) {
	return s.store.GetClient(ctx, id)
}

// ListClients returns the clients matching f, ordered by name, and how
// many match in all.
func (s *Service) ListClients(ctx context.Context, f metadb.ClientFilter) ([]coffer.Client, int, error) {
	switch f.Status {
	case "", coffer.ClientOnline, coffer.ClientOffline:
	default:
		return nil, 0, invalidField("status", "status %q is not valid: use online or offline", f.Status)
	}
	return s.store.ListClients(ctx, f)
}

// DeleteClient deletes a client on behalf of actor. Its credential stops
// working at once, and its command streams on this replica end (those on
// other replicas end at their next credential check). Its backups and
// restores stay in the history.
func (s *Service) DeleteClient(ctx context.Context, actor *coffer.Principal, id string) (*coffer.Client, error) {
	c, err := s.store.DeleteClient(ctx, id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	for f := range s.feeds[id] {
		f.goneOnce.Do(func() { close(f.gone) })
	}
	s.mu.Unlock()
	s.log.Info("client deleted", "client_id", c.ID, "client", c.Name)
	s.publish(ctx, actor, &coffer.Event{Level: coffer.LevelInfo, Code: "client.deleted", Title: "Client deleted",
		Message: fmt.Sprintf("%s deleted the client %s (host %s); its agent's credential no longer works.",
			actor.Username, quote(c.Name), quote(c.Hostname)),
		Resource: clientRef(c.ID), Audience: coffer.RoleViewer})
	return c, nil
}
