package agent

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/apiclient"
	"github.com/cofferhq/coffer/internal/protocol"
)

// plansServer serves GET /api/v1/agent/plans (and enough of the daemon's
// routes for Run) with a status the test sets.
type plansServer struct {
	srv    *httptest.Server
	mu     sync.Mutex
	status int // of the plans route; 200 serves plans
	plans  []protocol.AgentPlan
}

func newPlansServer(t *testing.T) *plansServer {
	t.Helper()
	p := &plansServer{status: 200}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/agent/plans", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer cfr_a_test" {
			writeJSON(w, 403, map[string]any{"code": "forbidden", "detail": "agents only"})
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.status != 200 {
			writeJSON(w, p.status, map[string]any{"code": "oops", "detail": "status " + http.StatusText(p.status)})
			return
		}
		writeJSON(w, 200, map[string]any{"items": p.plans, "total": len(p.plans)})
	})
	mux.HandleFunc("POST /api/v1/agent/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, protocol.HeartbeatResponse{Success: true, HeartbeatSeconds: 60})
	})
	mux.HandleFunc("GET /api/v1/agent/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		p.srv.CloseClientConnections()
		p.srv.Close()
	})
	return p
}

func (p *plansServer) set(status int, plans ...protocol.AgentPlan) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status, p.plans = status, plans
}

// agent returns an agent of this server whose calls retry quickly.
func (p *plansServer) agent(t *testing.T, dir, clientID string) *Agent {
	t.Helper()
	st := &State{Server: p.srv.URL, ClientID: clientID, Name: "test", Credential: "cfr_a_test"}
	a, err := New(Options{StateDir: dir, State: st,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	a.api, err = apiclient.New(apiclient.Options{Server: st.Server, Credential: st.Credential,
		Retry: apiclient.Retry{Attempts: 2, Min: time.Millisecond, Max: 2 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestPlansCached(t *testing.T) {
	p := newPlansServer(t)
	dir := t.TempDir()
	a := p.agent(t, dir, "c1")
	ctx := context.Background()
	next := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	nightly := protocol.AgentPlan{ID: "p1", Name: "nightly", Schedule: "0 0 2 * * ?", Timezone: "Europe/Berlin", NextRunAt: &next,
		Include: []string{"/etc"}, Exclude: []string{}, PreCommands: []string{"pg_dump db > /srv/db.sql"}, PostCommands: []string{},
		Retention: protocol.PlanRetention{KeepDaily: 7, KeepWithin: "0s"}, Compression: "best"}

	// No answer and nothing kept yet.
	p.set(http.StatusServiceUnavailable)
	if _, err := a.Plans(ctx); err == nil || !strings.Contains(err.Error(), "no earlier list of the plans is kept") {
		t.Fatalf("no cache: %v", err)
	}

	p.set(200, nightly)
	v, err := a.Plans(ctx)
	if err != nil || v.Cached || len(v.Plans) != 1 || v.Plans[0].Name != "nightly" || v.Plans[0].PreCommands[0] != nightly.PreCommands[0] ||
		!v.Plans[0].NextRunAt.Equal(next) || v.FetchedAt.IsZero() {
		t.Fatalf("plans = %+v, %v", v, err)
	}
	fetched := v.FetchedAt
	st, err := os.Stat(filepath.Join(dir, plansFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v, mode %v; want 0600", err, st.Mode())
	}

	// The server fails, then cannot be reached: the last answer, marked.
	for _, down := range []func(){func() { p.set(http.StatusBadGateway) }, func() { p.srv.Close() }} {
		down()
		v, err = a.Plans(ctx)
		if err != nil || !v.Cached || v.Err == nil || len(v.Plans) != 1 || v.Plans[0].ID != "p1" || !v.FetchedAt.Equal(fetched) {
			t.Fatalf("cached plans = %+v, %v", v, err)
		}
	}
	// Another enrollment in the same directory does not see them.
	if _, err := p.agent(t, dir, "c2").Plans(ctx); err == nil || !strings.Contains(err.Error(), "another enrollment") {
		t.Fatalf("another client's cache: %v", err)
	}
}

func TestPlansRefused(t *testing.T) {
	p := newPlansServer(t)
	dir := t.TempDir()
	ctx := context.Background()
	p.set(200)
	if v, err := p.agent(t, dir, "c1").Plans(ctx); err != nil || v.Cached || len(v.Plans) != 0 || v.Plans == nil {
		t.Fatalf("no plans = %+v, %v", v, err)
	}
	// A refusal is an error, not a reason to show the cache.
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden} {
		p.set(status)
		_, err := p.agent(t, dir, "c1").Plans(ctx)
		if !apiclient.IsStatus(err, status) {
			t.Errorf("status %d: %v", status, err)
		}
	}
}

func TestRunRefreshesPlans(t *testing.T) {
	p := newPlansServer(t)
	dir := t.TempDir()
	p.set(200, protocol.AgentPlan{ID: "p1", Name: "nightly", Include: []string{"/"}})
	a := p.agent(t, dir, "c1")
	startRun(t, a)
	waitFor(t, "the daemon to keep the plans", func() bool {
		c, err := a.loadPlans()
		return err == nil && len(c.Plans) == 1 && c.Plans[0].ID == "p1"
	})
}
