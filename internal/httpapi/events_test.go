package httpapi

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// rawStream reads an SSE response line by line.
type rawStream struct {
	lines  chan string
	cancel context.CancelFunc
}

func openRawStream(t *testing.T, url, token string) *rawStream {
	t.Helper()
	return openRawStreamAt(t, url+"/api/v1/events", token)
}

// openRawStreamAt opens the event stream at url (with its query).
func openRawStreamAt(t *testing.T, url, token string) *rawStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		cancel()
		t.Fatalf("open stream: %v %v", resp, err)
	}
	s := &rawStream{lines: make(chan string, 100), cancel: cancel}
	go func() {
		defer close(s.lines)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case s.lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(cancel)
	return s
}

// waitLine returns the first line with the prefix, or fails; ended reports
// that the stream closed first.
func (s *rawStream) waitLine(t *testing.T, prefix string) (line string, ended bool) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				return "", true
			}
			if strings.HasPrefix(l, prefix) {
				return l, false
			}
		case <-timeout:
			t.Fatalf("no line starting %q within 15 s", prefix)
		}
	}
}

// A stream outlives the server's write timeout (each write extends its own
// deadline), carries heartbeats, and delivers events after them.
func TestStreamOutlivesWriteTimeout(t *testing.T) {
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	ts := httptest.NewUnstartedServer(f.api.Handler())
	ts.Config.WriteTimeout = 300 * time.Millisecond
	ts.Start()
	t.Cleanup(ts.Close) // after the stream's cleanup: Close waits for open streams

	st := openRawStream(t, ts.URL, f.tokens["admin"])
	deadline := time.Now().Add(1200 * time.Millisecond) // four write timeouts
	for time.Now().Before(deadline) {
		if _, ended := st.waitLine(t, ": heartbeat"); ended {
			t.Fatal("stream cut before its write timeout was extended")
		}
	}
	f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "late", "password": "late-password", "role": "viewer"}).Want(201)
	line, ended := st.waitLine(t, "data: ")
	if ended || !strings.Contains(line, `"code":"user.created"`) {
		t.Fatalf("event after heartbeats: %q ended=%v", line, ended)
	}
}

// Disabling a user ends their open stream at the next heartbeat.
func TestStreamEndsWhenUserIsDisabled(t *testing.T) {
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	tok := f.do("POST", "/api/v1/tokens", "operator", map[string]any{"name": "stream"}).Want(201).JSON["secret"].(string)
	st := openRawStream(t, f.ts.URL, tok)
	st.waitLine(t, ": heartbeat")
	f.do("PATCH", "/api/v1/users/"+f.userID("operator"), "admin", map[string]any{"disabled": true}).Want(200)
	if _, ended := st.waitLine(t, "event: unauthorized"); ended {
		t.Fatal("stream ended without saying why")
	}
	if _, ended := st.waitLine(t, "never"); !ended {
		t.Fatal("stream of a disabled user is still open")
	}
}

func TestStreamRejectsBadInput(t *testing.T) {
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	f.do("GET", "/api/v1/events", "admin", nil, "Last-Event-ID", "abc").WantError(400, "invalid_last_event_id")
	f.do("GET", "/api/v1/events?level=loud", "admin", nil).WantError(400, "invalid_level")
	f.do("GET", "/api/v1/events/history?cursor=!!", "admin", nil).WantError(400, "invalid_cursor")
	h := f.do("GET", "/api/v1/events/history?page_size=2&level=info", "admin", nil).Want(200)
	p := h.JSON["pagination"].(map[string]any)
	if p["pagination_mode"] != "cursor" || p["total"] != -1.0 || p["has_next_page"] != true || p["cursor"] == nil {
		t.Fatalf("history page = %s", h.Body)
	}
	// Time bounds: nothing is older than an hour ago or newer than now+1h.
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	if items := f.do("GET", "/api/v1/events/history?since="+future, "admin", nil).Want(200).JSON["items"].([]any); len(items) != 0 {
		t.Errorf("since=%s returned %d events", future, len(items))
	}
	if items := f.do("GET", "/api/v1/events/history?until="+past, "admin", nil).Want(200).JSON["items"].([]any); len(items) != 0 {
		t.Errorf("until=%s returned %d events", past, len(items))
	}
	if items := f.do("GET", "/api/v1/events/history?since="+past+"&until="+future, "admin", nil).Want(200).JSON["items"].([]any); len(items) < 3 {
		t.Errorf("a window around now returned %d events, want every one so far", len(items))
	}
	f.do("GET", "/api/v1/events/history?since=yesterday", "admin", nil).WantError(400, "invalid_request")
	next := f.do("GET", "/api/v1/events/history?page_size=2&level=info&cursor="+p["cursor"].(string), "admin", nil).Want(200)
	first, second := h.JSON["items"].([]any), next.JSON["items"].([]any)
	if len(second) == 0 || second[0].(map[string]any)["id"].(float64) >= first[1].(map[string]any)["id"].(float64) {
		t.Fatalf("second page does not continue below the first: %s then %s", h.Body, next.Body)
	}
}

// TestEventsByResource filters the history and the live stream to the
// events about one resource.
func TestEventsByResource(t *testing.T) {
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	viewer, operator := f.userID("viewer"), f.userID("operator")
	items := f.do("GET", "/api/v1/events/history?resource_type=user&resource_id="+viewer, "admin", nil).Want(200).JSON["items"].([]any)
	if len(items) == 0 {
		t.Fatal("no event about the viewer's account")
	}
	for _, it := range items {
		if r := it.(map[string]any)["resource"].(map[string]any); r["type"] != "user" || r["id"] != viewer {
			t.Errorf("an event about %v in the viewer's history", r)
		}
	}
	if items := f.do("GET", "/api/v1/events/history?resource_type=client&resource_id="+viewer, "admin", nil).Want(200).JSON["items"].([]any); len(items) != 0 {
		t.Errorf("events about a client with a user's id: %v", items)
	}
	f.do("GET", "/api/v1/events/history?resource_type=user", "admin", nil).WantError(400, "invalid_resource")
	f.do("GET", "/api/v1/events?resource_id="+viewer, "admin", nil).WantError(400, "invalid_resource")

	// Live: a change to the operator's account is left out, the viewer's
	// comes through.
	st := openRawStreamAt(t, f.ts.URL+"/api/v1/events?resource_type=user&resource_id="+viewer, f.tokens["admin"])
	st.waitLine(t, "retry:")
	f.do("PATCH", "/api/v1/users/"+operator, "admin", map[string]any{"disabled": true}).Want(200)
	f.do("PATCH", "/api/v1/users/"+viewer, "admin", map[string]any{"role": "operator"}).Want(200)
	line, ended := st.waitLine(t, "data:")
	if ended || !strings.Contains(line, `"id":"`+viewer+`"`) {
		t.Fatalf("first event on the viewer's stream: %q (ended %v)", line, ended)
	}
}
