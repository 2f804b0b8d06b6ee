package httpapi

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/cofferhq/coffer"
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
