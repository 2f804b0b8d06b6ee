package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
)

// Event is one entry of the event stream on the wire.
type Event struct {
	ID        int64        `json:"id" doc:"Strictly increasing; the SSE id, for Last-Event-ID."`
	Level     int          `json:"level" doc:"0x00–0x0F info, 0x20–0x2F success, 0x40–0x4F warning, 0x50–0x5F error."`
	Severity  string       `json:"severity" enum:"info,success,warning,error" doc:"The class of level, by name."`
	Code      string       `json:"code" doc:"Stable machine string, e.g. user.created."`
	Title     string       `json:"title"`
	Message   string       `json:"message"`
	Resource  *ResourceRef `json:"resource,omitempty" doc:"What the event is about; absent when nothing in particular."`
	Actor     string       `json:"actor" doc:"Who caused it: a username, or system."`
	CreatedAt time.Time    `json:"created_at"`
}

// ResourceRef names the resource an event is about.
type ResourceRef struct {
	Type string `json:"type" example:"user"`
	ID   string `json:"id"`
}

func toEvent(e *coffer.Event) Event {
	out := Event{ID: e.ID, Level: int(e.Level), Severity: e.Level.String(), Code: e.Code, Title: e.Title,
		Message: e.Message, Actor: e.Actor, CreatedAt: e.CreatedAt}
	if e.Resource.Type != "" {
		out.Resource = &ResourceRef{Type: e.Resource.Type, ID: e.Resource.ID}
	}
	return out
}

// visibleQuery restricts an event query to what p may see.
func visibleQuery(q metadb.EventQuery, p *coffer.Principal) metadb.EventQuery {
	q.Audiences = nil
	for _, r := range coffer.Roles {
		if p.Role.AtLeast(r) {
			q.Audiences = append(q.Audiences, r)
		}
	}
	if len(q.Audiences) == 0 {
		q.Audiences = []coffer.Role{"none"} // an unknown role sees only events about itself
	}
	q.UserID = p.UserID
	return q
}

func parseClasses(levels []string) ([]coffer.Level, error) {
	var out []coffer.Level
	for _, l := range levels {
		c, ok := coffer.ParseLevelClass(l)
		if !ok {
			return nil, coffer.Errorf(coffer.KindInvalid, "invalid_level", "level %q is not valid: use info, success, warning or error", l).
				With("field", "query.level")
		}
		out = append(out, c)
	}
	return out, nil
}

func classMatch(classes []coffer.Level, l coffer.Level) bool {
	if len(classes) == 0 {
		return true
	}
	for _, c := range classes {
		if c == l.Class() {
			return true
		}
	}
	return false
}

// ResourceParams filter events by what they are about (exported: huma
// reads the parameters of embedded exported structs only).
type ResourceParams struct {
	ResourceType string `query:"resource_type" maxLength:"32" doc:"Only events about this kind of resource (backup, restore, client, plan, repository, user…); with resource_id."`
	ResourceID   string `query:"resource_id" maxLength:"64" doc:"Only events about the resource with this id; with resource_type."`
}

// ref returns the resource asked for, zero for none; one of the two
// parameters without the other is an error.
func (p ResourceParams) ref() (coffer.ResourceRef, error) {
	if (p.ResourceType == "") != (p.ResourceID == "") {
		return coffer.ResourceRef{}, coffer.Errorf(coffer.KindInvalid, "invalid_resource",
			"resource_type and resource_id go together: give both, or neither").With("field", "query.resource_type")
	}
	return coffer.ResourceRef{Type: p.ResourceType, ID: p.ResourceID}, nil
}

// replayBatch is how many stored events one replay query fetches.
const replayBatch = 500

