package backups

import (
	"context"
	"fmt"
	"strings"

	"github.com/cofferhq/coffer"
)

// The event codes of backups.
const (
	EventQueued          = "backup.queued"
	EventStarted         = "backup.started"
	EventSucceeded       = "backup.succeeded"
	EventPartial         = "backup.partial"
	EventFailed          = "backup.failed"
	EventCanceled        = "backup.canceled"
	EventCancelRequested = "backup.cancel_requested"
)

// actor says who caused an event: a person, the client's agent, or the
// server itself (nil principal and no client).
type actor struct {
	p        *coffer.Principal
	clientID string
}

func agentActor(clientID string) actor    { return actor{clientID: clientID} }
func userActor(p *coffer.Principal) actor { return actor{p: p} }

var systemActor = actor{}

// publish records an event about backup b. A failure to record it is
// logged: the backup's state, already stored, is what counts.
func (s *Service) publish(ctx context.Context, a actor, b *coffer.Backup, code string, level coffer.Level, title, message string) {
	e := &coffer.Event{Level: level, Code: code, Title: title, Message: message,
		Resource: coffer.ResourceRef{Type: "backup", ID: b.ID}, Audience: coffer.RoleViewer}
	if a.p == nil && a.clientID != "" {
		e.Actor = "agent:" + a.clientID
	}
	coffer.Record(ctx, s.events, s.log, a.p, e)
}

// what describes a backup in event messages: its paths and host.
func what(b *coffer.Backup) string {
	paths := strings.Join(b.Paths[:min(len(b.Paths), 3)], ", ")
	if len(b.Paths) > 3 {
		paths += fmt.Sprintf(" and %d more", len(b.Paths)-3)
	}
	if paths == "" {
		paths = "(plan paths)"
	}
	host := b.HostName
	if host == "" {
		host = "client " + b.ClientID
	}
	return fmt.Sprintf("backup %s of %s on %s", b.ID, paths, host)
}

// publishFinished records the event of a backup that reached a final state.
func (s *Service) publishFinished(ctx context.Context, a actor, b *coffer.Backup) {
	st := b.Stats
	switch b.State {
	case coffer.JobSucceeded:
		s.publish(ctx, a, b, EventSucceeded, coffer.LevelSuccess, "Backup succeeded",
			fmt.Sprintf("The %s succeeded: %d files, %d bytes, %d bytes added.", what(b), st.Files, st.LogicalBytes, st.AddedBytes))
	case coffer.JobPartial:
		s.publish(ctx, a, b, EventPartial, coffer.LevelWarning, "Backup partly succeeded",
			fmt.Sprintf("The %s finished, but %d entries could not be backed up (listed on the backup).", what(b), max(uint64(len(b.Errors)), st.ErrorCount)))
	case coffer.JobFailed:
		s.publish(ctx, a, b, EventFailed, coffer.LevelError, "Backup failed", fmt.Sprintf("The %s failed: %s", what(b), b.Error))
	case coffer.JobCanceled:
		s.publish(ctx, a, b, EventCanceled, coffer.LevelWarning, "Backup canceled", fmt.Sprintf("The %s was canceled.", what(b)))
	}
}
