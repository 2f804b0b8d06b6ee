package backups

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/archiver"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
)

// commitDir backs directory dir up as client c's agent would, through the
// service: it starts a backup (the queued backup of plan, or an ad-hoc one
// when plan is nil), stores dir with the engine's archiver, and commits.
func (e *env) commitDir(c *coffer.Client, dir string, plan *coffer.Plan) *coffer.Backup {
	e.t.Helper()
	ctx := context.Background()
	var start *protocol.StartBackupResponse
	if plan != nil {
		q, err := e.svc.RunPlan(ctx, e.admin, plan)
		if err != nil {
			e.t.Fatal(err)
		}
		if start, err = e.svc.StartBackup(ctx, c.ID, protocol.StartBackupRequest{BackupID: q.ID}); err != nil {
			e.t.Fatal(err)
		}
	} else {
		start = e.start(c, "/data")
	}
	root := archiveDir(e.t, e.repo, dir)
	b, err := e.svc.Commit(ctx, c.ID, start.Backup.ID, protocol.CommitRequest{RootTree: root.String(), StartedAt: e.clock.Now()})
	if err != nil {
		e.t.Fatal(err)
	}
	e.clock.Add(time.Minute) // the next backup is newer
	return b
}

// archiveDir stores dir in repo with the engine's archiver and returns its
// root tree; it commits no snapshot.
func archiveDir(t testing.TB, repo *repository.Repository, dir string) blob.ID {
	t.Helper()
	ctx := context.Background()
	o := archiver.DefaultOptions(repo.Codec())
	o.Chunker = repo.Config().ChunkerParams()
	a, err := archiver.New(o)
	if err != nil {
		t.Fatal(err)
	}
	w, err := repo.NewWriter(ctx, repository.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	root, st, err := a.Archive(ctx, w, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Errors) > 0 {
		t.Fatalf("archive %s: %v", dir, st.Errors)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return root
}

// writeFile writes content to dir/name (parents made).
func writeFile(t testing.TB, dir, name string, content []byte, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, content, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// principals are an admin, a viewer, and two operators, the first owning
// the clients enrollOwned makes.
type principals struct {
	admin, viewer, owner, stranger *coffer.Principal
}

func (e *env) principals() principals {
	e.t.Helper()
	user := func(name string, role coffer.Role) *coffer.Principal {
		u := &coffer.User{Username: name, Role: role, PasswordHash: "unused"}
		if err := e.db.CreateUser(context.Background(), u); err != nil {
			e.t.Fatal(err)
		}
		return &coffer.Principal{Kind: coffer.PrincipalSession, UserID: u.ID, Username: name, Role: role, Scopes: role.Permissions()}
	}
	return principals{admin: e.admin, viewer: user("vera", coffer.RoleViewer), owner: user("olga", coffer.RoleOperator),
		stranger: user("sam", coffer.RoleOperator)}
}

// enrollOwned enrolls a client whose owner is the user of p.
func (e *env) enrollOwned(host string, p *coffer.Principal) *coffer.Client {
	e.t.Helper()
	ctx := context.Background()
	tok := &coffer.EnrollmentToken{TokenHash: "hash-" + host, ExpiresAt: time.Now().Add(time.Hour), CreatedBy: p.UserID}
	if err := e.db.CreateEnrollmentToken(ctx, tok); err != nil {
		e.t.Fatal(err)
	}
	c := &coffer.Client{Hostname: host, OS: "linux", Arch: "amd64", CredentialHash: "cred-" + host}
	if _, err := e.db.EnrollClient(ctx, tok.TokenHash, c); err != nil {
		e.t.Fatal(err)
	}
	if c.OwnerID != p.UserID {
		e.t.Fatalf("client owner = %q, want %q", c.OwnerID, p.UserID)
	}
	return c
}

// download reads bytes [off, off+n) of the file at p in backup b.
func (e *env) download(p *coffer.Principal, b *coffer.Backup, path string, off, n int64) ([]byte, error) {
	ctx := context.Background()
	f, err := e.svc.OpenFile(ctx, p, b.ID, path)
	if err != nil {
		return nil, err
	}
	if n < 0 {
		n = f.Size - off
	}
	dl, err := f.Download(ctx, off, n)
	if err != nil {
		return nil, err
	}
	defer dl.Close()
	var buf bytes.Buffer
	written, err := dl.WriteTo(&buf)
	if written != int64(buf.Len()) {
		e.t.Fatalf("WriteTo reports %d bytes, wrote %d", written, buf.Len())
	}
	return buf.Bytes(), err
}

func TestFileDownload(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		who := e.principals()
		c := e.enrollOwned("files", who.owner)
		dir := t.TempDir()
		big := repotest.Random(7, 3<<20+12345) // ~25 blobs of 64–256 KiB in several 1 MiB packs
		writeFile(t, dir, "data/big.bin", big, 0o640)
		writeFile(t, dir, "data/empty", nil, 0o644)
		writeFile(t, dir, "notes.txt", []byte("hello\n"), 0o644)
		if err := os.Symlink("notes.txt", filepath.Join(dir, "link")); err != nil {
			t.Fatal(err)
		}
		b := e.commitDir(c, dir, nil)

		got, err := e.download(who.owner, b, "/data/big.bin", 0, -1)
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("download: %d bytes, equal %v, err %v", len(got), bytes.Equal(got, big), err)
		}
		f, err := e.svc.OpenFile(ctx, who.admin, b.ID, "data/big.bin")
		if err != nil {
			t.Fatal(err)
		}
		if f.Name != "big.bin" || f.Size != int64(len(big)) || len(f.blobs) < 10 || f.ModTime.IsZero() {
			t.Fatalf("file = %+v with %d blobs", f, len(f.blobs))
		}
		if f.Hash != ContentHash(f.node.Content) || len(f.Hash) != 64 {
			t.Fatalf("hash = %s", f.Hash)
		}
		// Ranges within a blob, across blobs, at both ends.
		for _, r := range [][2]int64{{0, 1}, {1, 100}, {70000, 600000}, {int64(len(big)) - 1, 1}, {int64(len(big)) - 300000, 300000},
			{123456, int64(len(big)) - 123456}, {5, 0}} {
			got, err := e.download(who.owner, b, "data/big.bin", r[0], r[1])
			if err != nil || !bytes.Equal(got, big[r[0]:r[0]+r[1]]) {
				t.Fatalf("range %v: %d bytes, err %v", r, len(got), err)
			}
		}
		if _, err := f.Download(ctx, 10, int64(len(big))); err == nil {
			t.Fatal("a range past the end was accepted")
		}
		for path, want := range map[string][]byte{"notes.txt": []byte("hello\n"), "data/empty": {}} {
			got, err := e.download(who.admin, b, path, 0, -1)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s = %q, %v", path, got, err)
			}
		}

		// Not files, not there, not committed.
		for _, p := range []string{"data", "/", "", "link"} {
			_, err := e.svc.OpenFile(ctx, who.admin, b.ID, p)
			wantCode(t, err, "not_a_file")
		}
		for _, p := range []string{"nope", "data/nope", "notes.txt/x", "../data/big.bin"} {
			_, err := e.svc.OpenFile(ctx, who.admin, b.ID, p)
			wantCode(t, err, "path_not_found")
		}
		_, err = e.svc.OpenFile(ctx, who.admin, b.ID, "a\x00b")
		wantCode(t, err, "invalid_path")
		_, err = e.svc.OpenFile(ctx, who.admin, "nope", "notes.txt")
		wantCode(t, err, "backup_not_found")
		running := e.start(c, "/data")
		_, err = e.svc.OpenFile(ctx, who.admin, running.Backup.ID, "notes.txt")
		wantCode(t, err, "backup_not_committed")

		// Who may download: admins and the client's owner.
		_, err = e.svc.OpenFile(ctx, who.viewer, b.ID, "notes.txt")
		wantCode(t, err, "operate_required")
		_, err = e.svc.OpenFile(ctx, who.stranger, b.ID, "notes.txt")
		wantCode(t, err, "client_not_owned")
		_, err = e.svc.OpenArchive(ctx, who.stranger, b.ID, "data", FormatTar)
		wantCode(t, err, "client_not_owned")
		// A deleted client's backups are the admins' only.
		if _, err := db.DeleteClient(ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.OpenFile(ctx, who.owner, b.ID, "notes.txt")
		wantCode(t, err, "client_not_owned")
		if _, err := e.download(who.admin, b, "notes.txt", 0, -1); err != nil {
			t.Fatal(err)
		}
	})
}

