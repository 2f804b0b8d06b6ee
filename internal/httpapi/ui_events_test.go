package httpapi

import (
	"bufio"
	"context"
	"fmt"
	"html"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// publish stores an event of the given level and audience through the hub.
func (f *fixture) publish(code string, level coffer.Level, audience coffer.Role) int64 {
	f.t.Helper()
	e := &coffer.Event{Level: level, Code: code, Title: "Title of " + code, Message: "Message of " + code, Audience: audience, Actor: "system"}
	if err := f.hub.Publish(context.Background(), e); err != nil {
		f.t.Fatal(err)
	}
	return e.ID
}

var eventCode = regexp.MustCompile(`<li class="event" id="event-\d+" data-code="([^"]+)"`)

// eventCodes lists the data-code of every event item of a page, in order.
func eventCodes(body string) []string {
	var out []string
	for _, m := range eventCode.FindAllStringSubmatch(body, -1) {
		out = append(out, m[1])
	}
	return out
}

func TestUIEventsPage(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		admin := f.uiSignIn("admin", "admin-password")
		viewer := f.uiSignIn("viewer", "viewer-password")
		f.publish("test.info", coffer.LevelInfo, coffer.RoleViewer)
		f.publish("test.success", coffer.LevelSuccess+1, coffer.RoleViewer)
		f.publish("test.warning", coffer.LevelWarning, coffer.RoleViewer)
		f.publish("test.error", coffer.LevelError+3, coffer.RoleViewer)
		f.publish("test.operator_error", coffer.LevelError, coffer.RoleOperator)

		r := f.uiDo("GET", "/events", []*http.Cookie{admin}, nil)
		codes := eventCodes(r.Body)
		if r.StatusCode != 200 || len(codes) < 5 || codes[0] != "test.operator_error" || codes[1] != "test.error" ||
			!strings.Contains(r.Body, `id="event-filter"`) || !strings.Contains(r.Body, `sse-connect="/ui/events?after=`) {
			t.Fatalf("events page: %d %v\n%s", r.StatusCode, codes, r.Body)
		}

		// The level filter keeps those classes, on the page and on its stream.
		r = f.uiDo("GET", "/events?level=error&level=warning", []*http.Cookie{admin}, nil)
		if got := strings.Join(eventCodes(r.Body), " "); got != "test.operator_error test.error test.warning" {
			t.Errorf("errors and warnings: %q", got)
		}
		for _, want := range []string{`id="level-error" checked`, `id="level-warning" checked`, `id="level-info">`,
			html.EscapeString("&level=error&level=warning") + `"`, `id="event-filter-clear"`} {
			if !strings.Contains(r.Body, want) {
				t.Errorf("filtered page lacks %s", want)
			}
		}
		r = f.uiDo("GET", "/events?level=success", []*http.Cookie{admin}, nil)
		if got := eventCodes(r.Body); len(got) != 1 || got[0] != "test.success" {
			t.Errorf("successes: %v", got)
		}

		// A viewer sees no event meant for operators.
		r = f.uiDo("GET", "/events?level=error", []*http.Cookie{viewer}, nil)
		if got := eventCodes(r.Body); r.StatusCode != 200 || len(got) != 1 || got[0] != "test.error" {
			t.Errorf("viewer's errors: %d %v", r.StatusCode, got)
		}

		// Bad input: a clear message next to the filter, not a 500.
		r = f.uiDo("GET", "/events?level=fatal", []*http.Cookie{admin}, nil)
		if r.StatusCode != 400 || !strings.Contains(r.Body, `id="level-error"`) || !strings.Contains(r.Body, `aria-invalid="true"`) ||
			!strings.Contains(r.Body, "Choose among info, success, warning and error.") {
			t.Errorf("bad level: %d\n%s", r.StatusCode, r.Body)
		}
		r = f.uiDo("GET", "/events?before=-3", []*http.Cookie{admin}, nil)
		if r.StatusCode != 400 || !strings.Contains(r.Body, `id="events-error"`) {
			t.Errorf("bad before: %d\n%s", r.StatusCode, r.Body)
		}
		if r := f.uiDo("GET", "/events", nil, nil); r.StatusCode != http.StatusSeeOther {
			t.Errorf("without a session: %d", r.StatusCode)
		}
	})
}

