package scheduler_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/cofferhq/coffer/internal/server/backups"
	"github.com/cofferhq/coffer/internal/server/repos"
	"github.com/cofferhq/coffer/internal/server/scheduler"
)

// clock is a settable time source shared by the store and the services.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *clock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// eventLog is a Publisher that records events.
type eventLog struct {
	mu     sync.Mutex
	events []coffer.Event
}

func (e *eventLog) Publish(_ context.Context, ev *coffer.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, *ev)
	return nil
}

// with returns the events with the given code.
func (e *eventLog) with(code string) []coffer.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []coffer.Event
	for _, ev := range e.events {
		if ev.Code == code {
			out = append(out, ev)
		}
	}
	return out
}

// t0 is the start of every test's clock: mid-second, so that a tick is
// never exactly on a fire time unless a test puts it there.
var t0 = time.Date(2026, 3, 14, 9, 0, 0, 500_000_000, time.UTC)

// env is a scheduler over a real store, the real backups and agents
// services and a repository in memory, with one enrolled client.
type env struct {
	t       *testing.T
	db      *metadb.DB
	clock   *clock
	events  *eventLog
	backups *backups.Service
	agents  *agents.Service
	client  *coffer.Client
	sched   *scheduler.Scheduler
}

func newEnv(t *testing.T, db *metadb.DB) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, db: db, clock: &clock{t: t0}, events: &eventLog{}}
	db.Now = e.clock.Now
	repo, _, err := repository.OpenOrInit(ctx, mem.New(mem.Options{Name: t.Name()}), func(id string) repository.Index { return db.Index(id) },
		repository.InitOptions{MasterKey: repotest.MasterKey(), Encrypted: true, Chunker: repotest.SmallChunks, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(repo.Close)
	e.agents = agents.New(agents.Options{Store: db, Events: e.events, Now: e.clock.Now})
	e.backups = backups.New(backups.Options{Store: db, Repos: repos.New(repo, nil), Events: e.events, Commands: e.agents,
		Clients: e.agents, Now: e.clock.Now})
	e.client = e.enroll("host-a")
	e.sched = e.newScheduler(db)
	return e
}

// newScheduler returns another scheduler over store, as a second server
// process or a restarted one would run.
func (e *env) newScheduler(store scheduler.Store) *scheduler.Scheduler {
	return scheduler.New(scheduler.Options{Store: store, Backups: e.backups, Events: e.events, Now: e.clock.Now})
}

func (e *env) enroll(host string) *coffer.Client {
	e.t.Helper()
	ctx := context.Background()
	tok := &coffer.EnrollmentToken{TokenHash: "hash-" + host, ExpiresAt: e.clock.Now().Add(time.Hour)}
	if err := e.db.CreateEnrollmentToken(ctx, tok); err != nil {
		e.t.Fatal(err)
	}
	c := &coffer.Client{Hostname: host, OS: "linux", Arch: "amd64", CredentialHash: "cred-" + host}
	if _, err := e.db.EnrollClient(ctx, tok.TokenHash, c); err != nil {
		e.t.Fatal(err)
	}
	return c
}

// plan creates an enabled plan of the env's client on schedule, edited by
// the optional funcs first.
func (e *env) plan(name, schedule string, edit ...func(*coffer.Plan)) *coffer.Plan {
	e.t.Helper()
	p := &coffer.Plan{Name: name, ClientID: e.client.ID, Schedule: schedule, Include: []string{"/srv/" + name}, Enabled: true}
	for _, f := range edit {
		f(p)
	}
	if err := e.db.CreatePlan(context.Background(), p); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) update(p *coffer.Plan) {
	e.t.Helper()
	if err := e.db.UpdatePlan(context.Background(), p); err != nil {
		e.t.Fatal(err)
	}
}

// tick runs one tick of s (the env's scheduler if nil) at time at.
func (e *env) tick(s *scheduler.Scheduler, at time.Time) {
	e.t.Helper()
	if s == nil {
		s = e.sched
	}
	e.clock.Set(at)
	if err := s.Tick(context.Background()); err != nil {
		e.t.Fatalf("tick at %s: %v", at.Format(time.RFC3339Nano), err)
	}
}

// backupsOf returns the plan's backups, oldest first.
func (e *env) backupsOf(p *coffer.Plan) []coffer.Backup {
	e.t.Helper()
	bs, err := e.db.ListBackups(context.Background(), metadb.BackupFilter{PlanID: p.ID})
	if err != nil {
		e.t.Fatal(err)
	}
	slices.Reverse(bs)
	return bs
}

// finish ends backup id as its agent would: started, then succeeded.
func (e *env) finish(id string) {
	e.t.Helper()
	ctx := context.Background()
	b, err := e.db.GetBackup(ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.db.StartBackup(ctx, id, b.ClientID, "", ""); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.db.FinishBackup(ctx, id, metadb.BackupFinish{State: coffer.JobSucceeded}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) firing(p *coffer.Plan) coffer.PlanFiring {
	e.t.Helper()
	f, err := e.db.PlanFirings(context.Background(), []string{p.ID})
	if err != nil {
		e.t.Fatal(err)
	}
	return f[p.ID]
}

// wantNext fails unless the plan's next fire time is want (nil: none).
func (e *env) wantNext(p *coffer.Plan, want *time.Time) {
	e.t.Helper()
	got := e.firing(p).NextFireAt
	if (got == nil) != (want == nil) || (got != nil && !got.Equal(*want)) {
		e.t.Fatalf("plan %s: next fire at %v, want %v", p.Name, fmtTime(got), fmtTime(want))
	}
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "none"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func at(t time.Time) *time.Time { return &t }

// mentions reports whether an event's message contains every string.
func mentions(ev coffer.Event, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(ev.Message, p) {
			return false
		}
	}
	return true
}
