package restores

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/repos"
)

// recorder is a Publisher that keeps what it is given.
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

func (r *recorder) codes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		out = append(out, e.Code)
	}
	return out
}

// commands records queued agent commands; err, when set, fails Enqueue.
type commands struct {
	mu   sync.Mutex
	sent []sentCommand
	err  error
}

type sentCommand struct {
	client string
	cmd    protocol.Command
}

func (c *commands) Enqueue(_ context.Context, clientID string, cmd protocol.Command) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return "", c.err
	}
	c.sent = append(c.sent, sentCommand{clientID, cmd})
	return fmt.Sprintf("cmd-%d", len(c.sent)), nil
}

func (c *commands) all() []sentCommand {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sent)
}

// clients knows a fixed set of client ids, all owned by the fixture's
// operator ("user-1").
type clients map[string]bool

func (c clients) GetClient(_ context.Context, id string) (*coffer.Client, error) {
	if !c[id] {
		return nil, coffer.Errorf(coffer.KindNotFound, "client_not_found", "no client with id %q", id)
	}
	return &coffer.Client{ID: id, Name: id, OwnerID: "user-1"}, nil
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fixture is a restores service over a real store and a real, encrypted
// repository holding one snapshot, backed up from client "alpha".
type fixture struct {
	t        *testing.T
	ctx      context.Context
	db       *metadb.DB
	repo     *repository.Repository
	svc      *Service
	rec      *recorder
	cmds     *commands
	clock    *clock
	files    repotest.Files
	root     blob.ID
	backup   *coffer.Backup
	operator *coffer.Principal
	alpha    *coffer.Principal // agent of the backup's client
	beta     *coffer.Principal // agent of another client
}

func newFixture(t *testing.T, db *metadb.DB, opts ...func(*Options)) *fixture {
	t.Helper()
	f := &fixture{t: t, ctx: context.Background(), db: db, rec: &recorder{}, cmds: &commands{},
		clock: &clock{t: time.Now()}}
	f.repo = repotest.New(t, repotest.Options{Encrypted: true})
	f.files = repotest.Files{
		"home/u/docs/big.bin":   repotest.Random(1, 700<<10), // several chunks
		"home/u/docs/notes.txt": bytes.Repeat([]byte("compressible text "), 2000),
		"home/u/empty/":         nil,
		"etc/hosts":             []byte("127.0.0.1 localhost\n"),
	}
	_, f.root = repotest.WriteSnapshot(t, f.repo, f.files)
	f.backup = f.finishedBackup("alpha", coffer.JobSucceeded, f.root.String())

	o := Options{Store: db, Repos: repos.New(f.repo, nil), Events: f.rec, Commands: f.cmds,
		Clients: clients{"alpha": true, "beta": true}, Now: f.clock.Now}
	for _, fn := range opts {
		fn(&o)
	}
	f.svc = New(o)
	f.operator = &coffer.Principal{Kind: coffer.PrincipalSession, UserID: "user-1", Username: "operator",
		Role: coffer.RoleOperator, Scopes: coffer.RoleOperator.Permissions()}
	f.alpha = agentPrincipal("alpha")
	f.beta = agentPrincipal("beta")
	return f
}

func agentPrincipal(client string) *coffer.Principal {
	return &coffer.Principal{Kind: coffer.PrincipalAgent, ClientID: client, Username: "agent:" + client,
		Scopes: []coffer.Permission{coffer.PermAgent}, CredentialID: client}
}

// finishedBackup records a backup of client that ended in state.
func (f *fixture) finishedBackup(client string, state coffer.JobState, root string) *coffer.Backup {
	f.t.Helper()
	b := &coffer.Backup{ClientID: client, Trigger: coffer.TriggerManual, State: coffer.JobRunning, Paths: []string{"/"}}
	if err := f.db.CreateBackup(f.ctx, b); err != nil {
		f.t.Fatal(err)
	}
	if state == coffer.JobRunning {
		return b
	}
	fin := metadb.BackupFinish{State: state}
	if state == coffer.JobSucceeded || state == coffer.JobPartial {
		fin.RootTree, fin.SnapshotID = root, "snap-"+b.ID
	}
	done, err := f.db.FinishBackup(f.ctx, b.ID, fin)
	if err != nil {
		f.t.Fatal(err)
	}
	return done
}

// running creates a restore of the fixture's backup to client alpha and
// starts it as alpha's agent.
func (f *fixture) running() *coffer.Restore {
	f.t.Helper()
	r, err := f.svc.Create(f.ctx, f.operator, Request{BackupID: f.backup.ID, Destination: "/restore"})
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.svc.StartRestore(f.ctx, f.alpha, protocol.StartRestoreRequest{RestoreID: r.ID}); err != nil {
		f.t.Fatal(err)
	}
	return r
}

// ids returns every blob the snapshot references: trees, then data.
func (f *fixture) ids() (trees, data []blob.ID) {
	f.t.Helper()
	trees = []blob.ID{f.root}
	err := f.repo.Walk(f.ctx, f.root, func(_ string, n *tree.Node) error {
		if n.Type == tree.Dir {
			trees = append(trees, n.Subtree)
		}
		data = append(data, n.Content...)
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return trees, data
}

// stream runs a checked batch and returns its frames by blob id.
func (f *fixture) stream(b *ReadBatch) map[blob.ID]protocol.Frame {
	f.t.Helper()
	var buf bytes.Buffer
	if err := b.Stream(f.ctx, &buf); err != nil {
		f.t.Fatal(err)
	}
	return readFrames(f.t, &buf)
}

func readFrames(t testing.TB, r io.Reader) map[blob.ID]protocol.Frame {
	t.Helper()
	out := map[blob.ID]protocol.Frame{}
	fr := protocol.NewFrameReader(r)
	for {
		fm, err := fr.Read()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := out[fm.ID]; dup {
			t.Fatalf("blob %s sent twice", fm.ID.Short())
		}
		fm.Payload = slices.Clone(fm.Payload)
		out[fm.ID] = fm
	}
}

// agentCodec is the codec of an agent: the id key, no data key.
func agentCodec(t testing.TB, params protocol.RepositoryParams) *blob.Codec {
	t.Helper()
	var k blob.Keys
	copy(k.IDKey[:], params.IDKey)
	c, err := blob.NewCodec(k)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func wantCode(t testing.TB, err error, kind coffer.Kind, code string) {
	t.Helper()
	if coffer.ErrorKind(err) != kind || coffer.ErrorCode(err) != code {
		t.Fatalf("err = %v (kind %s, code %s), want %s %s", err, coffer.ErrorKind(err), coffer.ErrorCode(err), kind, code)
	}
}

func hexIDs(ids []blob.ID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

func locatedIDs(locs []protocol.BlobLocation) []string {
	out := make([]string, len(locs))
	for i, l := range locs {
		out[i] = l.ID
	}
	return out
}

func TestRestoreLifecycle(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		ctx := f.ctx
		r, err := f.svc.Create(ctx, f.operator, Request{BackupID: f.backup.ID, Paths: []string{"/home/u/docs/", "etc"},
			Destination: "/srv/restore/"})
		if err != nil {
			t.Fatal(err)
		}
		if r.State != coffer.JobQueued || r.SourceClientID != "alpha" || r.TargetClientID != "alpha" ||
			r.Overwrite != coffer.OverwriteSkip || r.Destination != "/srv/restore" || r.CreatedBy != "user-1" ||
			!slices.Equal(r.Paths, []string{"home/u/docs", "etc"}) {
			t.Fatalf("created %+v", r)
		}
		sent := f.cmds.all()
		if len(sent) != 1 || sent[0].client != "alpha" || sent[0].cmd.Kind != protocol.CommandRestore ||
			sent[0].cmd.Restore == nil || sent[0].cmd.Restore.RestoreID != r.ID {
			t.Fatalf("commands sent: %+v", sent)
		}

		// Another client's agent cannot start it; alpha's can, twice (a retry).
		_, err = f.svc.StartRestore(ctx, f.beta, protocol.StartRestoreRequest{RestoreID: r.ID})
		wantCode(t, err, coffer.KindNotFound, "restore_not_found")
		var start *protocol.StartRestoreResponse
		for range 2 {
			start, err = f.svc.StartRestore(ctx, f.alpha, protocol.StartRestoreRequest{RestoreID: r.ID})
			if err != nil {
				t.Fatal(err)
			}
		}
		job := start.Restore
		if job.ID != r.ID || job.State != coffer.JobRunning || job.RootTree != f.root.String() ||
			job.Destination != "/srv/restore" || job.Overwrite != coffer.OverwriteSkip || len(job.Paths) != 2 {
			t.Fatalf("job = %+v", job)
		}
		key := f.repo.Codec().IDKey()
		if start.Repository.ID != f.repo.Config().ID || !bytes.Equal(start.Repository.IDKey, key[:]) ||
			start.Repository.MaxCheckIDs != MaxLocateIDs || start.Repository.MaxUploadBytes != DefaultMaxReadBytes {
			t.Fatalf("repository params = %+v", start.Repository)
		}

		// Locate every blob, then read them all and check each one as an agent does.
		trees, data := f.ids()
		all := append(slices.Clone(trees), data...)
		hexIDs := make([]string, len(all))
		for i, id := range all {
			hexIDs[i] = id.String()
		}
		loc, err := f.svc.Locate(ctx, f.alpha, protocol.LocateRequest{RestoreID: r.ID, IDs: append(hexIDs, hexIDs[0])})
		if err != nil {
			t.Fatal(err)
		}
		if len(loc.Locations) != len(all) {
			t.Fatalf("located %d of %d blobs", len(loc.Locations), len(all))
		}
		for i, l := range loc.Locations {
			want := "data"
			if i < len(trees) {
				want = "tree"
			}
			if l.ID != hexIDs[i] || l.Type != want || len(l.Pack) != 64 || l.Length == 0 || l.RawLength == 0 {
				t.Fatalf("location %d = %+v", i, l)
			}
		}
		batch, err := f.svc.Read(ctx, f.alpha, protocol.ReadRequest{RestoreID: r.ID, IDs: locatedIDs(loc.Locations)})
		if err != nil {
			t.Fatal(err)
		}
		frames := f.stream(batch)
		codec := agentCodec(t, start.Repository)
		compressed := 0
		for i, id := range all {
			fm, ok := frames[id]
			if !ok || fm.Err != "" {
				t.Fatalf("blob %s: frame %+v present %v", id.Short(), fm, ok)
			}
			wantType := blob.Data
			if i < len(trees) {
				wantType = blob.Tree
			}
			if fm.Type != wantType {
				t.Errorf("blob %s has type %s, want %s", id.Short(), fm.Type, wantType)
			}
			plain, err := codec.DecodePayload(nil, fm.Type, id, fm.Payload, fm.RawLen)
			if err != nil {
				t.Fatalf("decode %s: %v", id.Short(), err)
			}
			want, err := f.repo.LoadBlob(ctx, wantType, id, nil)
			if err != nil || !bytes.Equal(plain, want) {
				t.Fatalf("blob %s: content differs (%v)", id.Short(), err)
			}
			if len(fm.Payload) < fm.RawLen {
				compressed++
			}
		}
		if len(frames) != len(all) || compressed == 0 {
			t.Fatalf("%d frames for %d blobs, %d compressed", len(frames), len(all), compressed)
		}

		// One tree by id.
		one, err := f.svc.Blob(ctx, f.alpha, r.ID, blob.Tree, f.root.String())
		if err != nil {
			t.Fatal(err)
		}
		if fr := f.stream(one); len(fr) != 1 || fr[f.root].Type != blob.Tree || fr[f.root].Err != "" {
			t.Fatalf("blob frames = %+v", fr)
		}
		_, err = f.svc.Blob(ctx, f.alpha, r.ID, blob.Data, f.root.String())
		wantCode(t, err, coffer.KindNotFound, "blob_not_found")

		// Progress, then finish; a repeated finish is harmless.
		stats := coffer.RestoreStats{Files: 3, Dirs: 5, Bytes: 12345}
		pr, err := f.svc.Progress(ctx, f.alpha, r.ID, protocol.RestoreProgress{Stats: stats})
		if err != nil || pr.Cancel || !pr.Success {
			t.Fatalf("progress = %+v, %v", pr, err)
		}
		if got, _ := f.svc.Get(ctx, r.ID); got.Stats != stats {
			t.Fatalf("stats = %+v", got.Stats)
		}
		for range 2 {
			done, err := f.svc.Finish(ctx, f.alpha, r.ID, protocol.FinishRestoreRequest{Stats: stats})
			if err != nil || done.State != coffer.JobSucceeded || done.FinishedAt == nil {
				t.Fatalf("finish = %+v, %v", done, err)
			}
		}
		_, err = f.svc.Fail(ctx, f.alpha, r.ID, protocol.FailRequest{State: coffer.JobFailed, Error: "late"})
		wantCode(t, err, coffer.KindConflict, "restore_finished")

		// A finished restore serves no more blobs.
		_, err = f.svc.Read(ctx, f.alpha, protocol.ReadRequest{RestoreID: r.ID, IDs: locatedIDs(loc.Locations[:1])})
		wantCode(t, err, coffer.KindConflict, "restore_not_running")
		_, err = f.svc.Locate(ctx, f.alpha, protocol.LocateRequest{RestoreID: r.ID, IDs: hexIDs[:1]})
		wantCode(t, err, coffer.KindConflict, "restore_not_running")

		if got := f.rec.codes(); !slices.Equal(got, []string{"restore.requested", "restore.started", "restore.progress", "restore.succeeded"}) {
			t.Errorf("events = %v", got)
		}
		list, err := f.svc.List(ctx, metadb.RestoreFilter{ClientID: "alpha", Limit: 10})
		if err != nil || len(list) != 1 || list[0].ID != r.ID {
			t.Fatalf("list = %+v, %v", list, err)
		}
	})
}

func TestPartialAndFailed(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		r := f.running()
		done, err := f.svc.Finish(f.ctx, f.alpha, r.ID, protocol.FinishRestoreRequest{
			Stats:  coffer.RestoreStats{Files: 1, ErrorCount: 1},
			Errors: []coffer.PathError{{Path: "etc/hosts", Message: "permission denied"}}})
		if err != nil || done.State != coffer.JobPartial || len(done.Errors) != 1 {
			t.Fatalf("finish = %+v, %v", done, err)
		}

		r = f.running()
		f.svc.Progress(f.ctx, f.alpha, r.ID, protocol.RestoreProgress{Stats: coffer.RestoreStats{Files: 7}})
		_, err = f.svc.Fail(f.ctx, f.alpha, r.ID, protocol.FailRequest{State: coffer.JobSucceeded})
		wantCode(t, err, coffer.KindInvalid, "invalid_state")
		_, err = f.svc.Fail(f.ctx, f.beta, r.ID, protocol.FailRequest{State: coffer.JobFailed, Error: "x"})
		wantCode(t, err, coffer.KindNotFound, "restore_not_found")
		failed, err := f.svc.Fail(f.ctx, f.alpha, r.ID, protocol.FailRequest{State: coffer.JobFailed, Error: "disk full"})
		if err != nil || failed.State != coffer.JobFailed || failed.Error != "disk full" || failed.Stats.Files != 7 {
			t.Fatalf("fail = %+v, %v", failed, err)
		}
		codes := f.rec.codes()
		if !slices.Contains(codes, "restore.partial") || !slices.Contains(codes, "restore.failed") {
			t.Errorf("events = %v", codes)
		}
	})
}

func TestBlobAccessIsConfined(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		ctx := f.ctx
		trees, _ := f.ids()
		ids := []string{trees[0].String()}

		// Queued, not yet started: no blobs.
		q, err := f.svc.Create(ctx, f.operator, Request{BackupID: f.backup.ID, Destination: "/r"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.svc.Locate(ctx, f.alpha, protocol.LocateRequest{RestoreID: q.ID, IDs: ids})
		wantCode(t, err, coffer.KindConflict, "restore_not_running")
		_, err = f.svc.Read(ctx, f.alpha, protocol.ReadRequest{RestoreID: q.ID, IDs: hexIDs(trees)})
		wantCode(t, err, coffer.KindConflict, "restore_not_running")

		r := f.running()
		// Another client's agent: as if the restore did not exist.
		_, err = f.svc.Locate(ctx, f.beta, protocol.LocateRequest{RestoreID: r.ID, IDs: ids})
		wantCode(t, err, coffer.KindNotFound, "restore_not_found")
		_, err = f.svc.Read(ctx, f.beta, protocol.ReadRequest{RestoreID: r.ID, IDs: hexIDs(trees)})
		wantCode(t, err, coffer.KindNotFound, "restore_not_found")
		_, err = f.svc.Blob(ctx, f.beta, r.ID, blob.Tree, ids[0])
		wantCode(t, err, coffer.KindNotFound, "restore_not_found")
		_, err = f.svc.Progress(ctx, f.beta, r.ID, protocol.RestoreProgress{})
		wantCode(t, err, coffer.KindNotFound, "restore_not_found")
		_, err = f.svc.Finish(ctx, f.beta, r.ID, protocol.FinishRestoreRequest{})
		wantCode(t, err, coffer.KindNotFound, "restore_not_found")
		// No restore, an unknown one, a user instead of an agent.
		_, err = f.svc.Read(ctx, f.alpha, protocol.ReadRequest{IDs: hexIDs(trees)})
		wantCode(t, err, coffer.KindInvalid, "restore_id_required")
		_, err = f.svc.Locate(ctx, f.alpha, protocol.LocateRequest{RestoreID: "01NOPE", IDs: ids})
		wantCode(t, err, coffer.KindNotFound, "restore_not_found")
		_, err = f.svc.Read(ctx, f.operator, protocol.ReadRequest{RestoreID: r.ID, IDs: hexIDs(trees)})
		wantCode(t, err, coffer.KindForbidden, "forbidden")

		// alpha itself may read.
		if _, err := f.svc.Read(ctx, f.alpha, protocol.ReadRequest{RestoreID: r.ID, IDs: hexIDs(trees)}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestReadByID: the server finds every blob of a read itself, of either
// type, and answers an id it lacks with an error frame.
func TestReadByID(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		r := f.running()
		trees, data := f.ids()
		// Blobs of both types in one request, and one the repository lacks.
		missing := blob.ID{1, 2, 3}
		batch, err := f.svc.Read(f.ctx, f.alpha, protocol.ReadRequest{RestoreID: r.ID,
			IDs: []string{data[0].String(), trees[0].String(), missing.String()}})
		if err != nil {
			t.Fatal(err)
		}
		frames := f.stream(batch)
		if len(frames) != 3 {
			t.Fatalf("%d frames, want 3", len(frames))
		}
		codec := f.repo.Codec()
		for _, c := range []struct {
			id blob.ID
			t  blob.Type
		}{{data[0], blob.Data}, {trees[0], blob.Tree}} {
			fm := frames[c.id]
			if fm.Err != "" || fm.Type != c.t {
				t.Fatalf("frame of %s = %+v", c.id.Short(), fm)
			}
			if _, err := codec.DecodePayload(nil, fm.Type, c.id, fm.Payload, fm.RawLen); err != nil {
				t.Fatalf("decode %s: %v", c.id.Short(), err)
			}
		}
		if fm := frames[missing]; fm.Err == "" || !strings.Contains(fm.Err, "not in the repository") {
			t.Fatalf("frame of a missing blob = %+v", fm)
		}
		_, err = f.svc.Read(f.ctx, f.alpha, protocol.ReadRequest{RestoreID: r.ID,
			IDs: []string{"not-hex"}})
		wantCode(t, err, coffer.KindInvalid, "invalid_blob_id")
		_, err = f.svc.Blob(f.ctx, f.alpha, r.ID, blob.Data, missing.String())
		wantCode(t, err, coffer.KindNotFound, "blob_not_found")
	})
}

func TestReadOfDamagedPack(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		r := f.running()
		_, data := f.ids()
		locs, err := f.repo.Locate(f.ctx, data[:1])
		if err != nil {
			t.Fatal(err)
		}
		loc := locs[data[0]]
		repotest.Replace(t, f.repo.Backend(), loc.Pack.Name(), func(b []byte) []byte {
			b[loc.Offset+loc.Length/2] ^= 0xFF
			return b
		})
		batch, err := f.svc.Read(f.ctx, f.alpha, protocol.ReadRequest{RestoreID: r.ID, IDs: hexIDs(data[:1])})
		if err != nil {
			t.Fatal(err)
		}
		fm := f.stream(batch)[data[0]]
		if !strings.Contains(fm.Err, "damaged") || strings.Contains(fm.Err, "packs/") {
			t.Fatalf("frame of a damaged blob = %+v", fm)
		}
	})
}

func TestReadLimits(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db, func(o *Options) { o.MaxReadBytes = 300 << 10 })
		r := f.running()
		_, data := f.ids()
		_, err := f.svc.Read(f.ctx, f.alpha, protocol.ReadRequest{RestoreID: r.ID, IDs: hexIDs(data)})
		wantCode(t, err, coffer.KindInvalid, "read_too_large")
		if _, err := f.svc.Read(f.ctx, f.alpha, protocol.ReadRequest{RestoreID: r.ID, IDs: hexIDs(data[:1])}); err != nil {
			t.Fatal(err)
		}
		many := make([]string, MaxReadBlobs+1)
		for i := range many {
			many[i] = data[0].String()
		}
		_, err = f.svc.Read(f.ctx, f.alpha, protocol.ReadRequest{RestoreID: r.ID, IDs: many})
		wantCode(t, err, coffer.KindInvalid, "read_too_large")
		ids := make([]string, MaxLocateIDs+1)
		for i := range ids {
			ids[i] = data[0].String()
		}
		_, err = f.svc.Locate(f.ctx, f.alpha, protocol.LocateRequest{RestoreID: r.ID, IDs: ids})
		wantCode(t, err, coffer.KindInvalid, "too_many_ids")
	})
}

