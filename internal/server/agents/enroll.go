package agents

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/auth"
)

// CreateEnrollmentToken issues a one-time enrollment token on behalf of
// actor and returns its secret, which is never retrievable again. name is
// the name the enrolled client gets ("" = its hostname); ttl 0 takes the
// default lifetime, otherwise it must lie between MinEnrollTTL and
// MaxEnrollTTL.
func (s *Service) CreateEnrollmentToken(ctx context.Context, actor *coffer.Principal, name string, ttl time.Duration) (string, *coffer.EnrollmentToken, error) {
	name = strings.TrimSpace(name)
	if err := checkText("name", name, 100); err != nil {
		return "", nil, err
	}
	if ttl == 0 {
		ttl = s.opts.EnrollTTL
	}
	if ttl < MinEnrollTTL || ttl > MaxEnrollTTL {
		return "", nil, invalidField("expires_in_seconds", "an enrollment token lives %d to %d seconds, not %d",
			int(MinEnrollTTL.Seconds()), int(MaxEnrollTTL.Seconds()), int(ttl.Seconds()))
	}
	secret, hash := auth.NewSecret(protocol.EnrollPrefix)
	t := &coffer.EnrollmentToken{TokenHash: hash, Name: name, CreatedBy: actor.UserID,
		ExpiresAt: s.now().Add(ttl).UTC().Truncate(time.Microsecond)}
	if err := s.store.CreateEnrollmentToken(ctx, t); err != nil {
		return "", nil, err
	}
	target := "a new client"
	if name != "" {
		target = "the client " + quote(name)
	}
	s.publish(ctx, actor, &coffer.Event{Level: coffer.LevelInfo, Code: "enrollment_token.created", Title: "Enrollment token created",
		Message:  fmt.Sprintf("%s created an enrollment token for %s, valid until %s.", actor.Username, target, t.ExpiresAt.Format(time.RFC3339)),
		Resource: coffer.ResourceRef{Type: "enrollment_token", ID: t.ID}, Audience: coffer.RoleOperator})
	return secret, t, nil
}

// Enroll exchanges an enrollment token for a new client and its
// credential, which the response carries once. A token works once: a used
// one fails with "enrollment_token_used", an expired one with
// "enrollment_token_expired", any other with "enrollment_token_invalid"
// (all KindUnauthenticated).
func (s *Service) Enroll(ctx context.Context, req protocol.EnrollRequest) (*protocol.EnrollResponse, error) {
	if !strings.HasPrefix(req.Token, protocol.EnrollPrefix) {
		return nil, coffer.Errorf(coffer.KindUnauthenticated, "enrollment_token_invalid",
			"this is not an enrollment token (they start %q): create one with POST /api/v1/enrollment-tokens", protocol.EnrollPrefix)
	}
	name := strings.TrimSpace(req.Name)
	if err := checkText("name", name, 100); err != nil {
		return nil, err
	}
	info, err := clientInfo(req.MachineInfo)
	if err != nil {
		return nil, err
	}
	credential, hash := auth.NewSecret(protocol.CredentialPrefix)
	c := &coffer.Client{Name: name, Hostname: info.Hostname, OS: info.OS, Arch: info.Arch, IPv4: info.IPv4, IPv6: info.IPv6,
		AgentVersion: info.AgentVersion, CommandsAllowed: info.CommandsAllowed, CredentialHash: hash}
	if _, err := s.store.EnrollClient(ctx, auth.HashSecret(req.Token), c); err != nil {
		return nil, err
	}
	s.log.Info("client enrolled", "client_id", c.ID, "client", c.Name, "hostname", c.Hostname)
	s.publish(ctx, nil, &coffer.Event{Level: coffer.LevelInfo, Code: "client.enrolled", Title: "Client enrolled",
		Message: fmt.Sprintf("The agent on %s (%s/%s, agent %s) enrolled as the client %s.",
			quote(c.Hostname), c.OS, c.Arch, orNone(c.AgentVersion), quote(c.Name)),
		Resource: clientRef(c.ID), Audience: coffer.RoleViewer, Actor: agentName(c.Name)})
	return &protocol.EnrollResponse{
		Client:           protocol.AgentClient{ID: c.ID, Name: c.Name, Hostname: c.Hostname},
		Credential:       credential,
		HeartbeatSeconds: s.heartbeatSeconds(),
	}, nil
}

