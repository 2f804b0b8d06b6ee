package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/httpapi/apitest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/server/auth"
	"github.com/cofferhq/coffer/internal/server/events"
	"github.com/cofferhq/coffer/internal/server/health"
)

// fixture is a real API server over a real store, served by httptest.
type fixture struct {
	t      testing.TB
	db     *metadb.DB
	hub    *events.Hub
	auth   *auth.Service
	api    *Server
	ts     *httptest.Server
	ready  *readiness
	tokens map[string]string // role name → bearer token
}

// readiness is a switchable readiness check.
type readiness struct{ err error }

func newFixture(t testing.TB, db *metadb.DB) *fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &fixture{t: t, db: db, ready: &readiness{}, tokens: map[string]string{}}
	f.hub = events.New(events.Options{Store: db, PollInterval: 50 * time.Millisecond})
	f.auth = auth.New(auth.Options{Store: db, Events: f.hub})
	if _, _, err := f.auth.Bootstrap(ctx, "admin", "admin-password"); err != nil {
		t.Fatal(err)
	}
	var err error
	f.api, err = New(Options{Auth: f.auth, Events: f.hub, EventLog: db, Version: "test",
		Readiness: []health.Check{{Name: "switch", Ready: true, Probe: func(context.Context) error { return f.ready.err }}},
		Heartbeat: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { f.hub.Run(ctx); close(done) }()
	f.ts = httptest.NewServer(f.api.Handler())
	t.Cleanup(func() {
		f.hub.Close()
		f.ts.Close()
		cancel()
		<-done
	})
	f.tokens["admin"] = f.login("admin", "admin-password")
	for _, role := range []string{"operator", "viewer"} {
		f.do("POST", "/api/v1/users", "admin", map[string]any{"username": role, "password": role + "-password", "role": role}).want(201)
		f.tokens[role] = f.login(role, role+"-password")
	}
	return f
}

func (f *fixture) login(user, pw string) string {
	f.t.Helper()
	r := f.do("POST", "/api/v1/auth/login", "", map[string]any{"username": user, "password": pw}).want(200)
	return r.json["access_token"].(string)
}

// response is a decoded reply.
type response struct {
	t      testing.TB
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

func (r *response) want(status int) *response {
	r.t.Helper()
	if r.status != status {
		r.t.Fatalf("status = %d, want %d; body: %s", r.status, status, r.body)
	}
	return r
}

// wantError checks the error envelope: status, code, and every field present.
func (r *response) wantError(status int, code string) *response {
	r.t.Helper()
	apitest.CheckError(r.t, r.status, r.header, r.body, status, code)
	return r
}

// do sends a request as the given role ("" for none); body may be a map, a
// string (raw) or nil.
func (f *fixture) do(method, path, as string, body any, headers ...string) *response {
	f.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, f.ts.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok, ok := f.tokens[as]; ok {
		req.Header.Set("Authorization", "Bearer "+tok)
	} else if as != "" {
		req.Header.Set("Authorization", "Bearer "+as) // a raw token
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := f.ts.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	r := &response{t: f.t, status: resp.StatusCode, header: resp.Header, body: data}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(data, &r.json); err != nil {
			f.t.Fatalf("invalid JSON from %s %s: %v: %s", method, path, err, data)
		}
	}
	return r
}

func (f *fixture) userID(name string) string {
	f.t.Helper()
	u, err := f.db.GetUserByUsername(context.Background(), name)
	if err != nil {
		f.t.Fatal(err)
	}
	return u.ID
}