func TestContentHash(t *testing.T) {
	var a, b blob.ID
	a[0], b[0] = 1, 2
	if ContentHash([]blob.ID{a, b}) == ContentHash([]blob.ID{b, a}) || ContentHash([]blob.ID{a}) == ContentHash([]blob.ID{a, a}) {
		t.Fatal("content hashes collide")
	}
	// BLAKE3-256 of the empty input, for an empty file.
	if got := ContentHash(nil); got != "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262" {
		t.Fatalf("empty = %s", got)
	}
}

// corruptBlob damages the stored bytes of blob id in its pack.
func corruptBlob(t *testing.T, e *env, id blob.ID) {
	t.Helper()
	locs, err := e.repo.Locate(context.Background(), []blob.ID{id})
	if err != nil {
		t.Fatal(err)
	}
	loc := locs[id]
	repotest.Replace(t, e.backend, loc.Pack.Name(), func(b []byte) []byte {
		b[loc.Offset+loc.Length/2] ^= 0xff
		return b
	})
}

func TestDamagedDownloads(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		dir := t.TempDir()
		big := repotest.Random(8, 2*batchBytes+1<<20) // more than the first batch
		writeFile(t, dir, "big.bin", big, 0o644)
		writeFile(t, dir, "small.txt", []byte("small"), 0o644)
		b := e.commitDir(e.client, dir, nil)
		f, err := e.svc.OpenFile(ctx, e.admin, b.ID, "big.bin")
		if err != nil {
			t.Fatal(err)
		}
		content := f.node.Content
		if f.starts[len(content)-1] < batchBytes {
			t.Fatalf("the last blob starts at %d, within the first batch", f.starts[len(content)-1])
		}

		// Damage late in the file: the download starts, and fails, short.
		corruptBlob(t, e, content[len(content)-1])
		got, err := e.download(e.admin, b, "big.bin", 0, -1)
		wantCode(t, err, "backup_damaged")
		if len(got) == 0 || len(got) >= len(big) || !bytes.Equal(got, big[:len(got)]) {
			t.Fatalf("damaged download wrote %d of %d bytes", len(got), len(big))
		}
		// A range before the damage is whole.
		if got, err := e.download(e.admin, b, "big.bin", 0, f.starts[len(content)-1]); err != nil || !bytes.Equal(got, big[:len(got)]) {
			t.Fatalf("range before the damage: %d bytes, %v", len(got), err)
		}
		// The archive fails too, and is not a valid archive.
		for _, format := range []ArchiveFormat{FormatTar, FormatZip} {
			raw, err := e.archive(e.admin, b, "", format)
			wantCode(t, err, "backup_damaged")
			if _, rerr := readArchive(format, raw); rerr == nil {
				t.Fatalf("the damaged %s archive reads back whole", format)
			}
		}

		// Damage at the start: refused before any byte.
		corruptBlob(t, e, content[0])
		_, err = f.Download(ctx, 0, f.Size)
		wantCode(t, err, "backup_damaged")
		_, err = f.Download(ctx, f.starts[1], 10)
		if err != nil {
			t.Fatalf("a range past the damage: %v", err)
		}

		// A pack missing from storage, and a blob the index lost.
		s, err := e.svc.OpenFile(ctx, e.admin, b.ID, "small.txt")
		if err != nil {
			t.Fatal(err)
		}
		if err := e.backend.Delete(ctx, s.blobs[0].Loc.Pack.Name()); err != nil {
			t.Fatal(err)
		}
		_, err = s.Download(ctx, 0, s.Size)
		wantCode(t, err, "backup_damaged")
		if _, err := e.repo.Index().DeleteBlobs(ctx, []blob.ID{content[3]}, 1<<62); err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.OpenFile(ctx, e.admin, b.ID, "big.bin")
		wantCode(t, err, "backup_damaged")
	})
}

