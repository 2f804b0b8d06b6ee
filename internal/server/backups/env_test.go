package backups

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/repos"
)

// commandLog is a Commands that records what it is given.
type commandLog struct {
	mu   sync.Mutex
	cmds []sentCommand
	err  error // returned by Enqueue when set
}

type sentCommand struct {
	clientID string
	cmd      protocol.Command
}

func (c *commandLog) Enqueue(_ context.Context, clientID string, cmd protocol.Command) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return "", c.err
	}
	c.cmds = append(c.cmds, sentCommand{clientID, cmd})
	return "cmd", nil
}

func (c *commandLog) sent() []sentCommand {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]sentCommand(nil), c.cmds...)
}

// eventLog is a Publisher that records event codes.
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

func (e *eventLog) codes() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.events {
		out = append(out, ev.Code)
	}
	return out
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

// env is a backups service over a real store and a real repository (in
// memory, indexed in the same store), with two enrolled clients.
type env struct {
	t       *testing.T
	db      *metadb.DB
	backend *mem.Backend
	repo    *repository.Repository
	svc     *Service
	cmds    *commandLog
	events  *eventLog
	clock   *clock
	client  *coffer.Client // "host-a"
	other   *coffer.Client // "host-b"
	admin   *coffer.Principal
}

func newEnv(t *testing.T, db *metadb.DB) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, db: db, backend: mem.New(mem.Options{Name: t.Name()}), cmds: &commandLog{}, events: &eventLog{},
		clock: &clock{t: time.Now().UTC()}}
	db.Now = e.clock.Now
	repo, _, err := repository.OpenOrInit(ctx, e.backend, func(id string) repository.Index { return db.Index(id) },
		repository.InitOptions{MasterKey: repotest.MasterKey(), Encrypted: true, Chunker: repotest.SmallChunks, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(repo.Close)
	e.repo = repo
	e.client = e.enroll("host-a")
	e.other = e.enroll("host-b")
	e.admin = &coffer.Principal{Kind: coffer.PrincipalSession, UserID: "", Username: "admin", Role: coffer.RoleAdmin,
		Scopes: coffer.RoleAdmin.Permissions()}
	e.svc = New(Options{Store: db, Repos: repos.New(repo, nil), Events: e.events, Commands: e.cmds, Clients: db, Now: e.clock.Now})
	return e
}

func (e *env) enroll(host string) *coffer.Client {
	e.t.Helper()
	ctx := context.Background()
	tok := &coffer.EnrollmentToken{TokenHash: "hash-" + host, ExpiresAt: time.Now().Add(time.Hour)}
	if err := e.db.CreateEnrollmentToken(ctx, tok); err != nil {
		e.t.Fatal(err)
	}
	c := &coffer.Client{Hostname: host, OS: "linux", Arch: "amd64", CredentialHash: "cred-" + host}
	if _, err := e.db.EnrollClient(ctx, tok.TokenHash, c); err != nil {
		e.t.Fatal(err)
	}
	return c
}

// start starts an ad-hoc backup of client c.
func (e *env) start(c *coffer.Client, paths ...string) *protocol.StartBackupResponse {
	e.t.Helper()
	resp, err := e.svc.StartBackup(context.Background(), c.ID, protocol.StartBackupRequest{Paths: paths})
	if err != nil {
		e.t.Fatalf("start backup: %v", err)
	}
	return resp
}

// upBlob is a blob an agent made.
type upBlob struct {
	t     blob.Type
	id    blob.ID
	plain []byte
}

// agentCodec is the codec an agent builds from the repository parameters:
// the id key only.
func agentCodec(t *testing.T, p protocol.RepositoryParams) *blob.Codec {
	t.Helper()
	var k blob.Keys
	copy(k.IDKey[:], p.IDKey)
	c, err := blob.NewCodec(k)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// snapshot is a small tree as an agent would build it:
// / → {docs/ → {a.txt, b.bin}, hello.txt}.
type snapshot struct {
	root  blob.ID
	blobs []upBlob // data first, then trees bottom up
}

func makeSnapshot(t *testing.T, c *blob.Codec, seed uint64) snapshot {
	t.Helper()
	var s snapshot
	add := func(typ blob.Type, plain []byte) blob.ID {
		id := c.IDOf(typ, plain)
		s.blobs = append(s.blobs, upBlob{typ, id, plain})
		return id
	}
	mtime := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	a := bytes.Repeat([]byte("compressible text "), 1000)
	b := repotest.Random(seed, 200<<10)
	hello := []byte("hello, world\n")
	docs := &tree.Tree{Nodes: []tree.Node{
		{Name: "a.txt", Type: tree.File, Mode: 0o644, ModTime: mtime, Size: uint64(len(a)), Content: []blob.ID{add(blob.Data, a)}},
		{Name: "b.bin", Type: tree.File, Mode: 0o600, ModTime: mtime, Size: uint64(len(b)), Content: []blob.ID{add(blob.Data, b)}},
	}}
	helloID := add(blob.Data, hello)
	docsPlain, err := docs.Encode()
	if err != nil {
		t.Fatal(err)
	}
	docsID := add(blob.Tree, docsPlain)
	root := &tree.Tree{Nodes: []tree.Node{
		{Name: "docs", Type: tree.Dir, Mode: 0o755, ModTime: mtime, Subtree: docsID, User: "u", Group: "g", UID: 1000, GID: 1000},
		{Name: "hello.txt", Type: tree.File, Mode: 0o644, ModTime: mtime, Size: uint64(len(hello)), Content: []blob.ID{helloID}},
		{Name: "link", Type: tree.Symlink, Mode: 0o777, ModTime: mtime, LinkTarget: "hello.txt"},
	}}
	rootPlain, err := root.Encode()
	if err != nil {
		t.Fatal(err)
	}
	s.root = add(blob.Tree, rootPlain)
	return s
}

func (s snapshot) ids() []string {
	out := make([]string, len(s.blobs))
	for i, b := range s.blobs {
		out[i] = b.id.String()
	}
	return out
}

// frames encodes blobs as an upload body.
func frames(t *testing.T, c *blob.Codec, blobs ...upBlob) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, b := range blobs {
		payload, err := c.Compress(nil, b.plain, blob.Fastest)
		if err != nil {
			t.Fatal(err)
		}
		if err := protocol.WriteFrame(&buf, b.t, b.id, len(b.plain), payload); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func (e *env) upload(c *coffer.Client, backupID string, body []byte) (*protocol.UploadResponse, error) {
	return e.svc.Upload(context.Background(), c.ID, backupID, bytes.NewReader(body), int64(len(body)))
}

// wantCode fails unless err is a *coffer.Error with the given code, and
// returns it.
func wantCode(t *testing.T, err error, code string) *coffer.Error {
	t.Helper()
	var ce *coffer.Error
	if !errors.As(err, &ce) || ce.Code != code {
		t.Fatalf("err = %v, want code %s", err, code)
	}
	return ce
}

func (e *env) backup(id string) *coffer.Backup {
	e.t.Helper()
	b, err := e.db.GetBackup(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// liveSession reports whether a write session older than the current
// epoch is live, by asking garbage collection for its deletion bound.
func (e *env) liveSession() bool {
	e.t.Helper()
	ctx := context.Background()
	ix := e.repo.Index()
	before, err := ix.BeginGC(ctx, "probe", time.Minute)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := ix.EndGC(ctx, "probe"); err != nil {
		e.t.Fatal(err)
	}
	after, err := ix.BeginGC(ctx, "probe", time.Minute)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := ix.EndGC(ctx, "probe"); err != nil {
		e.t.Fatal(err)
	}
	// Without sessions the bound is the new epoch, which grows by one a GC.
	return after == before
}

func (e *env) packs() int {
	return len(repotest.Objects(e.t, e.backend, "packs/"))
}

func sessionOf(b *coffer.Backup) repository.Session { return repository.Session{ID: b.SessionID} }