func TestCancel(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		ctx := f.ctx
		// Queued: canceled at once, nothing sent to the agent, which can no longer start it.
		q, err := f.svc.Create(ctx, f.operator, Request{BackupID: f.backup.ID, Destination: "/r"})
		if err != nil {
			t.Fatal(err)
		}
		c, err := f.svc.Cancel(ctx, f.operator, q.ID)
		if err != nil || c.State != coffer.JobCanceled {
			t.Fatalf("cancel queued = %+v, %v", c, err)
		}
		if n := len(f.cmds.all()); n != 1 {
			t.Fatalf("%d commands, want only the restore command", n)
		}
		_, err = f.svc.StartRestore(ctx, f.alpha, protocol.StartRestoreRequest{RestoreID: q.ID})
		wantCode(t, err, coffer.KindConflict, "restore_not_queued")
		_, err = f.svc.Cancel(ctx, f.operator, q.ID)
		wantCode(t, err, coffer.KindConflict, "restore_finished")

		// Running: the agent is told over its stream and in its progress answer.
		r := f.running()
		c, err = f.svc.Cancel(ctx, f.operator, r.ID)
		if err != nil || c.State != coffer.JobRunning || !c.CancelRequested {
			t.Fatalf("cancel running = %+v, %v", c, err)
		}
		sent := f.cmds.all()
		last := sent[len(sent)-1]
		if last.client != "alpha" || last.cmd.Kind != protocol.CommandCancel || last.cmd.Cancel.JobID != r.ID {
			t.Fatalf("last command = %+v", last)
		}
		pr, err := f.svc.Progress(ctx, f.alpha, r.ID, protocol.RestoreProgress{})
		if err != nil || !pr.Cancel {
			t.Fatalf("progress after cancel = %+v, %v", pr, err)
		}
		done, err := f.svc.Fail(ctx, f.alpha, r.ID, protocol.FailRequest{State: coffer.JobCanceled, Error: "canceled by the user"})
		if err != nil || done.State != coffer.JobCanceled {
			t.Fatalf("fail canceled = %+v, %v", done, err)
		}
		// Progress on a finished restore tells the agent to stop.
		pr, err = f.svc.Progress(ctx, f.alpha, r.ID, protocol.RestoreProgress{})
		if err != nil || !pr.Cancel || pr.Success {
			t.Fatalf("progress after the end = %+v, %v", pr, err)
		}
		_, err = f.svc.Cancel(ctx, f.operator, "01NOPE")
		wantCode(t, err, coffer.KindNotFound, "restore_not_found")
		codes := f.rec.codes()
		if n := strings.Count(strings.Join(codes, ","), "restore.canceled"); n != 2 || !slices.Contains(codes, "restore.cancel_requested") {
			t.Errorf("events = %v", codes)
		}
	})
}

