package coffer

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

type recorder struct {
	got []*Event
	err error
	ctx []error // each Publish's ctx.Err()
}

func (r *recorder) Publish(ctx context.Context, e *Event) error {
	r.got = append(r.got, e)
	r.ctx = append(r.ctx, ctx.Err())
	return r.err
}

func TestRecord(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	r := &recorder{}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	Record(canceled, r, log, &Principal{UserID: "u1", Username: "ada"}, &Event{Code: "a"})
	Record(canceled, r, log, nil, &Event{Code: "b"})
	Record(canceled, r, log, nil, &Event{Code: "c", Actor: "agent:c1"})
	for i, want := range []struct{ id, actor string }{{"u1", "ada"}, {"", "system"}, {"", "agent:c1"}} {
		if e := r.got[i]; e.ActorID != want.id || e.Actor != want.actor {
			t.Errorf("event %s: actor %q %q, want %q %q", e.Code, e.ActorID, e.Actor, want.id, want.actor)
		}
		if r.ctx[i] != nil {
			t.Errorf("event %s published with a canceled context: a shutdown would drop it", r.got[i].Code)
		}
	}

	Record(context.Background(), nil, log, nil, &Event{Code: "off"}) // events off: nothing, no panic
	r.err = errors.New("disk full")
	Record(context.Background(), r, log, nil, &Event{Code: "lost", Resource: ResourceRef{Type: "plan", ID: "p1"}})
	if out := logs.String(); !strings.Contains(out, "code=lost") || !strings.Contains(out, "id=p1") || !strings.Contains(out, "disk full") {
		t.Errorf("a failed publish logged %q", out)
	}
}