func (s *Server) registerEvents() {
	tags := []string{"events"}
	type streamIn struct {
		LastEventID string   `header:"Last-Event-ID" doc:"Replay every event after this id, then stream live (browsers send it when they reconnect)."`
		Level       []string `query:"level" doc:"Only these classes: info, success, warning, error."`
		ResourceParams
	}
	handle(s, Read, huma.Operation{
		OperationID: "event-stream", Method: http.MethodGet, Path: "/api/v1/events", Tags: tags,
		Summary: "Live event stream (SSE)",
		Description: "Server-Sent Events: each event is `id: <id>` and `data: <Event JSON>`. Heartbeat comments keep the " +
			"connection open. With Last-Event-ID the stream first replays what was missed. You see the events your role may see.",
		Responses: map[string]*huma.Response{"200": {Description: "A text/event-stream of Event objects.",
			Content: map[string]*huma.MediaType{"text/event-stream": {Schema: &huma.Schema{Ref: "#/components/schemas/Event"}}}}},
	}, func(ctx context.Context, in *streamIn) (*huma.StreamResponse, error) {
		classes, err := parseClasses(in.Level)
		if err != nil {
			return nil, err
		}
		resource, err := in.ref()
		if err != nil {
			return nil, err
		}
		var last int64
		replay := in.LastEventID != ""
		if replay {
			last, err = strconv.ParseInt(in.LastEventID, 10, 64)
			if err != nil || last < 0 {
				return nil, coffer.Errorf(coffer.KindInvalid, "invalid_last_event_id",
					"Last-Event-ID %q is not an event id: send the id of the last event you received", in.LastEventID)
			}
		} else if last, err = s.opts.EventLog.LastEventID(ctx); err != nil {
			return nil, err
		}
		return &huma.StreamResponse{Body: func(hctx huma.Context) {
			r, w := humago.Unwrap(hctx)
			st := &stream{s: s, w: w, rc: http.NewResponseController(w), p: principalFrom(ctx), classes: classes,
				resource: resource, last: last,
				authorization: r.Header.Get("Authorization"), cookie: cookieValue(hctx, SessionCookie)}
			hctx.SetHeader("Content-Type", "text/event-stream")
			hctx.SetHeader("Cache-Control", "no-store")
			hctx.SetHeader("X-Accel-Buffering", "no") // let reverse proxies pass events through at once
			hctx.SetStatus(http.StatusOK)
			st.run(r.Context())
		}}, nil
	})

	type historyIn struct {
		CursorParams
		Level []string  `query:"level" doc:"Only these classes: info, success, warning, error."`
		Since time.Time `query:"since" doc:"Only events created at or after this time (RFC 3339)."`
		Until time.Time `query:"until" doc:"Only events created before this time (RFC 3339)."`
		ResourceParams
	}
	type historyCursor struct {
		Before int64 `json:"b"`
	}
	handle(s, Read, huma.Operation{
		OperationID: "event-history", Method: http.MethodGet, Path: "/api/v1/events/history", Tags: tags,
		Summary: "Event history", Description: "The stored event log, newest first, cursor-paginated.",
	}, func(ctx context.Context, in *historyIn) (*struct{ Body *Page[Event] }, error) {
		classes, err := parseClasses(in.Level)
		if err != nil {
			return nil, err
		}
		resource, err := in.ref()
		if err != nil {
			return nil, err
		}
		var cur historyCursor
		if in.Cursor != "" {
			if err := decodeCursor(in.Cursor, &cur); err != nil {
				return nil, err
			}
		}
		q := visibleQuery(metadb.EventQuery{BeforeID: cur.Before, Classes: classes, Resource: resource, Limit: in.PageSize + 1,
			Descending: true},
			principalFrom(ctx))
		if !in.Since.IsZero() {
			q.Since = &in.Since
		}
		if !in.Until.IsZero() {
			q.Until = &in.Until
		}
		evs, err := s.opts.EventLog.ListEvents(ctx, q)
		if err != nil {
			return nil, err
		}
		var next *string
		if len(evs) > in.PageSize {
			evs = evs[:in.PageSize]
			next = encodeCursor(historyCursor{Before: evs[len(evs)-1].ID})
		}
		items := make([]Event, len(evs))
		for i := range evs {
			items[i] = toEvent(&evs[i])
		}
		return &struct{ Body *Page[Event] }{cursorPage(items, in.PageSize, next)}, nil
	})
}

