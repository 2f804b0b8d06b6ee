package httpapi

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
)

// liveURL is the UI event stream continuing after event id last, for
// uiView.Live.
func liveURL(last int64) string { return "/ui/events?after=" + strconv.FormatInt(last, 10) }

// uiLive is the UI event stream from now on, for pages that show no events
// themselves but listen for their jobs' progress.
func (s *Server) uiLive(ctx context.Context) (string, error) {
	last, err := s.opts.EventLog.LastEventID(ctx)
	if err != nil {
		return "", err
	}
	return liveURL(last), nil
}

// uiEvents is the pages' live event stream: the events the user may see
// (the same rules and the same hub subscription as /api/v1/events), each
// as a named SSE event "event" whose data is the rendered <li>. It
// continues after ?after= (the last id the page rendered), or after
// Last-Event-ID when the browser reconnects; ?level= (repeated) keeps
// only those classes of events, as on the API's stream, and
// ?resource=<type>:<id> only the events about one resource.
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
	classes, err := parseClasses(r.URL.Query()["level"])
	if err != nil {
		http.Error(w, "level must be info, success, warning or error", http.StatusBadRequest)
		return
	}
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
	resource, ok := parseResource(r.URL.Query().Get("resource"))
	if !ok {
		http.Error(w, "resource must be type:id", http.StatusBadRequest)
		return
	}
	st := &stream{s: s, w: w, rc: http.NewResponseController(w), p: c.p, classes: classes, resource: resource, last: last,
		cookie: ck.Value, frame: s.eventFrame}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	st.run(r.Context())
}

// eventFrame renders one event as the SSE frame the htmx SSE extension
// swaps in (sse-swap="event"), followed, for an event about a backup or a
// restore, by that job's progress (jobFrame).
func (s *Server) eventFrame(ctx context.Context, e *coffer.Event) ([]byte, error) {
	var html bytes.Buffer
	if err := s.ui.fragments.ExecuteTemplate(&html, "event_item", toEvent(e)); err != nil {
		return nil, fmt.Errorf("render event %d: %w", e.ID, err)
	}
	frame := sseFrame(e.ID, "event", html.Bytes())
	job, err := s.jobFrame(ctx, e)
	if err != nil {
		// The event itself still goes out; the progress shows with the next one.
		s.log.Warn("render job progress", "event_id", e.ID, "err", err, "request_id", RequestID(ctx))
	}
	return append(frame, job...), nil
}

// sseFrame encodes one SSE frame named name whose data is html, with id
// when it is not 0.
func sseFrame(id int64, name string, html []byte) []byte {
	var frame []byte
	if id != 0 {
		frame = fmt.Appendf(frame, "id: %d\n", id)
	}
	frame = fmt.Appendf(frame, "event: %s\n", name)
	text := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(html))
	for line := range strings.SplitSeq(text, "\n") {
		frame = append(frame, "data: "...)
		frame = append(frame, line...)
		frame = append(frame, '\n')
	}
	return append(frame, '\n')
}

// eventsPageSize is how many events one page of /events shows.
const eventsPageSize = 50

// registerUIEvents mounts the events page.
func (s *Server) registerUIEvents() {
	s.mux.HandleFunc("GET /events", s.uiPage(coffer.PermRead, s.uiEventsPage))
}

// levelOption is one checkbox of the events page's level filter.
type levelOption struct {
	Value, Label string
	Checked      bool
}

// eventsData is the events page's data.
type eventsData struct {
	Levels     []levelOption
	LevelError string // why the level filter was refused
	PageError  string // why the paging position was refused
	Events     []Event
	Pager      *uiPager
	Filtered   bool // some levels are chosen
	Older      bool // a page further back than the newest
	// Resource, when set, keeps the events about one resource
	// (?resource=<type>:<id>); ResourceParam is that parameter's value.
	Resource      *coffer.ResourceRef
	ResourceParam string
}