func TestStaleRestoresFail(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		r := f.running()
		if err := f.svc.Maintain(f.ctx); err != nil {
			t.Fatal(err)
		}
		if got, _ := f.svc.Get(f.ctx, r.ID); got.State != coffer.JobRunning {
			t.Fatalf("fresh restore %s after Maintain", got.State)
		}
		f.clock.Advance(11 * time.Minute)
		if err := f.svc.Maintain(f.ctx); err != nil {
			t.Fatal(err)
		}
		got, err := f.svc.Get(f.ctx, r.ID)
		if err != nil || got.State != coffer.JobFailed || !strings.Contains(got.Error, "stopped reporting progress") {
			t.Fatalf("stale restore = %+v, %v", got, err)
		}
		if codes := f.rec.codes(); codes[len(codes)-1] != "restore.failed" {
			t.Errorf("events = %v", codes)
		}
		trees, _ := f.ids()
		_, err = f.svc.Read(f.ctx, f.alpha, protocol.ReadRequest{RestoreID: r.ID, IDs: hexIDs(trees)})
		wantCode(t, err, coffer.KindConflict, "restore_not_running")
	})
}

// TestQueuedRestoresExpire: a restore to an offline client waits queued
// (Maintain leaves it alone) until QueuedTTL, then fails.
func TestQueuedRestoresExpire(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		r, err := f.svc.Create(f.ctx, f.operator, Request{BackupID: f.backup.ID, Destination: "/r"})
		if err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(6 * 24 * time.Hour)
		if err := f.svc.Maintain(f.ctx); err != nil {
			t.Fatal(err)
		}
		if got, _ := f.svc.Get(f.ctx, r.ID); got.State != coffer.JobQueued {
			t.Fatalf("after 6 days: restore is %s, want queued", got.State)
		}
		f.clock.Advance(24*time.Hour + time.Hour)
		if err := f.svc.Maintain(f.ctx); err != nil {
			t.Fatal(err)
		}
		got, err := f.svc.Get(f.ctx, r.ID)
		if err != nil || got.State != coffer.JobFailed || !strings.Contains(got.Error, "did not start it within") {
			t.Fatalf("restore queued past the TTL = %+v, %v", got, err)
		}
		if codes := f.rec.codes(); codes[len(codes)-1] != "restore.failed" {
			t.Errorf("events = %v", codes)
		}
	})
}