// TestDownloadStops checks that closing a download before writing it, or
// after a failed write, ends its reader.
func TestDownloadStops(t *testing.T) {
	e := newEnv(t, metadbtest.Open(t, metadb.SQLite))
	ctx := context.Background()
	dir := t.TempDir()
	writeFile(t, dir, "big.bin", repotest.Random(9, 3*batchBytes), 0o644)
	b := e.commitDir(e.client, dir, nil)
	f, err := e.svc.OpenFile(ctx, e.admin, b.ID, "big.bin")
	if err != nil {
		t.Fatal(err)
	}
	dl, err := f.Download(ctx, 0, f.Size)
	if err != nil {
		t.Fatal(err)
	}
	dl.Close()
	dl.Close()
	dl, err = f.Download(ctx, 0, f.Size)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	n, err := dl.WriteTo(&failingWriter{left: batchBytes + 12345})
	if !errors.Is(err, errGone) || n != batchBytes+12345 {
		t.Fatalf("WriteTo = %d, %v", n, err)
	}
}

var errGone = errors.New("client gone")

// failingWriter accepts left bytes, then fails.
type failingWriter struct{ left int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		n := w.left
		w.left = 0
		return n, errGone
	}
	w.left -= len(p)
	return len(p), nil
}

func TestVersions(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		plan := &coffer.Plan{ID: "plan-1", ClientID: e.client.ID, Include: []string{"/data"}}
		other := &coffer.Plan{ID: "plan-2", ClientID: e.client.ID, Include: []string{"/data"}}
		dir := t.TempDir()
		mtime := time.Date(2026, 2, 3, 4, 5, 6, 7, time.UTC)
		put := func(content string) {
			writeFile(t, dir, "docs/f.txt", []byte(content), 0o644)
			if err := os.Chtimes(filepath.Join(dir, "docs/f.txt"), mtime, mtime); err != nil {
				t.Fatal(err)
			}
		}
		put("first")
		v1 := e.commitDir(e.client, dir, plan)
		adhoc1 := e.commitDir(e.client, dir, nil)
		v2 := e.commitDir(e.client, dir, plan) // unchanged
		e.commitDir(e.client, dir, other)
		if err := os.Remove(filepath.Join(dir, "docs/f.txt")); err != nil {
			t.Fatal(err)
		}
		v3 := e.commitDir(e.client, dir, plan) // gone
		put("second, longer")
		v4 := e.commitDir(e.client, dir, plan)
		adhoc2 := e.commitDir(e.client, dir, nil)
		e.commitDir(e.other, dir, nil) // another client's
		failed := e.start(e.client, "/data")
		if _, err := e.svc.Fail(ctx, e.client.ID, failed.Backup.ID, protocol.FailRequest{State: coffer.JobFailed}); err != nil {
			t.Fatal(err)
		}

		vs, next, err := e.svc.Versions(ctx, v1.ID, "/docs/f.txt", nil, 10)
		if err != nil || next != nil {
			t.Fatalf("versions: %v, next %v", err, next)
		}
		ids := func(vs []Version) []string {
			var out []string
			for _, v := range vs {
				out = append(out, v.Backup.ID)
			}
			return out
		}
		if !slices.Equal(ids(vs), []string{v4.ID, v3.ID, v2.ID, v1.ID}) {
			t.Fatalf("versions = %v, want v4 v3 v2 v1", ids(vs))
		}
		if !vs[0].Present || vs[1].Present || !vs[2].Present || !vs[3].Present {
			t.Fatalf("present = %+v", vs)
		}
		if vs[2].ContentHash != vs[3].ContentHash || vs[0].ContentHash == vs[2].ContentHash || len(vs[0].ContentHash) != 64 {
			t.Fatalf("hashes = %q %q %q", vs[0].ContentHash, vs[2].ContentHash, vs[3].ContentHash)
		}
		if vs[1].ContentHash != "" || vs[1].Size != 0 || vs[1].Type != "" || vs[1].Error != "" {
			t.Fatalf("absent version = %+v", vs[1])
		}
		if vs[0].Size != uint64(len("second, longer")) || vs[3].Size != 5 || vs[0].Type != "file" || !vs[0].ModTime.Equal(mtime) {
			t.Fatalf("sizes, types, times = %+v", vs)
		}
		// The file's hash is its download's ETag.
		f, err := e.svc.OpenFile(ctx, e.admin, v4.ID, "docs/f.txt")
		if err != nil || f.Hash != vs[0].ContentHash {
			t.Fatalf("file hash %v, %v", f, err)
		}

		// Pages of two.
		page, next, err := e.svc.Versions(ctx, v4.ID, "docs/f.txt", nil, 2)
		if err != nil || next == nil || !slices.Equal(ids(page), []string{v4.ID, v3.ID}) {
			t.Fatalf("page 1 = %v, %v, %v", ids(page), next, err)
		}
		page, next, err = e.svc.Versions(ctx, v4.ID, "docs/f.txt", next, 2)
		if err != nil || next != nil || !slices.Equal(ids(page), []string{v2.ID, v1.ID}) {
			t.Fatalf("page 2 = %v, %v, %v", ids(page), next, err)
		}

		// Directories: the tree id, equal while nothing below changes; the root.
		dirs, _, err := e.svc.Versions(ctx, v1.ID, "docs", nil, 10)
		if err != nil || dirs[0].Type != "dir" || dirs[2].ContentHash != dirs[3].ContentHash || dirs[1].ContentHash == dirs[2].ContentHash {
			t.Fatalf("dir versions = %+v, %v", dirs, err)
		}
		roots, _, err := e.svc.Versions(ctx, v1.ID, "/", nil, 10)
		if err != nil || len(roots) != 4 || !roots[0].Present || roots[0].ContentHash != v4.RootTree || !roots[0].ModTime.IsZero() {
			t.Fatalf("root versions = %+v, %v", roots, err)
		}

		// Ad-hoc backups: the client's own, without a plan.
		vs, _, err = e.svc.Versions(ctx, adhoc1.ID, "docs/f.txt", nil, 10)
		if err != nil || !slices.Equal(ids(vs), []string{adhoc2.ID, adhoc1.ID}) || vs[0].ContentHash != vs4Hash(t, e, v4) {
			t.Fatalf("ad-hoc versions = %v, %v", ids(vs), err)
		}
		// Paging through them one at a time.
		var got []string
		var after *metadb.Keyset
		for range 20 {
			bs, next, err := e.svc.siblings(ctx, adhoc1, after, 1)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range bs {
				got = append(got, b.ID)
			}
			if after = next; next == nil {
				break
			}
		}
		if !slices.Equal(got, []string{adhoc2.ID, adhoc1.ID}) {
			t.Fatalf("paging ad-hoc versions: %v", got)
		}

		_, _, err = e.svc.Versions(ctx, "nope", "x", nil, 10)
		wantCode(t, err, "backup_not_found")
		_, _, err = e.svc.Versions(ctx, v1.ID, string(make([]byte, MaxPathLen+1)), nil, 10)
		wantCode(t, err, "invalid_path")

		// A backup whose trees are damaged is marked, not fatal.
		corruptTree(t, e, v3)
		vs, _, err = e.svc.Versions(ctx, v1.ID, "docs/f.txt", nil, 10)
		if err != nil || vs[1].Present || vs[1].Error == "" || vs[0].Error != "" || !vs[0].Present || !vs[2].Present {
			t.Fatalf("with a damaged backup: %+v, %v", vs, err)
		}
	})
}