// parseResource reads ?resource=<type>:<id> ("" for none), the filter of
// the events page and of the UI's stream.
func parseResource(raw string) (coffer.ResourceRef, bool) {
	if raw == "" {
		return coffer.ResourceRef{}, true
	}
	typ, id, ok := strings.Cut(raw, ":")
	if !ok || typ == "" || id == "" || len(typ) > 32 || len(id) > 64 {
		return coffer.ResourceRef{}, false
	}
	return coffer.ResourceRef{Type: typ, ID: id}, true
}

// uiEventsPage is the event history, newest first, filtered by level
// (?level=, repeated) and by resource (?resource=<type>:<id>, linked from
// the pages of backups, restores, clients and plans), and paged back in
// time (?before=<id>). The newest
// page listens to the live stream with the same filter, so new events
// arrive at the top.
func (s *Server) uiEventsPage(w http.ResponseWriter, r *http.Request, c *uiContext) {
	ctx := r.Context()
	q := r.URL.Query()
	chosen := q["level"]
	data := &eventsData{Filtered: len(chosen) > 0}
	for _, l := range []coffer.Level{coffer.LevelInfo, coffer.LevelSuccess, coffer.LevelWarning, coffer.LevelError} {
		name := l.String()
		data.Levels = append(data.Levels, levelOption{Value: name, Label: strings.ToUpper(name[:1]) + name[1:],
			Checked: slices.Contains(chosen, name)})
	}
	resource, ok := parseResource(q.Get("resource"))
	if !ok {
		data.PageError = "The resource to show the events of (resource in the address) must be written type:id, e.g. backup:01J…."
		s.render(w, r, http.StatusBadRequest, "events", c.view("Events", "events", data))
		return
	}
	if resource.Type != "" {
		data.Resource, data.ResourceParam = &resource, q.Get("resource")
	}
	classes, err := parseClasses(chosen)
	if err != nil {
		data.LevelError = "Choose among info, success, warning and error."
		s.render(w, r, http.StatusBadRequest, "events", c.view("Events", "events", data))
		return
	}
	var before int64
	if raw := q.Get("before"); raw != "" {
		if before, err = strconv.ParseInt(raw, 10, 64); err != nil || before <= 0 {
			data.PageError = "That page of events does not exist: start again from the newest events."
			s.render(w, r, http.StatusBadRequest, "events", c.view("Events", "events", data))
			return
		}
	}
	data.Older = before > 0
	// On the newest page, the id is read before the list, so an event
	// stored in between comes over the stream rather than falling in the gap.
	var last int64
	if before == 0 {
		if last, err = s.opts.EventLog.LastEventID(ctx); err != nil {
			s.uiFail(w, r, c, err)
			return
		}
		before = last + 1
	}
	evs, err := s.opts.EventLog.ListEvents(ctx, visibleQuery(metadb.EventQuery{BeforeID: before, Classes: classes,
		Resource: resource, Limit: eventsPageSize + 1, Descending: true}, c.p))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	filter := url.Values{"level": chosen}
	if data.ResourceParam != "" {
		filter.Set("resource", data.ResourceParam)
	}
	base := (&url.URL{Path: "/events", RawQuery: filter.Encode()}).String()
	data.Pager = &uiPager{}
	if data.Older {
		data.Pager.First = base
	}
	if len(evs) > eventsPageSize {
		evs = evs[:eventsPageSize]
		data.Pager.Next, _ = withQuery(base, "before", strconv.FormatInt(evs[len(evs)-1].ID, 10))
	}
	for i := range evs {
		data.Events = append(data.Events, toEvent(&evs[i]))
	}
	v := c.view("Events", "events", data)
	if !data.Older {
		v.Live = liveURL(last)
		if len(filter) > 0 {
			v.Live += "&" + filter.Encode()
		}
	}
	s.render(w, r, http.StatusOK, "events", v)
}
