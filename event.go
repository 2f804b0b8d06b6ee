package coffer

import (
	"context"
	"log/slog"
	"time"
)

// Level is an event's severity code. The high nibble is the class, as in the
// seed specification: 0x0_ info, 0x2_ success, 0x4_ warning, 0x5_ error; the
// low nibble is free for finer grades within a class.
type Level int

// The level classes.
const (
	LevelInfo    Level = 0x00
	LevelSuccess Level = 0x20
	LevelWarning Level = 0x40
	LevelError   Level = 0x50
)

// Class returns the class of l (its high nibble).
func (l Level) Class() Level { return l & 0xF0 }

// String names the class of l: "info", "success", "warning" or "error".
func (l Level) String() string {
	switch l.Class() {
	case LevelSuccess:
		return "success"
	case LevelWarning:
		return "warning"
	case LevelError:
		return "error"
	}
	return "info"
}

// ParseLevelClass returns the class named by s ("info", "success",
// "warning", "error").
func ParseLevelClass(s string) (Level, bool) {
	for _, l := range []Level{LevelInfo, LevelSuccess, LevelWarning, LevelError} {
		if l.String() == s {
			return l, true
		}
	}
	return 0, false
}

// ResourceRef names the resource an event is about.
type ResourceRef struct {
	Type string // "user", "api_token", "client", "backup", …
	ID   string
}

// Event is one entry of the live event stream. Every event is stored, so a
// subscriber that reconnects can replay what it missed by id.
type Event struct {
	ID       int64 // assigned when stored; strictly increasing in commit order
	Level    Level
	Code     string // stable machine string, e.g. "user.created"
	Title    string
	Message  string
	Resource ResourceRef
	// ActorID and Actor name who caused the event ("" and "system" for the server itself).
	ActorID string
	Actor   string
	// Audience is the least role that may see the event. UserID, when set,
	// names a user who may see it whatever their role (the event is about them).
	Audience  Role
	UserID    string
	CreatedAt time.Time
}

// VisibleTo reports whether the principal may see the event.
func (e *Event) VisibleTo(p *Principal) bool {
	if p == nil || !p.Can(PermRead) {
		return false
	}
	if e.UserID != "" && e.UserID == p.UserID {
		return true
	}
	return p.Role.AtLeast(e.Audience)
}

// Publisher records events: the server's event hub (internal/server/events).
type Publisher interface {
	Publish(ctx context.Context, e *Event) error
}

// Record publishes e with pub (nil: events are off) on behalf of p, or of
// the server when p is nil and e names no actor yet. The event is recorded
// even when ctx ends right after what it reports happened (a shutdown),
// and a failure to record it is only logged: the change it reports,
// already made, is what counts.
func Record(ctx context.Context, pub Publisher, log *slog.Logger, p *Principal, e *Event) {
	if p != nil {
		e.ActorID, e.Actor = p.UserID, p.Username
	} else if e.Actor == "" {
		e.Actor = "system"
	}
	if pub == nil {
		return
	}
	if err := pub.Publish(context.WithoutCancel(ctx), e); err != nil {
		log.Error("record event", "code", e.Code, "resource", e.Resource.Type, "id", e.Resource.ID, "err", err)
	}
}
