package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/cofferhq/coffer/internal/protocol"
)

// localAPI serves a restore from a repository in process, as the server
// does (payloads, not plaintext), with hooks to misbehave.
type localAPI struct {
	repo    *repository.Repository
	tamper  func(id blob.ID, payload []byte) []byte // may change or drop (nil) a payload
	locates int
	reads   []int // blobs per read request
	blobs   int   // single-blob requests
}

func (l *localAPI) Locate(ctx context.Context, req protocol.LocateRequest) ([]protocol.BlobLocation, error) {
	l.locates++
	ids := make([]blob.ID, len(req.IDs))
	for i, h := range req.IDs {
		ids[i], _ = blob.ParseID(h)
	}
	locs, err := l.repo.Locate(ctx, ids)
	var out []protocol.BlobLocation
	for id, loc := range locs {
		out = append(out, wireLocation(id, loc))
	}
	return out, err
}

func (l *localAPI) ReadBlobs(ctx context.Context, req protocol.ReadRequest, fn func(protocol.Frame) error) error {
	l.reads = append(l.reads, len(req.IDs))
	// Like the server, look every id up.
	ids := make([]blob.ID, len(req.IDs))
	for i, h := range req.IDs {
		var err error
		if ids[i], err = blob.ParseID(h); err != nil {
			return err
		}
	}
	locs, err := l.repo.Locate(ctx, ids)
	if err != nil {
		return err
	}
	byType := map[blob.Type][]repository.BlobRequest{}
	for _, id := range ids {
		loc, ok := locs[id]
		if !ok {
			if err := fn(protocol.Frame{ID: id, Err: "blob not found"}); err != nil {
				return err
			}
			continue
		}
		byType[loc.Type] = append(byType[loc.Type], repository.BlobRequest{ID: id, Loc: loc})
	}
	for t, reqs := range byType {
		err := l.repo.ReadPayloads(ctx, t, reqs, func(i int, payload []byte, err error) error {
			f := protocol.Frame{Type: t, ID: reqs[i].ID, RawLen: int(reqs[i].Loc.RawLength), Payload: payload}
			if err != nil {
				f = protocol.Frame{ID: reqs[i].ID, Err: err.Error()}
			} else if l.tamper != nil {
				if f.Payload = l.tamper(f.ID, bytes.Clone(payload)); f.Payload == nil {
					return nil
				}
			}
			return fn(f)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (l *localAPI) Blob(ctx context.Context, restoreID string, t blob.Type, id blob.ID) (protocol.Frame, error) {
	l.blobs++
	locs, err := l.repo.Locate(ctx, []blob.ID{id})
	if err != nil {
		return protocol.Frame{}, err
	}
	loc, ok := locs[id]
	if !ok {
		return protocol.Frame{}, fmt.Errorf("blob %s not found", id.Short())
	}
	var f protocol.Frame
	err = l.repo.ReadPayloads(ctx, t, []repository.BlobRequest{{ID: id, Loc: loc}}, func(_ int, payload []byte, err error) error {
		f = protocol.Frame{Type: t, ID: id, RawLen: int(loc.RawLength), Payload: bytes.Clone(payload)}
		if err == nil && l.tamper != nil {
			f.Payload = l.tamper(id, f.Payload)
		}
		return err
	})
	return f, err
}

func newRemote(t *testing.T, repo *repository.Repository) (*remoteRepo, *localAPI) {
	api := &localAPI{repo: repo}
	k := repo.Codec().IDKey()
	codec, err := codecFor(protocol.RepositoryParams{IDKey: k[:]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(codec.Close)
	return &remoteRepo{api: api, restoreID: "r1", codec: codec}, api
}

func TestRemoteReadBlobs(t *testing.T) {
	repo := repotest.New(t, repotest.Options{Encrypted: true})
	files := repotest.Files{}
	for i := range 20 {
		files[fmt.Sprintf("f%02d", i)] = repotest.Random(uint64(i), 50<<10+i)
	}
	_, root := repotest.WriteSnapshot(t, repo, files)
	ctx := context.Background()
	nodes, err := repo.LoadDir(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	remote, api := newRemote(t, repo)
	got, err := remote.LoadDir(ctx, root)
	if err != nil || len(got) != len(nodes) {
		t.Fatalf("LoadDir: %d nodes, %v", len(got), err)
	}
	var ids []blob.ID
	for _, n := range got {
		ids = append(ids, n.Content...)
	}
	locs, err := remote.Locate(ctx, ids)
	if err != nil || len(locs) != len(ids) {
		t.Fatalf("Locate: %d of %d, %v", len(locs), len(ids), err)
	}
	reqs := make([]repository.BlobRequest, 0, len(ids)+1)
	for _, id := range ids {
		reqs = append(reqs, repository.BlobRequest{ID: id, Loc: locs[id]})
	}
	reqs = append(reqs, reqs[3]) // the same blob twice

	bad, dropped := ids[5], ids[7]
	api.tamper = func(id blob.ID, payload []byte) []byte {
		switch id {
		case bad:
			payload[len(payload)/2] ^= 1
		case dropped:
			return nil
		}
		return payload
	}
	seen := make([]int, len(reqs))
	err = remote.ReadBlobs(ctx, blob.Data, reqs, func(i int, plain []byte, err error) error {
		seen[i]++
		switch reqs[i].ID {
		case bad:
			if !errors.Is(err, blob.ErrCorrupt) {
				t.Errorf("tampered blob: %v", err)
			}
		case dropped:
			if err == nil || !strings.Contains(err.Error(), "did not send") {
				t.Errorf("dropped blob: %v", err)
			}
		default:
			want, _ := repo.LoadBlob(ctx, blob.Data, reqs[i].ID, nil)
			if err != nil || !bytes.Equal(plain, want) {
				t.Errorf("blob %d: %v", i, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range seen {
		if n != 1 {
			t.Errorf("request %d answered %d times", i, n)
		}
	}
	// Reads are split to stay within the server's limit.
	api.tamper, api.reads = nil, nil
	remote.maxRead = 120 << 10 // two of these blobs
	if err := remote.ReadBlobs(ctx, blob.Data, reqs, func(int, []byte, error) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if len(api.reads) != (len(ids)+1)/2 || slices.Max(api.reads) != 2 {
		t.Errorf("read requests of %v blobs", api.reads)
	}

	// A tree blob asked for as data is refused.
	rootLoc, _ := repo.Locate(ctx, []blob.ID{root})
	err = remote.ReadBlobs(ctx, blob.Data, []repository.BlobRequest{{ID: root, Loc: rootLoc[root]}}, func(i int, _ []byte, err error) error {
		if err == nil {
			t.Error("a tree was delivered as data")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A tampered tree is refused too.
	api.tamper = func(id blob.ID, payload []byte) []byte {
		payload[0] ^= 1
		return payload
	}
	if _, err := remote.LoadDir(ctx, root); !errors.Is(err, blob.ErrCorrupt) {
		t.Errorf("tampered tree: %v", err)
	}
}

// TestRemoteSplitDir: a directory stored in parts is joined, as
// repository.LoadDir joins it.
func TestRemoteSplitDir(t *testing.T) {
	repo := repotest.New(t, repotest.Options{})
	ctx := context.Background()
	w, err := repo.NewWriter(ctx, repository.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var nodes []tree.Node
	for i := range 200 {
		nodes = append(nodes, tree.Node{Name: fmt.Sprintf("entry-%03d", i), Type: tree.Symlink, Mode: 0o777,
			ModTime: time.Unix(1700000000, 0).UTC(), LinkTarget: "target"})
	}
	parts, err := tree.Split(nodes, 1024)
	if err != nil || len(parts) < 3 {
		t.Fatalf("split into %d parts: %v", len(parts), err)
	}
	save := func(tr *tree.Tree) blob.ID {
		b, err := tr.Encode()
		if err != nil {
			t.Fatal(err)
		}
		id := repo.Codec().TreeID(b)
		if _, err := w.Save(ctx, blob.Tree, id, b, blob.Fastest); err != nil {
			t.Fatal(err)
		}
		return id
	}
	var partIDs []blob.ID
	for _, p := range parts {
		partIDs = append(partIDs, save(p))
	}
	top := save(&tree.Tree{Parts: partIDs})
	must(t, w.Flush(ctx))
	want, err := repo.LoadDir(ctx, top)
	if err != nil {
		t.Fatal(err)
	}
	remote, _ := newRemote(t, repo)
	got, err := remote.LoadDir(ctx, top)
	if err != nil || len(got) != len(want) || len(got) != 200 {
		t.Fatalf("LoadDir: %d nodes, want %d: %v", len(got), len(want), err)
	}
	for i := range got {
		if got[i].Name != want[i].Name {
			t.Fatalf("node %d: %s, want %s", i, got[i].Name, want[i].Name)
		}
	}
}

// TestRestoreRejectsTamperedContent: a restore through a server that
// alters a blob writes every other file and reports that one.
func TestRestoreRejectsTamperedContent(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "good"), []byte("good content"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "evil"), []byte("content the server will alter"), 0o644))
	ctx := context.Background()
	res, err := a.Backup(ctx, BackupRequest{Paths: []string{src}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	evil := s.repo.Codec().ID([]byte("content the server will alter"))
	s.tamper = func(id blob.ID, payload []byte) {
		if id == evil {
			payload[0] ^= 1
		}
	}
	dst := t.TempDir()
	rres, err := a.Restore(ctx, RestoreRequest{BackupID: res.BackupID, Destination: dst}, nil)
	if err != nil || rres.State != coffer.JobPartial || len(rres.Errors) != 1 || !strings.HasSuffix(rres.Errors[0].Path, "evil") {
		t.Fatalf("%+v %v", rres, err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, src, "good")); err != nil || string(b) != "good content" {
		t.Errorf("good file: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dst, src, "evil")); err == nil {
		t.Error("the altered file was written")
	}
	if r := s.restore(rres.RestoreID); r.state != coffer.JobPartial || len(r.finish.Errors) != 1 {
		t.Errorf("server's record: %+v", r)
	}
}

func TestRestoreFails(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	ctx := context.Background()
	if _, err := a.Restore(ctx, RestoreRequest{BackupID: "b"}, nil); !errors.Is(err, errNoRestore) {
		t.Errorf("no destination: %v", err)
	}
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644))
	res, err := a.Backup(ctx, BackupRequest{Paths: []string{src}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A path the backup does not have fails the restore before writing anything.
	dst := filepath.Join(t.TempDir(), "dst")
	rres, err := a.Restore(ctx, RestoreRequest{BackupID: res.BackupID, Destination: dst, Paths: []string{"no/such/path"}}, nil)
	if err == nil || rres.State != coffer.JobFailed {
		t.Fatalf("%+v %v", rres, err)
	}
	if r := s.restore(rres.RestoreID); r.state != coffer.JobFailed || !strings.Contains(r.fail.Error, "no/such/path") {
		t.Errorf("server's record: %+v", r)
	}
	// A policy the agent does not know.
	rres, err = a.Restore(ctx, RestoreRequest{BackupID: res.BackupID, Destination: dst, Overwrite: "merge"}, nil)
	if err == nil || !strings.Contains(err.Error(), "overwrite policy") {
		t.Fatalf("%+v %v", rres, err)
	}
}

func TestRestoreOverwritePolicies(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "f"), []byte("from the backup"), 0o644))
	ctx := context.Background()
	res, err := a.Backup(ctx, BackupRequest{Paths: []string{src}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		policy coffer.Overwrite
		want   string
		extra  string // another file expected beside
	}{
		{coffer.OverwriteAlways, "from the backup", ""},
		{coffer.OverwriteSkip, "already there", ""},
		{coffer.OverwriteIfNewer, "already there", ""}, // the existing file is newer
		{coffer.OverwriteRename, "already there", "f.restored-1"},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			dst := t.TempDir()
			dir := filepath.Join(dst, src)
			must(t, os.MkdirAll(dir, 0o755))
			must(t, os.WriteFile(filepath.Join(dir, "f"), []byte("already there"), 0o644))
			rres, err := a.Restore(ctx, RestoreRequest{BackupID: res.BackupID, Destination: dst, Overwrite: tc.policy}, nil)
			if err != nil || rres.State != coffer.JobSucceeded {
				t.Fatalf("%+v %v", rres, err)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "f")); string(b) != tc.want {
				t.Errorf("f holds %q, want %q", b, tc.want)
			}
			if tc.extra != "" {
				if b, _ := os.ReadFile(filepath.Join(dir, tc.extra)); string(b) != "from the backup" {
					t.Errorf("%s holds %q", tc.extra, b)
				}
			}
		})
	}
}

// TestRemoteTreesPrefetched: a restore fetches directories a level at a
// time in one read request, not one request per directory, and sees the
// same nodes as the repository itself.
func TestRemoteTreesPrefetched(t *testing.T) {
	files := repotest.Files{}
	for i := range 40 {
		for j := range 3 {
			files[fmt.Sprintf("d%02d/e%d/f", i, j)] = []byte(fmt.Sprintf("file %d %d", i, j))
		}
	}
	repo := repotest.New(t, repotest.Options{Encrypted: true})
	_, root := repotest.WriteSnapshot(t, repo, files)
	remote, api := newRemote(t, repo)
	ctx := context.Background()
	var walk func(id blob.ID, depth int)
	dirs := 0
	walk = func(id blob.ID, depth int) {
		got, err := remote.LoadDir(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want, err := repo.LoadDir(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("directory %s: %d nodes through the server, %d in the repository", id.Short(), len(got), len(want))
		}
		for i := range got {
			if got[i].Name != want[i].Name || got[i].Subtree != want[i].Subtree {
				t.Fatalf("directory %s: node %d differs", id.Short(), i)
			}
			if got[i].Type == tree.Dir {
				dirs++
				walk(got[i].Subtree, depth+1)
			}
		}
	}
	walk(root, 0)
	if dirs != 160 {
		t.Fatalf("walked %d directories, want 160", dirs)
	}
	if api.blobs != 1 || len(api.reads) > 3 {
		t.Fatalf("%d directories took %d single-tree requests and %d read requests (%v); want the root alone, then one read per level",
			dirs, api.blobs, len(api.reads), api.reads)
	}
	if remote.cached != 0 || len(remote.trees) != 0 {
		t.Fatalf("%d trees (%d bytes) fetched ahead were never used", len(remote.trees), remote.cached)
	}
}

// wireLocation is parseLocation's inverse: a location as the server's
// locate route sends it.
func wireLocation(id blob.ID, loc repository.Location) protocol.BlobLocation {
	return protocol.BlobLocation{ID: id.String(), Type: loc.Type.String(), Pack: loc.Pack.String(),
		Offset: loc.Offset, Length: loc.Length, RawLength: loc.RawLength}
}
