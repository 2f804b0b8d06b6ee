package httpapi

import (
	"context"
	"net/http"
	"net/url"
	"slices"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
)

// A client's log on its page reads like a terminal: oldest line first, the
// newest at the bottom, where the live tail appends what arrives. The tail
// is an htmx poller (client_log_poller) that asks GET
// /ui/clients/{id}/logs?after=<cursor> every 3 s; the answer is the new
// lines, appended to #client-logs, and the poller again with the newest
// line as its cursor, swapped out of band over the old one. The tail follows
// the time the agent logged each line (the order the list has), so a line
// that arrives with an older time than the newest shown appears on the next
// reload, not in the tail.

const (
	clientLogPage    = 100 // lines per page
	clientLogTailMax = 200 // lines one tail answer carries at most
)

// clientLogLevels are the levels the filter offers, least first.
var clientLogLevels = []string{"debug", "info", "warn", "error"}

// clientLogsData is the log section of a client's page.
type clientLogsData struct {
	Level  string // the minimum level shown, "" for all
	Levels []string
	Lines  []clientLogLine // oldest first
	// Older links to the page before the first line, Newest back to the
	// newest page (set on older pages, which have no live tail).
	Older, Newest string
	Tail          *clientLogPoller
}

// clientLogLine is a log line as the page shows it.
type clientLogLine struct{ *coffer.ClientLog }

// LevelClass is the badge class of the line's level.
func (l clientLogLine) LevelClass() string {
	switch l.Level.String() {
	case "error":
		return "badge-error"
	case "warn":
		return "badge-warning"
	case "info":
		return "badge-info"
	}
	return ""
}

// clientLogPoller is the live tail's poller: URL asks for the lines after
// the newest one shown; OOB marks the copy an answer carries to replace
// the poller that asked.
type clientLogPoller struct {
	URL string
	OOB bool
}

// clientLogTailData is an answer of the live tail.
type clientLogTailData struct {
	Lines   []clientLogLine
	Skipped bool // more lines arrived than one answer carries
	Poller  *clientLogPoller
}

// loadClientLogs reads the page of a client's log that the request asks
// for (log_level, log_before); a cursor or level that does not parse
// shows the newest lines of every level.
func (s *Server) loadClientLogs(ctx context.Context, r *http.Request, clientID string) (*clientLogsData, error) {
	q := r.URL.Query()
	d := &clientLogsData{Levels: clientLogLevels}
	f := metadb.ClientLogFilter{ClientID: clientID, Limit: clientLogPage + 1}
	if l, ok := coffer.ParseLogLevel(q.Get("log_level")); ok {
		d.Level, f.MinLevel = q.Get("log_level"), &l
	}
	before, err := decodeKeyset(q.Get("log_before"))
	if err != nil {
		before = nil
	}
	f.After = before
	ls, err := s.opts.Agents.ClientLogs(ctx, f)
	if err != nil {
		return nil, err
	}
	self := r.URL.RequestURI()
	if len(ls) > clientLogPage {
		ls = ls[:clientLogPage]
		older, _ := withQuery(self, "log_before", *encodeKeyset(logKey(&ls[len(ls)-1])))
		d.Older = older + "#logs"
	}
	if before != nil {
		newest, _ := withQuery(self, "log_before", "")
		d.Newest = newest + "#logs"
	} else {
		var newest *metadb.Keyset
		if len(ls) > 0 {
			k := logKey(&ls[0])
			newest = &k
		}
		d.Tail = &clientLogPoller{URL: clientTailURL(clientID, d.Level, newest)}
	}
	d.Lines = logLines(ls)
	return d, nil
}

// uiClientLogTail answers the live tail's poller: the lines logged after
// its cursor, oldest first, and the poller with the new cursor; nothing
// (204, which htmx does not swap) when there are none. When it cannot go
// on it answers 286, which stops htmx's polling, with a line saying why.
func (s *Server) uiClientLogTail(w http.ResponseWriter, r *http.Request, c *uiContext) {
	id := r.PathValue("id")
	q := r.URL.Query()
	f := metadb.ClientLogFilter{ClientID: id, Limit: clientLogTailMax + 1}
	level := q.Get("level")
	if level != "" {
		l, ok := coffer.ParseLogLevel(level)
		if !ok {
			s.stopLogTail(w, r, "The live tail stopped: its level filter is not valid. Reload the page.")
			return
		}
		f.MinLevel = &l
	}
	after, err := decodeKeyset(q.Get("after"))
	if err != nil {
		s.stopLogTail(w, r, "The live tail stopped: it lost its place. Reload the page.")
		return
	}
	if after != nil {
		f.Since = after.CreatedAt
	}
	ls, err := s.opts.Agents.ClientLogs(r.Context(), f)
	if err != nil {
		e := toAPIError(r.Context(), http.StatusInternalServerError, "", err)
		s.stopLogTail(w, r, "The live tail stopped: "+sentence(e.Detail)+" Reload the page to try again.")
		return
	}
	data := &clientLogTailData{Skipped: len(ls) > clientLogTailMax}
	ls = slices.DeleteFunc(ls, func(l coffer.ClientLog) bool { return after != nil && !logAfter(&l, after) })
	if len(ls) > clientLogTailMax {
		ls = ls[:clientLogTailMax]
	}
	if len(ls) == 0 {
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	newest := logKey(&ls[0])
	data.Lines = logLines(ls)
	data.Poller = &clientLogPoller{URL: clientTailURL(id, level, &newest), OOB: true}
	s.renderFragment(w, r, http.StatusOK, "client_log_tail", data)
}

// statusStopPolling is the status with which htmx stops polling.
const statusStopPolling = 286

// stopLogTail ends the live tail with a line saying why.
func (s *Server) stopLogTail(w http.ResponseWriter, r *http.Request, msg string) {
	s.renderFragment(w, r, statusStopPolling, "client_log_notice", msg)
}

// logAfter reports whether line l comes after the line at k in the log's
// order (the agent's time, then id).
func logAfter(l *coffer.ClientLog, k *metadb.Keyset) bool {
	return l.Time.After(k.CreatedAt) || l.Time.Equal(k.CreatedAt) && l.ID > k.ID
}

// logKey is a line's place in the log's order, as a cursor holds it.
func logKey(l *coffer.ClientLog) metadb.Keyset { return metadb.Keyset{CreatedAt: l.Time, ID: l.ID} }

// logLines turns lines listed newest first into the page's order, oldest
// first.
func logLines(ls []coffer.ClientLog) []clientLogLine {
	out := make([]clientLogLine, len(ls))
	for i := range ls {
		out[len(ls)-1-i] = clientLogLine{&ls[i]}
	}
	return out
}

// clientTailURL is the live tail's URL: lines at level or above after the
// line at after (all lines when nil).
func clientTailURL(clientID, level string, after *metadb.Keyset) string {
	v := url.Values{}
	if level != "" {
		v.Set("level", level)
	}
	if after != nil {
		v.Set("after", *encodeKeyset(*after))
	}
	u := "/ui/clients/" + url.PathEscape(clientID) + "/logs"
	if len(v) > 0 {
		u += "?" + v.Encode()
	}
	return u
}
