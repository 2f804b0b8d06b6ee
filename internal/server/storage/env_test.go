package storage_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blobstore/local"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/server/storage"
)

// recorder is a Publisher that keeps the events.
type recorder struct {
	mu     sync.Mutex
	events []coffer.Event
}

func (r *recorder) Publish(_ context.Context, e *coffer.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, *e)
	return nil
}

// codes returns the codes of the events published so far.
func (r *recorder) codes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		out = append(out, e.Code)
	}
	return out
}

// last returns the last event with code, failing the test if none.
func (r *recorder) last(t *testing.T, code string) coffer.Event {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.events) - 1; i >= 0; i-- {
		if r.events[i].Code == code {
			return r.events[i]
		}
	}
	t.Fatalf("no %s event among %d", code, len(r.events))
	return coffer.Event{}
}

// noSecrets fails the test if any event mentions one of the secrets.
func (r *recorder) noSecrets(t *testing.T, secrets ...string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		for _, s := range secrets {
			if strings.Contains(e.Message, s) || strings.Contains(e.Title, s) {
				t.Errorf("event %s carries a secret: %s", e.Code, e.Message)
			}
		}
	}
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is a storage service over a real store, with a default local
// repository in a temporary directory.
type env struct {
	t      *testing.T
	db     *metadb.DB
	svc    *storage.Service
	events *recorder
	clock  *clock
	master []byte
	def    *repository.Repository
	defDir string
	admin  *coffer.Principal
}

func newEnv(t *testing.T, db *metadb.DB, tune ...func(*storage.Options)) *env {
	t.Helper()
	return newEnvAt(t, db, repotest.MasterKey(), filepath.Join(t.TempDir(), "default"), tune...)
}

// newReplica returns a second server beside e, as replicas run: the same
// database, master key and default repository.
func newReplica(t *testing.T, e *env) *env {
	t.Helper()
	return newEnvAt(t, e.db, e.master, e.defDir)
}

func newEnvAt(t *testing.T, db *metadb.DB, master []byte, defDir string, tune ...func(*storage.Options)) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, db: db, events: &recorder{}, clock: &clock{t: time.Now().UTC()}, master: master,
		defDir: defDir,
		admin: &coffer.Principal{Kind: coffer.PrincipalSession, UserID: "", Username: "root", Role: coffer.RoleAdmin,
			Scopes: coffer.RoleAdmin.Permissions()}}
	db.Now = e.clock.Now
	b, err := local.New(e.defDir)
	if err != nil {
		t.Fatal(err)
	}
	e.def, _, err = repository.OpenOrInit(ctx, b, func(id string) repository.Index { return db.Index(id) },
		repository.InitOptions{MasterKey: e.master, Encrypted: true, Chunker: repotest.SmallChunks, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	o := storage.Options{Store: db, Default: e.def, MasterKey: e.master, Index: func(id string) repository.Index { return db.Index(id) },
		Events: e.events, Now: e.clock.Now}
	for _, f := range tune {
		f(&o)
	}
	e.svc, err = storage.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.svc.Close()
		e.svc.Repos().Close()
	})
	if _, err := e.svc.EnsureDefault(ctx, storage.Location{Path: e.defDir}); err != nil {
		t.Fatal(err)
	}
	return e
}

// dir returns a fresh, not yet existing directory.
func (e *env) dir() string { return filepath.Join(e.t.TempDir(), "repo") }

// createLocal creates a local repository at path.
func (e *env) createLocal(name, path string) *coffer.Repository {
	e.t.Helper()
	r, err := e.svc.CreateRepository(context.Background(), e.admin, storage.RepositorySpec{Name: name, Kind: coffer.RepositoryLocal, Path: path})
	if err != nil {
		e.t.Fatalf("create repository %s: %v", name, err)
	}
	return r
}

// wantCode fails unless err carries the given code, and returns it.
func wantCode(t *testing.T, err error, code string) *coffer.Error {
	t.Helper()
	var ce *coffer.Error
	if !errors.As(err, &ce) || ce.Code != code {
		t.Fatalf("err = %v (code %q), want code %s", err, coffer.ErrorCode(err), code)
	}
	return ce
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }
