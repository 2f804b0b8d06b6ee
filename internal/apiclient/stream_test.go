package apiclient

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/cofferhq/coffer/internal/protocol"
)

// sseServer answers each stream connection with the next of bodies, then
// ends it.
func sseServer(t *testing.T, bodies ...string) (*Client, func() []string) {
	var mu sync.Mutex
	var lastIDs []string
	c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/agent/stream" || r.Header.Get("Accept") != "text/event-stream" {
			t.Errorf("request %s %v", r.URL, r.Header)
		}
		mu.Lock()
		i := len(lastIDs)
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		if i < len(bodies) {
			io.WriteString(w, bodies[i])
		}
	}))
	return c, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), lastIDs...)
	}
}

func TestStreamParsing(t *testing.T) {
	body := "retry: 3000\n\n" +
		": heartbeat\n\n" +
		"event: command\nid: 1\ndata: {\"id\":\"c1\",\"kind\":\"cancel\",\n" + // data over two lines
		"data: \"cancel\":{\"job_id\":\"b1\"}}\n\n" +
		"event: other\ndata: {\"id\":\"x\"}\n\n" + // not a command
		"data: {\"id\":\"plain message\"}\n\n" +
		"event: command\r\nid: 2\r\ndata:{\"id\":\"c2\",\"kind\":\"list_dir\",\"list_dir\":{\"path\":\"/etc\"}}\r\n\r\n" + // CRLF, no space
		"event: command\ndata: not json\n\n" +
		": comment\n" +
		"event: command\nid: 3\ndata: {\"id\":\"c3\",\"kind\":\"backup\",\"backup\":{\"backup_id\":\"b9\"}}\n\n"
	c, lastIDs := sseServer(t, body, "event: command\nid: 4\ndata: {\"id\":\"c4\",\"kind\":\"restore\",\"restore\":{\"restore_id\":\"r1\"}}\n\n")
	ctx := context.Background()

	s, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []protocol.Command
	var malformed int
	for {
		cmd, err := s.Next()
		var me *MalformedEventError
		if errors.As(err, &me) {
			malformed++
			continue
		}
		if err == ErrStreamClosed {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, cmd)
	}
	s.Close()
	if malformed != 1 || len(got) != 3 {
		t.Fatalf("got %+v, %d malformed", got, malformed)
	}
	if got[0].ID != "c1" || got[0].Cancel == nil || got[0].Cancel.JobID != "b1" ||
		got[1].ListDir == nil || got[1].ListDir.Path != "/etc" || got[2].Backup == nil || got[2].Backup.BackupID != "b9" {
		t.Errorf("commands %+v", got)
	}

	// Reconnecting sends the last event id; Stream calls fn per command.
	var cmds []string
	err = c.Stream(ctx, func(cmd protocol.Command) error {
		cmds = append(cmds, cmd.ID)
		return nil
	})
	if err != ErrStreamClosed || strings.Join(cmds, ",") != "c4" {
		t.Fatalf("Stream: %v, commands %v", err, cmds)
	}
	if ids := lastIDs(); len(ids) != 2 || ids[0] != "" || ids[1] != "3" {
		t.Errorf("Last-Event-ID headers %q, want [\"\" \"3\"]", ids)
	}
}

func TestStreamFnError(t *testing.T) {
	c, _ := sseServer(t, "event: command\ndata: {\"id\":\"c1\",\"kind\":\"cancel\"}\n\nevent: command\ndata: {\"id\":\"c2\"}\n\n")
	stop := errors.New("stop")
	n := 0
	if err := c.Stream(context.Background(), func(protocol.Command) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("err %v, %d calls", err, n)
	}
}

func TestStreamUnauthorized(t *testing.T) {
	c, _ := sseServer(t, ": hi\n\nevent: unauthorized\ndata: {}\n\n")
	err := c.Stream(context.Background(), func(protocol.Command) error { return nil })
	if !IsStatus(err, http.StatusUnauthorized) || !strings.Contains(err.Error(), "no longer valid") {
		t.Fatalf("err %v", err)
	}
}

func TestStreamRefused(t *testing.T) {
	c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 401, envelope("authentication_required", "the credential is not valid", nil))
	}))
	if _, err := c.OpenStream(context.Background()); !IsCode(err, "authentication_required") {
		t.Fatalf("err %v", err)
	}
	c = newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<html>login</html>")
	}))
	if _, err := c.OpenStream(context.Background()); err == nil || !strings.Contains(err.Error(), "not an event stream") {
		t.Fatalf("err %v", err)
	}
}

func TestStreamCanceled(t *testing.T) {
	started := make(chan struct{})
	c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ": hello\n\n")
		http.NewResponseController(w).Flush()
		close(started)
		<-r.Context().Done()
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Stream(ctx, func(protocol.Command) error { return nil }) }()
	<-started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
}
