package httpapi

import (
	"context"
	"net/http/httptest"
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

func newFixture(t testing.TB, db *metadb.DB) *fixture { return newFixtureWith(t, db, nil) }

// newFixtureWith is newFixture with more services: wire gets the fixture,
// its store and event hub made, and the server's options to add them to.
func newFixtureWith(t testing.TB, db *metadb.DB, wire func(f *fixture, o *Options)) *fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &fixture{t: t, db: db, ready: &readiness{}, tokens: map[string]string{}}
	f.hub = events.New(events.Options{Store: db, PollInterval: 50 * time.Millisecond})
	f.auth = auth.New(auth.Options{Store: db, Events: f.hub})
	if _, _, err := f.auth.Bootstrap(ctx, "admin", "admin-password"); err != nil {
		t.Fatal(err)
	}
	o := Options{Auth: f.auth, Events: f.hub, EventLog: db, Version: "test",
		Readiness: []health.Check{{Name: "switch", Ready: true, Probe: func(context.Context) error { return f.ready.err }}},
		Heartbeat: 200 * time.Millisecond}
	if wire != nil {
		wire(f, &o)
	}
	var err error
	f.api, err = New(o)
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
		f.do("POST", "/api/v1/users", "admin", map[string]any{"username": role, "password": role + "-password", "role": role}).Want(201)
		f.tokens[role] = f.login(role, role+"-password")
	}
	return f
}

func (f *fixture) login(user, pw string) string {
	f.t.Helper()
	r := f.do("POST", "/api/v1/auth/login", "", map[string]any{"username": user, "password": pw}).Want(200)
	return r.JSON["access_token"].(string)
}

// do sends a request as the given role, or with a raw token ("" for none);
// body is nil, a string sent as is, or a value sent as JSON.
func (f *fixture) do(method, path, as string, body any, headers ...string) *apitest.Reply {
	f.t.Helper()
	token, ok := f.tokens[as]
	if !ok {
		token = as
	}
	return apitest.Do(f.t, f.ts.Client(), method, f.ts.URL+path, token, body, headers...)
}

func (f *fixture) userID(name string) string {
	f.t.Helper()
	u, err := f.db.GetUserByUsername(context.Background(), name)
	if err != nil {
		f.t.Fatal(err)
	}
	return u.ID
}