func TestUIEventsPaging(t *testing.T) {
	t.Parallel()
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	admin := f.uiSignIn("admin", "admin-password")
	var ids []int64
	for i := range eventsPageSize + 7 {
		ids = append(ids, f.publish(fmt.Sprintf("page.e%02d", i), coffer.LevelWarning, coffer.RoleViewer))
	}
	f.publish("page.info", coffer.LevelInfo, coffer.RoleViewer)

	first := f.uiDo("GET", "/events?level=warning", []*http.Cookie{admin}, nil)
	codes := eventCodes(first.Body)
	if len(codes) != eventsPageSize || codes[0] != fmt.Sprintf("page.e%02d", eventsPageSize+6) {
		t.Fatalf("first page: %d events from %v", len(codes), codes[:1])
	}
	next := regexp.MustCompile(`<a href="([^"]+)" rel="next">Older</a>`).FindStringSubmatch(first.Body)
	if next == nil || strings.Contains(first.Body, `rel="first"`) {
		t.Fatalf("first page's pager:\n%s", first.Body)
	}
	older := html.UnescapeString(next[1])
	if want := fmt.Sprintf("/events?before=%d&level=warning", ids[7]); older != want {
		t.Errorf("older link = %q, want %q", older, want)
	}
	second := f.uiDo("GET", older, []*http.Cookie{admin}, nil)
	codes = eventCodes(second.Body)
	if len(codes) != 7 || codes[0] != "page.e06" || codes[6] != "page.e00" {
		t.Errorf("second page: %v", codes)
	}
	// Older pages do not listen for new events and link back to the newest.
	if strings.Contains(second.Body, "sse-connect") || !strings.Contains(second.Body, `<a href="/events?level=warning" rel="first">Newest</a>`) ||
		strings.Contains(second.Body, `rel="next"`) {
		t.Errorf("second page:\n%s", second.Body)
	}
}

func TestUIEventsLiveLevelFilter(t *testing.T) {
	t.Parallel()
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	admin := f.uiSignIn("admin", "admin-password")
	if r := f.uiDo("GET", "/ui/events?level=fatal", []*http.Cookie{admin}, nil); r.StatusCode != 400 {
		t.Errorf("stream with a bad level: %d", r.StatusCode)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", f.ts.URL+"/ui/events?level=error&level=success", nil)
	req.AddCookie(admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("open stream: %v %v", resp, err)
	}
	defer resp.Body.Close()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
		close(lines)
	}()
	// In id order: a warning and an info the filter drops, then an error
	// and a success it keeps. The first event frame must be the error's.
	f.publish("live.warning", coffer.LevelWarning, coffer.RoleViewer)
	f.publish("live.info", coffer.LevelInfo, coffer.RoleViewer)
	f.publish("live.error", coffer.LevelError, coffer.RoleViewer)
	f.publish("live.success", coffer.LevelSuccess, coffer.RoleViewer)
	var got []string
	timeout := time.After(15 * time.Second)
	for len(got) < 2 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended; got %v", got)
			}
			if m := regexp.MustCompile(`data-code="([^"]+)"`).FindStringSubmatch(l); m != nil {
				got = append(got, m[1])
			}
		case <-timeout:
			t.Fatalf("no frames of the filtered stream; got %v", got)
		}
	}
	if strings.Join(got, " ") != "live.error live.success" {
		t.Errorf("filtered stream delivered %v, want the error then the success", got)
	}
}

// TestUIEventsOfResource shows the events about one resource, as the
// pages of backups, restores, clients and plans link to them: the filter
// holds on the page, in its paging and level links and on its stream.
func TestUIEventsOfResource(t *testing.T) {
	t.Parallel()
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	viewer := f.uiSignIn("viewer", "viewer-password")
	for i, id := range []string{"b1", "b2", "b1"} {
		e := &coffer.Event{Level: coffer.LevelInfo, Code: fmt.Sprintf("test.%d", i), Title: "t", Audience: coffer.RoleViewer,
			Actor: "system", Resource: coffer.ResourceRef{Type: "backup", ID: id}}
		if err := f.hub.Publish(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	r := f.uiDo("GET", "/events?resource=backup:b1", []*http.Cookie{viewer}, nil)
	if codes := eventCodes(r.Body); r.StatusCode != 200 || strings.Join(codes, " ") != "test.2 test.0" {
		t.Fatalf("events of backup b1: %d %v", r.StatusCode, codes)
	}
	wantIn(t, "events of b1", r.Body, `Events of backup <code>b1</code>`, `id="event-resource-clear"`,
		`<input type="hidden" name="resource" value="backup:b1">`, `&amp;resource=backup%3Ab1"`)
	r = f.uiDo("GET", "/events?resource=backup:b1&level=error", []*http.Cookie{viewer}, nil)
	if codes := eventCodes(r.Body); len(codes) != 0 || !strings.Contains(r.Body, `href="/events?resource=backup%3ab1" class="button secondary" id="event-filter-clear"`) {
		t.Errorf("b1's errors: %v\n%s", codes, r.Body)
	}
	for _, bad := range []string{"backup", "backup:", ":b1", strings.Repeat("x", 40) + ":b1"} {
		if r := f.uiDo("GET", "/events?resource="+bad, []*http.Cookie{viewer}, nil); r.StatusCode != 400 || !strings.Contains(r.Body, "type:id") {
			t.Errorf("resource=%s: %d", bad, r.StatusCode)
		}
	}
}