func vs4Hash(t *testing.T, e *env, b *coffer.Backup) string {
	t.Helper()
	f, err := e.svc.OpenFile(context.Background(), e.admin, b.ID, "docs/f.txt")
	if err != nil {
		t.Fatal(err)
	}
	return f.Hash
}

// corruptTree damages the root tree of backup b.
func corruptTree(t *testing.T, e *env, b *coffer.Backup) {
	t.Helper()
	root, err := blob.ParseID(b.RootTree)
	if err != nil {
		t.Fatal(err)
	}
	corruptBlob(t, e, root)
	if _, err := e.repo.LoadTree(context.Background(), root); !errors.Is(err, blob.ErrCorrupt) {
		t.Fatalf("damaged tree loads: %v", err)
	}
}

// archive downloads the archive of path in b.
func (e *env) archive(p *coffer.Principal, b *coffer.Backup, path string, format ArchiveFormat) ([]byte, error) {
	ctx := context.Background()
	a, err := e.svc.OpenArchive(ctx, p, b.ID, path, format)
	if err != nil {
		return nil, err
	}
	dl, err := a.Download(ctx)
	if err != nil {
		return nil, err
	}
	defer dl.Close()
	var buf bytes.Buffer
	_, err = dl.WriteTo(&buf)
	return buf.Bytes(), err
}
