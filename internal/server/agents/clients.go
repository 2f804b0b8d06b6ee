package agents

import (
	"context"
	"errors"
	"fmt"
	"strings"

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

// OwnerName returns the username of c's owner: "" when it has none, and
// the owner's id when that user cannot be read.
func (s *Service) OwnerName(ctx context.Context, c *coffer.Client) string {
	if c.OwnerID == "" {
		return ""
	}
	u, err := s.store.GetUser(ctx, c.OwnerID)
	if err != nil {
		if !coffer.IsKind(err, coffer.KindNotFound) {
			s.log.Warn("read a client's owner", "client_id", c.ID, "user_id", c.OwnerID, "err", err)
		}
		return c.OwnerID
	}
	return u.Username
}

// ClientPatch is a change to a client; nil fields stay as they are.
type ClientPatch struct {
	Name *string
	// OwnerID names the user who may operate the client besides admins;
	// "" clears it.
	OwnerID *string
}

// UpdateClient applies patch to client id on behalf of actor and returns
// the client as it is now, with an audit event per change. Renaming needs
// the operate permission on the client (coffer.Principal.MayOperate: an
// operator only renames clients they own); assigning the owner needs
// manage (KindForbidden "owner_change_needs_admin"). An owner that is not
// a user is KindNotFound "user_not_found". Names need not be unique.
func (s *Service) UpdateClient(ctx context.Context, actor *coffer.Principal, id string, patch ClientPatch) (*coffer.Client, error) {
	c, err := s.store.GetClient(ctx, id)
	if err != nil {
		return nil, err
	}
	var upd metadb.ClientUpdate
	if patch.Name != nil {
		name := strings.TrimSpace(*patch.Name)
		if name == "" {
			return nil, invalidField("name", "a client's name cannot be empty")
		}
		if err := checkText("name", name, 100); err != nil {
			return nil, err
		}
		if err := actor.MayOperate(c); err != nil {
			return nil, err
		}
		upd.Name = &name
	}
	if patch.OwnerID != nil {
		if !actor.Can(coffer.PermManage) {
			return nil, coffer.Errorf(coffer.KindForbidden, "owner_change_needs_admin",
				"only an admin may assign a client's owner: the owner may run its backups and restore onto it").
				With("required_permission", string(coffer.PermManage))
		}
		owner := strings.TrimSpace(*patch.OwnerID)
		if owner != "" {
			if _, err := s.store.GetUser(ctx, owner); err != nil {
				if coffer.IsKind(err, coffer.KindNotFound) {
					return nil, coffer.Errorf(coffer.KindNotFound, "user_not_found",
						"no user with id %q: give the id of an existing user as owner_id, or \"\" for none", truncate(owner, 64)).
						With("field", "owner_id")
				}
				return nil, err
			}
		}
		upd.OwnerID = &owner
	}
	if upd.Name == nil && upd.OwnerID == nil {
		return c, nil
	}
	before, after, err := s.store.UpdateClient(ctx, id, upd)
	var ce *coffer.Error
	if errors.As(err, &ce) && ce.Code == "user_not_found" { // deleted meanwhile
		return nil, ce.With("field", "owner_id")
	}
	if err != nil {
		return nil, err
	}
	if before.Name != after.Name {
		s.log.Info("client renamed", "client_id", id, "from", before.Name, "to", after.Name)
		s.publish(ctx, actor, &coffer.Event{Level: coffer.LevelInfo, Code: "client.renamed", Title: "Client renamed",
			Message:  fmt.Sprintf("%s renamed the client %s to %s.", actor.Username, quote(before.Name), quote(after.Name)),
			Resource: clientRef(id), Audience: coffer.RoleViewer})
	}
	if before.OwnerID != after.OwnerID {
		s.log.Info("client owner changed", "client_id", id, "from", before.OwnerID, "to", after.OwnerID)
		was := s.OwnerName(ctx, before)
		msg := fmt.Sprintf("%s cleared the owner of the client %s (was %s): only admins may act on it now.",
			actor.Username, quote(after.Name), was)
		if after.OwnerID != "" {
			msg = fmt.Sprintf("%s made %s the owner of the client %s", actor.Username, s.OwnerName(ctx, after), quote(after.Name))
			if before.OwnerID != "" {
				msg += " (was " + was + ")"
			}
			msg += "."
		}
		s.publish(ctx, actor, &coffer.Event{Level: coffer.LevelInfo, Code: "client.owner_changed", Title: "Client owner changed",
			Message: msg, Resource: clientRef(id), Audience: coffer.RoleViewer})
	}
	return after, nil
}

// DeleteClient deletes a client on behalf of actor, who must hold the
// manage permission (KindForbidden "forbidden" otherwise). Its credential
// stops working at once, and its command streams on this replica end
// (those on other replicas end at their next credential check). Its
// backups and restores stay in the history; its log lines go with it.
func (s *Service) DeleteClient(ctx context.Context, actor *coffer.Principal, id string) (*coffer.Client, error) {
	if !actor.Can(coffer.PermManage) {
		return nil, coffer.Errorf(coffer.KindForbidden, "forbidden",
			"only an admin may delete a client: its agent would have to enroll again").
			With("required_permission", string(coffer.PermManage))
	}
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