func TestCreateChecks(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		ok := Request{BackupID: f.backup.ID, Destination: "/r"}
		with := func(fn func(*Request)) Request { r := ok; fn(&r); return r }
		running := f.finishedBackup("alpha", coffer.JobRunning, "")
		failed := f.finishedBackup("alpha", coffer.JobFailed, "")
		for _, c := range []struct {
			name string
			req  Request
			kind coffer.Kind
			code string
		}{
			{"no backup", with(func(r *Request) { r.BackupID = "" }), coffer.KindInvalid, "backup_id_required"},
			{"unknown backup", with(func(r *Request) { r.BackupID = "01NOPE" }), coffer.KindNotFound, "backup_not_found"},
			{"running backup", with(func(r *Request) { r.BackupID = running.ID }), coffer.KindConflict, "backup_not_restorable"},
			{"failed backup", with(func(r *Request) { r.BackupID = failed.ID }), coffer.KindConflict, "backup_not_restorable"},
			{"unknown target", with(func(r *Request) { r.TargetClientID = "gamma" }), coffer.KindNotFound, "client_not_found"},
			{"dotdot path", with(func(r *Request) { r.Paths = []string{"home/../etc"} }), coffer.KindInvalid, "invalid_path"},
			{"empty path", with(func(r *Request) { r.Paths = []string{""} }), coffer.KindInvalid, "invalid_path"},
			{"nul path", with(func(r *Request) { r.Paths = []string{"a\x00b"} }), coffer.KindInvalid, "invalid_path"},
			{"too many paths", with(func(r *Request) { r.Paths = make([]string, MaxPaths+1) }), coffer.KindInvalid, "too_many_paths"},
			{"relative destination", with(func(r *Request) { r.Destination = "restore" }), coffer.KindInvalid, "invalid_destination"},
			{"no destination", with(func(r *Request) { r.Destination = "" }), coffer.KindInvalid, "invalid_destination"},
			{"nul destination", with(func(r *Request) { r.Destination = "/r\x00" }), coffer.KindInvalid, "invalid_destination"},
			{"bad overwrite", with(func(r *Request) { r.Overwrite = "always" }), coffer.KindInvalid, "invalid_overwrite"},
		} {
			t.Run(c.name, func(t *testing.T) {
				_, err := f.svc.Create(f.ctx, f.operator, c.req)
				wantCode(t, err, c.kind, c.code)
			})
		}
		if n := len(f.cmds.all()); n != 0 {
			t.Fatalf("%d commands sent for refused restores", n)
		}

		// To another client, with a policy; the root path means everything.
		r, err := f.svc.Create(f.ctx, f.operator, with(func(r *Request) {
			r.TargetClientID, r.Overwrite, r.Paths = "beta", coffer.OverwriteRename, []string{"etc", "/"}
		}))
		if err != nil || r.TargetClientID != "beta" || r.SourceClientID != "alpha" || r.Overwrite != coffer.OverwriteRename || len(r.Paths) != 0 {
			t.Fatalf("create = %+v, %v", r, err)
		}
		if sent := f.cmds.all(); len(sent) != 1 || sent[0].client != "beta" {
			t.Fatalf("commands = %+v", sent)
		}
		// beta runs it and reads alpha's backup.
		start, err := f.svc.StartRestore(f.ctx, f.beta, protocol.StartRestoreRequest{RestoreID: r.ID})
		if err != nil || start.Restore.RootTree != f.root.String() || start.Restore.Paths == nil {
			t.Fatalf("start = %+v, %v", start, err)
		}

		// The command cannot be queued: the restore fails and the caller hears why.
		f.cmds.err = errors.New("database is down")
		if _, err := f.svc.Create(f.ctx, f.operator, ok); err == nil {
			t.Fatal("create succeeded without queuing its command")
		}
		list, err := f.svc.List(f.ctx, metadb.RestoreFilter{States: []coffer.JobState{coffer.JobFailed}, Limit: 10})
		if err != nil || len(list) != 1 {
			t.Fatalf("failed restores = %+v, %v", list, err)
		}
		if got := f.rec.codes(); got[len(got)-1] != "restore.failed" {
			t.Fatalf("no failure event for the restore that could not be queued: %v", got)
		}
	})
}

