package httpapi

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
)

// dashboardEvents is how many recent events the dashboard shows at first.
const dashboardEvents = 20

// dashboardData is the dashboard page's data. Clients and Backups are nil
// on a server without those services.
type dashboardData struct {
	Clients     *clientCounts
	Backups     []stateCount
	Events      []Event
	LastEventID int64 // the live stream continues after this id
}

type clientCounts struct{ Online, Offline int }

type stateCount struct {
	State coffer.JobState
	Label string
	Count int
}

// dashboardStates are the backup states the dashboard counts, in order.
var dashboardStates = []stateCount{
	{State: coffer.JobRunning, Label: "Running"},
	{State: coffer.JobQueued, Label: "Queued"},
	{State: coffer.JobSucceeded, Label: "Succeeded"},
	{State: coffer.JobPartial, Label: "Partial"},
	{State: coffer.JobFailed, Label: "Failed"},
	{State: coffer.JobCanceled, Label: "Canceled"},
}

func (s *Server) uiDashboard(w http.ResponseWriter, r *http.Request, c *uiContext) {
	ctx := r.Context()
	data := &dashboardData{}
	var err error
	if data.Clients, err = s.clientCounts(ctx); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	if data.Backups, err = s.recentBackups(ctx); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	// The id is read before the list, so an event stored in between comes
	// over the stream rather than falling in the gap.
	if data.LastEventID, err = s.opts.EventLog.LastEventID(ctx); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	evs, err := s.opts.EventLog.ListEvents(ctx, visibleQuery(metadb.EventQuery{BeforeID: data.LastEventID + 1,
		Limit: dashboardEvents, Descending: true}, c.p))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	for i := range evs {
		data.Events = append(data.Events, toEvent(&evs[i]))
	}
	s.render(w, r, http.StatusOK, "dashboard", c.view("Dashboard", "dashboard", data))
}

func (s *Server) clientCounts(ctx context.Context) (*clientCounts, error) {
	if s.opts.Agents == nil {
		return nil, nil
	}
	_, online, err := s.opts.Agents.ListClients(ctx, metadb.ClientFilter{Status: coffer.ClientOnline, Limit: 1})
	if err != nil {
		return nil, err
	}
	_, offline, err := s.opts.Agents.ListClients(ctx, metadb.ClientFilter{Status: coffer.ClientOffline, Limit: 1})
	if err != nil {
		return nil, err
	}
	return &clientCounts{Online: online, Offline: offline}, nil
}

// recentBackups counts the backups created in the last 24 hours by state.
func (s *Server) recentBackups(ctx context.Context) ([]stateCount, error) {
	if s.opts.Backups == nil {
		return nil, nil
	}
	counts, err := s.opts.Backups.CountByState(ctx, s.opts.Now().Add(-24*time.Hour))
	if err != nil {
		return nil, err
	}
	out := append([]stateCount(nil), dashboardStates...)
	for i := range out {
		out[i].Count = counts[out[i].State]
	}
	return out, nil
}

// uiEvents is the dashboard's live event stream: the events the user may
// see (the same rules and the same hub subscription as /api/v1/events),
// each as a named SSE event "event" whose data is the rendered <li>. It
// continues after ?after= (the last id the page rendered), or after
// Last-Event-ID when the browser reconnects.
func (s *Server) uiEvents(w http.ResponseWriter, r *http.Request) {
	setUIHeaders(w.Header())
	c, err := s.uiSession(r)
	if err != nil {
		// EventSource gives up on any answer but 200, which is what a
		// stream without a session should do.
		status := http.StatusUnauthorized
		if !coffer.IsKind(err, coffer.KindUnauthenticated) {
			status = http.StatusInternalServerError
			if info := requestInfoFrom(r.Context()); info != nil {
				info.setErr(err)
			}
		}
		http.Error(w, http.StatusText(status), status)
		return
	}
	ck, _ := r.Cookie(SessionCookie)
	var last int64
	if raw := cmp.Or(r.Header.Get("Last-Event-ID"), r.URL.Query().Get("after")); raw != "" {
		if last, err = strconv.ParseInt(raw, 10, 64); err != nil || last < 0 {
			http.Error(w, "after and Last-Event-ID must be event ids", http.StatusBadRequest)
			return
		}
	} else if last, err = s.opts.EventLog.LastEventID(r.Context()); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	st := &stream{s: s, w: w, rc: http.NewResponseController(w), p: c.p, last: last, cookie: ck.Value,
		frame: s.eventFrame}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	st.run(r.Context())
}

// eventFrame renders one event as the SSE frame the htmx SSE extension
// swaps in (sse-swap="event").
func (s *Server) eventFrame(e *coffer.Event) ([]byte, error) {
	var html bytes.Buffer
	if err := s.ui.fragments.ExecuteTemplate(&html, "event_item", toEvent(e)); err != nil {
		return nil, fmt.Errorf("render event %d: %w", e.ID, err)
	}
	frame := fmt.Appendf(nil, "id: %d\nevent: event\n", e.ID)
	text := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(html.String())
	for line := range strings.SplitSeq(text, "\n") {
		frame = append(frame, "data: "...)
		frame = append(frame, line...)
		frame = append(frame, '\n')
	}
	return append(frame, '\n'), nil
}
