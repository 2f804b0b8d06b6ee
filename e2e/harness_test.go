// Package e2e drives the real coffer binary as a process over real HTTP,
// on SQLite and on PostgreSQL.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/httpapi/apitest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "coffer-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "coffer")
	build := exec.Command("go", "build", "-race", "-o", binary, "../cmd/coffer")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build coffer:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is a running coffer server process.
type server struct {
	t        *testing.T
	cmd      *exec.Cmd
	URL      string
	Password string // the admin password (generated or given)
	DataDir  string
	DBURL    string
	client   *http.Client

	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	exited chan struct{}
	err    error
}

// syncWriter guards a buffer shared with the process's output copier.
type syncWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// startOptions tune startServer.
type startOptions struct {
	args  []string
	env   []string
	dbURL string // "" for a fresh database of the dialect; "default" to give no --database-url
}

// startServer runs `coffer server` on a fresh data directory and database
// and waits until it serves.
func startServer(t *testing.T, d metadb.Dialect, o startOptions) *server {
	t.Helper()
	s := newServerProc(t, d, o)
	if err := s.waitReady(60 * time.Second); err != nil {
		t.Fatalf("server did not start: %v\nstdout:\n%s\nstderr:\n%s", err, s.Stdout(), s.Stderr())
	}
	return s
}

func newServerProc(t *testing.T, d metadb.Dialect, o startOptions) *server {
	t.Helper()
	s := &server{t: t, DataDir: t.TempDir(), DBURL: o.dbURL, exited: make(chan struct{})}
	args := []string{"server", "--listen", "127.0.0.1:0", "--data-dir", s.DataDir, "--log-format", "json", "--shutdown-timeout", "20s"}
	switch s.DBURL {
	case "default":
		s.DBURL = "sqlite://" + filepath.Join(s.DataDir, "coffer.db")
	case "":
		s.DBURL = metadbtest.URL(t, d)
		args = append(args, "--database-url", s.DBURL)
	default:
		args = append(args, "--database-url", s.DBURL)
	}
	args = append(args, o.args...)
	s.cmd = exec.Command(binary, args...)
	s.cmd.Env = append(cleanEnv(), o.env...)
	s.cmd.Stdout = syncWriter{&s.mu, &s.stdout}
	s.cmd.Stderr = syncWriter{&s.mu, &s.stderr}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			s.cmd.Process.Kill()
			<-s.exited
		}
		if t.Failed() {
			t.Logf("server stdout:\n%s\nserver stderr:\n%s", s.Stdout(), s.Stderr())
		}
	})
	return s
}

// cleanEnv is the test's environment without COFFER_* settings.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COFFER_") {
			out = append(out, kv)
		}
	}
	return out
}

var (
	runningAt = regexp.MustCompile(`Coffer is running at (\S+)`)
	generated = regexp.MustCompile(`password: (\S+)`)
)

func (s *server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("exited: %v", s.err)
		default:
		}
		if m := runningAt.FindStringSubmatch(s.Stdout()); m != nil {
			s.URL = m[1]
			if p := generated.FindStringSubmatch(s.Stdout()); p != nil {
				s.Password = p[1]
			}
			s.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // tests use a self-signed certificate
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no 'Coffer is running at' line within %v", timeout)
}

// waitExit waits for the process to end and returns its error.
func (s *server) waitExit(timeout time.Duration) error {
	select {
	case <-s.exited:
		return s.err
	case <-time.After(timeout):
		s.t.Fatalf("server still running after %v", timeout)
		return nil
	}
}

func (s *server) Stdout() string { s.mu.Lock(); defer s.mu.Unlock(); return s.stdout.String() }
func (s *server) Stderr() string { s.mu.Lock(); defer s.mu.Unlock(); return s.stderr.String() }

// call sends a request with an optional bearer token; body is nil, a
// string sent as is, or a value sent as JSON.
func (s *server) call(method, path, token string, body any, headers ...string) *apitest.Reply {
	s.t.Helper()
	return apitest.Do(s.t, s.client, method, s.URL+path, token, body, headers...)
}

func (s *server) login(user, password string) string {
	s.t.Helper()
	r := s.call("POST", "/api/v1/auth/login", "", map[string]string{"username": user, "password": password}).Want(200)
	return r.Str("access_token")
}

// sseEvent is one event read from the stream.
type sseEvent struct {
	ID   string
	Data map[string]any
}

// sseStream is an open event stream.
type sseStream struct {
	resp   *http.Response
	events chan sseEvent
	cancel context.CancelFunc
	done   chan struct{}
}

// openStream connects to /api/v1/events, optionally with Last-Event-ID.
func (s *server) openStream(token, lastID string) *sseStream {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/api/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	client := &http.Client{Transport: s.client.Transport} // no overall timeout on a stream
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		s.t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		cancel()
		s.t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	st := &sseStream{resp: resp, events: make(chan sseEvent, 1000), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(st.done)
		defer close(st.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				ev.ID = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.Data)
			case line == "" && ev.ID != "":
				st.events <- ev
				ev = sseEvent{}
			}
		}
	}()
	s.t.Cleanup(st.close)
	return st
}

func (st *sseStream) close() {
	st.cancel()
	st.resp.Body.Close()
	<-st.done
}

// next returns the next event, failing the test if none comes in time.
func (st *sseStream) next(t *testing.T) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-st.events:
		if !ok {
			t.Fatal("stream ended")
		}
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("no event within 20 s")
	}
	return sseEvent{}
}

// dialects runs fn on both databases.
func dialects(t *testing.T, fn func(t *testing.T, d metadb.Dialect)) {
	for _, d := range []metadb.Dialect{metadb.SQLite, metadb.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			if d == metadb.Postgres {
				metadbtest.RequirePostgres(t)
			}
			fn(t, d)
		})
	}
}