func TestAdHocRestore(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		ctx := f.ctx
		req := protocol.StartRestoreRequest{BackupID: f.backup.ID, Paths: []string{"home/u"}, Destination: "/tmp/out",
			Overwrite: coffer.OverwriteSkip}
		start, err := f.svc.StartRestore(ctx, f.alpha, req)
		if err != nil {
			t.Fatal(err)
		}
		job := start.Restore
		if job.State != coffer.JobRunning || job.RootTree != f.root.String() || job.Overwrite != coffer.OverwriteSkip ||
			!slices.Equal(job.Paths, []string{"home/u"}) {
			t.Fatalf("job = %+v", job)
		}
		r, err := f.svc.Get(ctx, job.ID)
		if err != nil || r.SourceClientID != "alpha" || r.TargetClientID != "alpha" || r.CreatedBy != "" || r.StartedAt == nil {
			t.Fatalf("restore = %+v, %v", r, err)
		}
		if n := len(f.cmds.all()); n != 0 {
			t.Fatalf("%d commands sent for an ad-hoc restore", n)
		}
		if _, err := f.svc.Read(ctx, f.alpha, protocol.ReadRequest{RestoreID: job.ID, IDs: hexIDs([]blob.ID{f.root})}); err != nil {
			t.Fatal(err)
		}

		// Another client's backup is not found; so is an unknown one.
		_, err = f.svc.StartRestore(ctx, f.beta, req)
		wantCode(t, err, coffer.KindNotFound, "backup_not_found")
		bad := req
		bad.Destination = "relative/dir"
		_, err = f.svc.StartRestore(ctx, f.alpha, bad)
		wantCode(t, err, coffer.KindInvalid, "invalid_destination")
		bad = req
		bad.BackupID = ""
		_, err = f.svc.StartRestore(ctx, f.alpha, bad)
		wantCode(t, err, coffer.KindInvalid, "backup_id_required")
		failed := f.finishedBackup("alpha", coffer.JobFailed, "")
		bad.BackupID = failed.ID
		_, err = f.svc.StartRestore(ctx, f.alpha, bad)
		wantCode(t, err, coffer.KindConflict, "backup_not_restorable")
		// A queued restore takes no other fields.
		_, err = f.svc.StartRestore(ctx, f.alpha, protocol.StartRestoreRequest{RestoreID: job.ID, Destination: "/x"})
		wantCode(t, err, coffer.KindInvalid, "invalid_request")
		_, err = f.svc.StartRestore(ctx, f.operator, req)
		wantCode(t, err, coffer.KindForbidden, "forbidden")
	})
}

// failingWriter accepts n bytes, then fails.
type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		return 0, errors.New("connection reset")
	}
	w.n -= len(p)
	return len(p), nil
}

func TestStreamStopsOnWriteError(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		r := f.running()
		_, data := f.ids()
		batch, err := f.svc.Read(f.ctx, f.alpha, protocol.ReadRequest{RestoreID: r.ID, IDs: hexIDs(data)})
		if err != nil {
			t.Fatal(err)
		}
		if batch.Len() != len(data) {
			t.Fatalf("Len = %d, want %d", batch.Len(), len(data))
		}
		if err := batch.Stream(f.ctx, &failingWriter{n: 100 << 10}); err == nil || !strings.Contains(err.Error(), "connection reset") {
			t.Fatalf("stream to a broken connection: %v", err)
		}
		ctx, cancel := context.WithCancel(f.ctx)
		cancel()
		if err := batch.Stream(ctx, io.Discard); !errors.Is(err, context.Canceled) {
			t.Fatalf("stream with a canceled context: %v", err)
		}
	})
}