// stream is one SSE connection.
type stream struct {
	s                     *Server
	w                     http.ResponseWriter
	rc                    *http.ResponseController
	p                     *coffer.Principal
	classes               []coffer.Level
	resource              coffer.ResourceRef // only events about it (zero: all)
	last                  int64              // id of the newest event handled (sent or filtered out)
	authorization, cookie string
	// frame encodes one event as an SSE frame; nil is the API's JSON
	// (the UI's stream sends rendered HTML instead).
	frame func(context.Context, *coffer.Event) ([]byte, error)
}

// run streams until the client leaves, the server shuts down, a write
// fails, or the credential stops being valid. When the hub drops this
// stream for falling behind, it subscribes again and fills the gap from the
// stored log, so the client misses nothing.
func (st *stream) run(ctx context.Context) {
	if st.write([]byte("retry: 3000\n\n")) != nil {
		return
	}
	heartbeat := time.NewTicker(st.s.opts.Heartbeat)
	defer heartbeat.Stop()
	for {
		sub := st.s.opts.Events.Subscribe()
		if err := st.replay(ctx); err != nil {
			sub.Close()
			return
		}
		if !st.live(ctx, sub, heartbeat.C) {
			sub.Close()
			return
		}
		sub.Close() // dropped for being slow: resubscribe and catch up
	}
}

// replay sends the stored events after st.last.
func (st *stream) replay(ctx context.Context) error {
	for {
		evs, err := st.s.opts.EventLog.ListEvents(ctx, visibleQuery(metadb.EventQuery{AfterID: st.last, Classes: st.classes, Resource: st.resource,
			Limit: replayBatch}, st.p))
		if err != nil {
			st.s.log.Warn("replay events", "err", err, "request_id", RequestID(ctx))
			return err
		}
		for i := range evs {
			if err := st.send(ctx, &evs[i]); err != nil {
				return err
			}
		}
		if len(evs) < replayBatch {
			return nil
		}
	}
}

// live forwards hub events; it returns true when the hub dropped the
// subscription (the caller catches up), false when the stream must end.
func (st *stream) live(ctx context.Context, sub eventSubscription, heartbeat <-chan time.Time) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case e, ok := <-sub.C():
			if !ok {
				return sub.Dropped()
			}
			if e.ID <= st.last {
				continue // already sent by the replay
			}
			if !e.VisibleTo(st.p) || !classMatch(st.classes, e.Level) || (st.resource.Type != "" && e.Resource != st.resource) {
				st.last = e.ID
				continue
			}
			if st.send(ctx, &e) != nil {
				return false
			}
		case <-heartbeat:
			p, err := st.s.authenticate(ctx, st.authorization, st.cookie)
			if err != nil || !p.Can(coffer.PermRead) {
				st.write([]byte("event: unauthorized\ndata: {}\n\n"))
				return false
			}
			st.p = p // role changes apply to what the stream shows
			if st.write([]byte(": heartbeat\n\n")) != nil {
				return false
			}
		}
	}
}

func (st *stream) send(ctx context.Context, e *coffer.Event) error {
	encode := st.frame
	if encode == nil {
		encode = jsonFrame
	}
	b, err := encode(ctx, e)
	if err != nil {
		return err
	}
	st.last = e.ID
	return st.write(b)
}

// jsonFrame is the API stream's frame: the event's id and its JSON.
func jsonFrame(_ context.Context, e *coffer.Event) ([]byte, error) {
	data, err := json.Marshal(toEvent(e))
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "id: %d\ndata: %s\n\n", e.ID, data), nil
}

// write sends one chunk with a fresh write deadline, so the server's write
// timeout cuts only a stuck client, not a long-lived stream.
func (st *stream) write(b []byte) error {
	st.rc.SetWriteDeadline(time.Now().Add(st.s.opts.WriteTimeout))
	if _, err := st.w.Write(b); err != nil {
		return err
	}
	return st.rc.Flush()
}