// Authenticate resolves an agent credential (cfr_a_…) to its principal.
// The credential is looked up on every call, so deleting the client
// revokes it at once. An unknown credential is KindUnauthenticated
// "invalid_token".
func (s *Service) Authenticate(ctx context.Context, secret string) (*coffer.Principal, error) {
	if !strings.HasPrefix(secret, protocol.CredentialPrefix) {
		return nil, invalidCredential()
	}
	c, err := s.store.ClientByCredentialHash(ctx, auth.HashSecret(secret))
	if coffer.IsKind(err, coffer.KindNotFound) {
		return nil, invalidCredential()
	}
	if err != nil {
		return nil, err
	}
	return &coffer.Principal{Kind: coffer.PrincipalAgent, ClientID: c.ID, Username: agentName(c.Name),
		Scopes: []coffer.Permission{coffer.PermAgent}, CredentialID: c.ID}, nil
}

func invalidCredential() error {
	return coffer.Errorf(coffer.KindUnauthenticated, "invalid_token",
		"this agent credential is not valid (the client may have been deleted): enroll the agent again with "+
			"`coffer agent enroll --server URL --token T` and a new enrollment token")
}

func (s *Service) heartbeatSeconds() int {
	return max(1, int(s.opts.HeartbeatInterval/time.Second))
}

// clientInfo checks what an agent reports about its machine.
func clientInfo(m protocol.MachineInfo) (coffer.ClientInfo, error) {
	info := coffer.ClientInfo{Hostname: strings.TrimSpace(m.Hostname), OS: m.OS, Arch: m.Arch, AgentVersion: m.AgentVersion,
		CommandsAllowed: m.CommandsAllowed == nil || *m.CommandsAllowed}
	if info.Hostname == "" {
		return info, invalidField("hostname", "the agent must report its machine's hostname")
	}
	for _, f := range []struct {
		name, value string
		max         int
	}{{"hostname", info.Hostname, 255}, {"os", info.OS, 64}, {"arch", info.Arch, 64}, {"agent_version", info.AgentVersion, 64}} {
		if err := checkText(f.name, f.value, f.max); err != nil {
			return info, err
		}
	}
	var err error
	if info.IPv4, err = addresses("ipv4", m.IPv4, true); err != nil {
		return info, err
	}
	if info.IPv6, err = addresses("ipv6", m.IPv6, false); err != nil {
		return info, err
	}
	return info, nil
}

// maxAddresses bounds each address list of a machine.
const maxAddresses = 64

func addresses(field string, list []string, v4 bool) ([]string, error) {
	if len(list) > maxAddresses {
		return nil, invalidField(field, "at most %d addresses may be reported, not %d", maxAddresses, len(list))
	}
	out := make([]string, 0, len(list))
	for _, a := range list {
		ip, err := netip.ParseAddr(a)
		if err != nil || ip.Is4() != v4 {
			kind := "IPv6"
			if v4 {
				kind = "IPv4"
			}
			return nil, invalidField(field, "%q is not an %s address", a, kind)
		}
		out = append(out, ip.String())
	}
	return out, nil
}

// checkText refuses values longer than max characters, invalid UTF-8 and
// control characters.
func checkText(field, v string, maxLen int) error {
	if !utf8.ValidString(v) || strings.ContainsFunc(v, unicode.IsControl) {
		return invalidField(field, "%s must be UTF-8 text without control characters", field)
	}
	if n := utf8.RuneCountInString(v); n > maxLen {
		return invalidField(field, "%s may have at most %d characters, not %d", field, maxLen, n)
	}
	return nil
}

func invalidField(field, format string, args ...any) error {
	return coffer.Errorf(coffer.KindInvalid, "invalid_"+field, format, args...).With("field", field)
}

func agentName(clientName string) string { return "agent:" + clientName }

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
