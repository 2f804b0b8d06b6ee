package backups

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
)

func TestFullFlow(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		start := e.start(e.client, "/home/u")
		job, params := start.Backup, start.Repository
		if job.State != coffer.JobRunning || !slices.Equal(job.Paths, []string{"/home/u"}) || job.Exclude == nil {
			t.Fatalf("job = %+v", job)
		}
		key := e.repo.Codec().IDKey()
		cp := e.repo.Config().ChunkerParams()
		if params.ID != e.repo.Config().ID || !bytes.Equal(params.IDKey, key[:]) || params.ChunkerMin != cp.Min ||
			params.ChunkerAvg != cp.Avg || params.ChunkerMax != cp.Max || params.Compression != "fastest" ||
			params.MaxUploadBytes != 32<<20 || params.MaxCheckIDs != 10000 {
			t.Fatalf("params = %+v", params)
		}
		b := e.backup(job.ID)
		if b.Trigger != coffer.TriggerManual || b.HostName != "host-a" || b.SessionID == "" || b.RepositoryID != params.ID {
			t.Fatalf("backup = %+v", b)
		}
		if !e.liveSession() {
			t.Fatal("a running backup holds no write session")
		}

		codec := agentCodec(t, params)
		snap := makeSnapshot(t, codec, 1)
		check, err := e.svc.CheckBlobs(ctx, e.client.ID, protocol.CheckBlobsRequest{BackupID: job.ID, IDs: snap.ids()})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(check.Missing, snap.ids()) {
			t.Fatalf("missing = %v, want all of %v", check.Missing, snap.ids())
		}
		up, err := e.upload(e.client, job.ID, frames(t, codec, snap.blobs...))
		if err != nil {
			t.Fatal(err)
		}
		if up.Stored != len(snap.blobs) || up.Duplicates != 0 || up.StoredBytes <= 0 || !up.Success {
			t.Fatalf("upload = %+v", up)
		}
		check, err = e.svc.CheckBlobs(ctx, e.client.ID, protocol.CheckBlobsRequest{BackupID: job.ID, IDs: snap.ids()})
		if err != nil || len(check.Missing) != 0 {
			t.Fatalf("missing after upload = %v, %v", check, err)
		}
		stats := coffer.BackupStats{Files: 3, Dirs: 1, Symlinks: 1, LogicalBytes: 1234, DataBlobs: 3, TreeBlobs: 2, AddedBytes: uint64(up.StoredBytes)}
		pr, err := e.svc.Progress(ctx, e.client.ID, job.ID, protocol.BackupProgress{Stats: stats, CurrentPath: "/home/u/docs"})
		if err != nil || pr.Cancel || !pr.Success {
			t.Fatalf("progress = %+v, %v", pr, err)
		}
		startedAt := time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC)
		req := protocol.CommitRequest{RootTree: snap.root.String(), Stats: stats, StartedAt: startedAt}
		done, err := e.svc.Commit(ctx, e.client.ID, job.ID, req)
		if err != nil {
			t.Fatal(err)
		}
		if done.State != coffer.JobSucceeded || done.SnapshotID == "" || done.RootTree != snap.root.String() || done.Stats != stats {
			t.Fatalf("committed = %+v", done)
		}
		if e.liveSession() {
			t.Fatal("the write session outlived the commit")
		}
		s, err := e.repo.LoadSnapshot(ctx, done.SnapshotID)
		if err != nil {
			t.Fatal(err)
		}
		if s.Tree != snap.root || s.BackupID != job.ID || s.ClientID != e.client.ID || s.Hostname != "host-a" ||
			!slices.Equal(s.Paths, []string{"/home/u"}) || !s.Time.Equal(startedAt) || s.Stats.Files != 3 ||
			s.Stats.Bytes != 1234 || s.Stats.AddedBytes != stats.AddedBytes || s.Parent != "" {
			t.Fatalf("snapshot = %+v", s)
		}
		// The blobs read back through the repository.
		for _, ub := range snap.blobs {
			got, err := e.repo.LoadBlob(ctx, ub.t, ub.id, nil)
			if err != nil || !bytes.Equal(got, ub.plain) {
				t.Fatalf("blob %s: %v", ub.id.Short(), err)
			}
		}

		// Committing again (a retry) returns the backup; another tree is refused.
		again, err := e.svc.Commit(ctx, e.client.ID, job.ID, req)
		if err != nil || again.SnapshotID != done.SnapshotID {
			t.Fatalf("second commit = %+v, %v", again, err)
		}
		_, err = e.svc.Commit(ctx, e.client.ID, job.ID, protocol.CommitRequest{RootTree: snap.blobs[3].id.String()})
		wantCode(t, err, "backup_finished")
		// Once finished it takes no more blobs or checks.
		_, err = e.upload(e.client, job.ID, frames(t, codec, snap.blobs[0]))
		wantCode(t, err, "backup_finished")

		// Listing.
		list, err := e.svc.Tree(ctx, e.client.ID, job.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, en := range list {
			names = append(names, en.Name+":"+en.Type)
		}
		if !slices.Equal(names, []string{"docs:dir", "hello.txt:file", "link:symlink"}) {
			t.Fatalf("root = %v", names)
		}
		if list[0].UID != 1000 || list[0].User != "u" || list[2].Target != "hello.txt" || list[1].Content != 1 || list[1].Size != 13 {
			t.Fatalf("root entries = %+v", list)
		}
		for _, p := range []string{"docs", "/docs", "docs/", "./docs"} {
			list, err = e.svc.Tree(ctx, e.client.ID, job.ID, p)
			if err != nil || len(list) != 2 || list[0].Name != "a.txt" || list[1].Mode != 0o600 {
				t.Fatalf("tree %q = %+v, %v", p, list, err)
			}
		}
		list, err = e.svc.Tree(ctx, e.client.ID, job.ID, "/docs/b.bin")
		if err != nil || len(list) != 1 || list[0].Name != "b.bin" || list[0].Size != 200<<10 {
			t.Fatalf("file = %+v, %v", list, err)
		}
		for _, p := range []string{"nope", "docs/nope", "hello.txt/x", "docs/a.txt/b"} {
			_, err = e.svc.Tree(ctx, e.client.ID, job.ID, p)
			wantCode(t, err, "path_not_found")
		}
		_, err = e.svc.Tree(ctx, e.other.ID, job.ID, "")
		wantCode(t, err, "backup_not_found")

		// The agent's own list.
		mine, err := e.svc.Backups(ctx, e.client.ID, nil, 10)
		if err != nil || len(mine) != 1 || mine[0].ID != job.ID {
			t.Fatalf("backups = %+v, %v", mine, err)
		}
		theirs, err := e.svc.Backups(ctx, e.other.ID, nil, 10)
		if err != nil || len(theirs) != 0 {
			t.Fatalf("other client's backups = %+v, %v", theirs, err)
		}
		if got := e.events.codes(); !slices.Equal(got, []string{EventStarted, EventProgress, EventSucceeded}) {
			t.Fatalf("events = %v", got)
		}
	})
}

func TestUploadRejectsCorruptFrames(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		job := e.start(e.client, "/data")
		codec := agentCodec(t, job.Repository)
		snap := makeSnapshot(t, codec, 2)
		good := frames(t, codec, snap.blobs[0], snap.blobs[1])
		bad := frames(t, codec, snap.blobs[2])
		bad[len(bad)-1] ^= 0xFF // the last payload byte
		body := append(append([]byte{}, good...), bad...)
		_, err := e.upload(e.client, job.Backup.ID, body)
		ce := wantCode(t, err, "blob_corrupt")
		if ce.Kind != coffer.KindInvalid || ce.Meta["id"] != snap.blobs[2].id.String() {
			t.Fatalf("error = %+v", ce)
		}
		if n := e.packs(); n != 0 {
			t.Fatalf("%d packs stored after a refused upload", n)
		}
		check, err := e.svc.CheckBlobs(context.Background(), e.client.ID,
			protocol.CheckBlobsRequest{BackupID: job.Backup.ID, IDs: snap.ids()[:3]})
		if err != nil || len(check.Missing) != 3 {
			t.Fatalf("missing = %v, %v", check, err)
		}

		// A frame whose id does not match its content, though well formed.
		lie := snap.blobs[0]
		lie.id = snap.blobs[1].id
		_, err = e.upload(e.client, job.Backup.ID, frames(t, codec, lie))
		wantCode(t, err, "blob_corrupt")
		// A tree frame carrying a data blob's content hashes to another id.
		wrongType := snap.blobs[0]
		wrongType.t = blob.Tree
		_, err = e.upload(e.client, job.Backup.ID, frames(t, codec, wrongType))
		wantCode(t, err, "blob_corrupt")

		for name, body := range map[string][]byte{
			"truncated":   good[:len(good)-3],
			"bad type":    append([]byte{7}, good[1:]...),
			"error frame": errorFrame(t, snap.blobs[0].id),
			"garbage":     []byte("not frames at all, not at all, not at all"),
		} {
			_, err := e.upload(e.client, job.Backup.ID, body)
			if ce := wantCode(t, err, "invalid_frames"); ce.Kind != coffer.KindInvalid {
				t.Fatalf("%s: kind %s", name, ce.Kind)
			}
		}
		if n := e.packs(); n != 0 {
			t.Fatalf("%d packs stored after refused uploads", n)
		}
		// An empty upload stores nothing and succeeds.
		up, err := e.upload(e.client, job.Backup.ID, nil)
		if err != nil || up.Stored != 0 || up.Duplicates != 0 {
			t.Fatalf("empty upload = %+v, %v", up, err)
		}
	})
}

func errorFrame(t *testing.T, id blob.ID) []byte {
	var buf bytes.Buffer
	if err := protocol.WriteErrorFrame(&buf, id, "no"); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestUploadLimit(t *testing.T) {
	e := newEnv(t, metadbtest.Open(t, metadb.SQLite))
	job := e.start(e.client, "/data")
	codec := agentCodec(t, job.Repository)
	snap := makeSnapshot(t, codec, 3)
	body := frames(t, codec, snap.blobs...)
	e.svc.maxUpload = int64(len(body))
	// Exactly at the limit is fine (told the size, or not).
	if _, err := e.svc.Upload(context.Background(), e.client.ID, job.Backup.ID, bytes.NewReader(body), -1); err != nil {
		t.Fatal(err)
	}
	e.svc.maxUpload = int64(len(body)) - 1
	_, err := e.svc.Upload(context.Background(), e.client.ID, job.Backup.ID, bytes.NewReader(body), -1)
	if ce := wantCode(t, err, "upload_too_large"); ce.Kind != coffer.KindTooLarge {
		t.Fatalf("kind = %s", ce.Kind)
	}
	_, err = e.upload(e.client, job.Backup.ID, body)
	wantCode(t, err, "upload_too_large")
}

func TestUploadRetryIsHarmless(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		job := e.start(e.client, "/data")
		codec := agentCodec(t, job.Repository)
		snap := makeSnapshot(t, codec, 4)
		// One blob twice in one body is stored once.
		body := frames(t, codec, append(snap.blobs, snap.blobs[0])...)
		up, err := e.upload(e.client, job.Backup.ID, body)
		if err != nil || up.Stored != len(snap.blobs) || up.Duplicates != 1 {
			t.Fatalf("first = %+v, %v", up, err)
		}
		packs := e.packs()
		up, err = e.upload(e.client, job.Backup.ID, body)
		if err != nil || up.Stored != 0 || up.Duplicates != len(snap.blobs)+1 || up.StoredBytes != 0 {
			t.Fatalf("retry = %+v, %v", up, err)
		}
		if e.packs() != packs {
			t.Fatalf("the retry stored packs: %d, was %d", e.packs(), packs)
		}
		// Concurrent uploads of the same new blobs (retries racing the
		// original) all succeed; the blobs are indexed once.
		snap2 := makeSnapshot(t, codec, 40)
		body2 := frames(t, codec, snap2.blobs...)
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for i := range errs {
			wg.Go(func() { _, errs[i] = e.upload(e.client, job.Backup.ID, body2) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, b := range snap2.blobs {
			if got, err := e.repo.LoadBlob(ctx, b.t, b.id, nil); err != nil || !bytes.Equal(got, b.plain) {
				t.Fatalf("blob %s after racing uploads: %v", b.id.Short(), err)
			}
		}
		done, err := e.svc.Commit(ctx, e.client.ID, job.Backup.ID, protocol.CommitRequest{RootTree: snap.root.String()})
		if err != nil || done.State != coffer.JobSucceeded {
			t.Fatalf("commit = %+v, %v", done, err)
		}
		// A second backup of the same data uploads nothing new.
		job2 := e.start(e.client, "/data")
		check, err := e.svc.CheckBlobs(ctx, e.client.ID, protocol.CheckBlobsRequest{BackupID: job2.Backup.ID, IDs: snap.ids()})
		if err != nil || len(check.Missing) != 0 {
			t.Fatalf("second backup's check = %v, %v", check, err)
		}
	})
}

func TestCommitMissingBlobs(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		job := e.start(e.client, "/data")
		codec := agentCodec(t, job.Repository)
		snap := makeSnapshot(t, codec, 5)
		lost := snap.blobs[1] // b.bin's content
		var rest []upBlob
		for _, b := range snap.blobs {
			if b.id != lost.id {
				rest = append(rest, b)
			}
		}
		if _, err := e.upload(e.client, job.Backup.ID, frames(t, codec, rest...)); err != nil {
			t.Fatal(err)
		}
		req := protocol.CommitRequest{RootTree: snap.root.String(), Errors: []coffer.PathError{{Path: "/data/x", Message: "vanished"}}}
		_, err := e.svc.Commit(ctx, e.client.ID, job.Backup.ID, req)
		ce := wantCode(t, err, "missing_blobs")
		if ce.Kind != coffer.KindConflict || !slices.Equal(ce.Meta[protocol.MissingBlobsMetadataKey].([]string), []string{lost.id.String()}) {
			t.Fatalf("error = %+v", ce)
		}
		if b := e.backup(job.Backup.ID); b.State != coffer.JobRunning || b.SnapshotID != "" {
			t.Fatalf("after a refused commit: %+v", b)
		}
		if snaps, err := e.repo.Snapshots(ctx); err != nil || len(snaps) != 0 {
			t.Fatalf("snapshots = %v, %v", snaps, err)
		}
		if _, err := e.upload(e.client, job.Backup.ID, frames(t, codec, lost)); err != nil {
			t.Fatal(err)
		}
		done, err := e.svc.Commit(ctx, e.client.ID, job.Backup.ID, req)
		if err != nil {
			t.Fatal(err)
		}
		if done.State != coffer.JobPartial || len(done.Errors) != 1 || done.Errors[0].Message != "vanished" {
			t.Fatalf("committed = %+v", done)
		}
		if got := e.events.codes(); !slices.Equal(got, []string{EventStarted, EventPartial}) {
			t.Fatalf("events = %v", got)
		}
	})
}

func TestParentBackup(t *testing.T) {
	e := newEnv(t, metadbtest.Open(t, metadb.SQLite))
	ctx := context.Background()
	commit := func(c *coffer.Client, parent string) *coffer.Backup {
		t.Helper()
		job := e.start(c, "/data")
		codec := agentCodec(t, job.Repository)
		snap := makeSnapshot(t, codec, 6)
		if _, err := e.upload(c, job.Backup.ID, frames(t, codec, snap.blobs...)); err != nil {
			t.Fatal(err)
		}
		b, err := e.svc.Commit(ctx, c.ID, job.Backup.ID, protocol.CommitRequest{RootTree: snap.root.String(), ParentID: parent})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	first := commit(e.client, "")
	second := commit(e.client, first.ID)
	if second.ParentID != first.ID {
		t.Fatalf("parent_id = %q, want %q", second.ParentID, first.ID)
	}
	s, err := e.repo.LoadSnapshot(ctx, second.SnapshotID)
	if err != nil || s.Parent != first.SnapshotID {
		t.Fatalf("snapshot parent = %q, %v; want %q", s.Parent, err, first.SnapshotID)
	}
	// Another client's backup, or an unknown one, is not a parent.
	for _, parent := range []string{first.ID, "01NOSUCHBACKUP"} {
		b := commit(e.other, parent)
		s, err := e.repo.LoadSnapshot(ctx, b.SnapshotID)
		if b.ParentID != "" || err != nil || s.Parent != "" {
			t.Fatalf("parent %s: backup %+v snapshot %+v %v", parent, b, s, err)
		}
	}
}

func TestAgentsSeeOnlyTheirBackups(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		job := e.start(e.client, "/data")
		id := job.Backup.ID
		codec := agentCodec(t, job.Repository)
		snap := makeSnapshot(t, codec, 7)
		other := e.other.ID
		_, err := e.svc.CheckBlobs(ctx, other, protocol.CheckBlobsRequest{BackupID: id, IDs: snap.ids()})
		wantCode(t, err, "backup_not_found")
		_, err = e.upload(e.other, id, frames(t, codec, snap.blobs...))
		wantCode(t, err, "backup_not_found")
		_, err = e.svc.Progress(ctx, other, id, protocol.BackupProgress{})
		wantCode(t, err, "backup_not_found")
		_, err = e.svc.Commit(ctx, other, id, protocol.CommitRequest{RootTree: snap.root.String()})
		wantCode(t, err, "backup_not_found")
		_, err = e.svc.Fail(ctx, other, id, protocol.FailRequest{State: coffer.JobFailed, Error: "x"})
		wantCode(t, err, "backup_not_found")
		_, err = e.svc.Tree(ctx, other, id, "")
		wantCode(t, err, "backup_not_found")
		queued, err := e.svc.RunAdHoc(ctx, e.admin, e.client.ID, AdHoc{Paths: []string{"/x"}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.StartBackup(ctx, other, protocol.StartBackupRequest{BackupID: queued.ID})
		wantCode(t, err, "backup_not_found")
		if b := e.backup(id); b.State != coffer.JobRunning || b.Stats != (coffer.BackupStats{}) {
			t.Fatalf("backup changed: %+v", b)
		}
		if e.packs() != 0 {
			t.Fatal("another client's upload was stored")
		}
	})
}

func TestCheckBlobsValidation(t *testing.T) {
	e := newEnv(t, metadbtest.Open(t, metadb.SQLite))
	ctx := context.Background()
	job := e.start(e.client, "/data")
	_, err := e.svc.CheckBlobs(ctx, e.client.ID, protocol.CheckBlobsRequest{BackupID: job.Backup.ID, IDs: []string{"xyz"}})
	if ce := wantCode(t, err, "invalid_blob_id"); ce.Kind != coffer.KindInvalid {
		t.Fatalf("kind = %s", ce.Kind)
	}
	e.svc.maxCheck = 2
	_, err = e.svc.CheckBlobs(ctx, e.client.ID, protocol.CheckBlobsRequest{BackupID: job.Backup.ID, IDs: make([]string, 3)})
	wantCode(t, err, "too_many_ids")
	check, err := e.svc.CheckBlobs(ctx, e.client.ID, protocol.CheckBlobsRequest{BackupID: job.Backup.ID, IDs: []string{}})
	if err != nil || check.Missing == nil || len(check.Missing) != 0 {
		t.Fatalf("empty check = %+v, %v", check, err)
	}
	_, err = e.svc.CheckBlobs(ctx, e.client.ID, protocol.CheckBlobsRequest{BackupID: "nope", IDs: nil})
	wantCode(t, err, "backup_not_found")
	_, err = e.svc.Commit(ctx, e.client.ID, job.Backup.ID, protocol.CommitRequest{RootTree: "zz"})
	wantCode(t, err, "invalid_root_tree")
}

func TestStaleBackupsFail(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		stale := e.start(e.client, "/data").Backup.ID
		e.clock.Add(6 * time.Minute)
		fresh := e.start(e.other, "/data").Backup.ID
		e.clock.Add(5 * time.Minute)
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if b := e.backup(stale); b.State != coffer.JobFailed || b.Error == "" {
			t.Fatalf("stale backup = %+v", b)
		}
		if b := e.backup(fresh); b.State != coffer.JobRunning {
			t.Fatalf("fresh backup = %+v", b)
		}
		if got := e.events.codes(); !slices.Equal(got, []string{EventStarted, EventStarted, EventFailed}) {
			t.Fatalf("events = %v", got)
		}
		// The agent of the failed backup is told to stop.
		pr, err := e.svc.Progress(ctx, e.client.ID, stale, protocol.BackupProgress{})
		if err != nil || !pr.Cancel {
			t.Fatalf("progress of a failed backup = %+v, %v", pr, err)
		}
		// Progress keeps a backup alive.
		if _, err := e.svc.Progress(ctx, e.other.ID, fresh, protocol.BackupProgress{}); err != nil {
			t.Fatal(err)
		}
		e.clock.Add(9 * time.Minute)
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if b := e.backup(fresh); b.State != coffer.JobRunning {
			t.Fatalf("backup with recent progress = %+v", b)
		}
		e.clock.Add(2 * time.Minute)
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if b := e.backup(fresh); b.State != coffer.JobFailed {
			t.Fatalf("backup without progress = %+v", b)
		}
		if e.liveSession() {
			t.Fatal("failed backups still hold write sessions")
		}
	})
}

func TestSessionRenewal(t *testing.T) {
	e := newEnv(t, metadbtest.Open(t, metadb.SQLite))
	ctx := context.Background()
	job := e.start(e.client, "/data")
	// Progress every 5 minutes keeps the 30-minute session alive for an hour.
	for range 12 {
		e.clock.Add(5 * time.Minute)
		if _, err := e.svc.Progress(ctx, e.client.ID, job.Backup.ID, protocol.BackupProgress{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.repo.Index().RenewSession(ctx, sessionOf(e.backup(job.Backup.ID)), time.Minute); err != nil {
		t.Fatalf("session after an hour of progress: %v", err)
	}
}

func TestFail(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		job := e.start(e.client, "/data")
		stats := coffer.BackupStats{Files: 9}
		if _, err := e.svc.Progress(ctx, e.client.ID, job.Backup.ID, protocol.BackupProgress{Stats: stats}); err != nil {
			t.Fatal(err)
		}
		req := protocol.FailRequest{State: coffer.JobFailed, Error: "disk on fire", Errors: []coffer.PathError{{Path: "/data/a", Message: "EIO"}}}
		b, err := e.svc.Fail(ctx, e.client.ID, job.Backup.ID, req)
		if err != nil {
			t.Fatal(err)
		}
		if b.State != coffer.JobFailed || b.Error != "disk on fire" || len(b.Errors) != 1 || b.Stats != stats {
			t.Fatalf("failed = %+v", b)
		}
		if _, err := e.svc.Fail(ctx, e.client.ID, job.Backup.ID, req); err != nil {
			t.Fatalf("failing again: %v", err)
		}
		_, err = e.svc.Fail(ctx, e.client.ID, job.Backup.ID, protocol.FailRequest{State: coffer.JobCanceled})
		wantCode(t, err, "backup_finished")
		_, err = e.svc.Fail(ctx, e.client.ID, job.Backup.ID, protocol.FailRequest{State: coffer.JobSucceeded})
		wantCode(t, err, "invalid_state")
		if e.liveSession() {
			t.Fatal("a failed backup still holds its write session")
		}
		if got := e.events.codes(); !slices.Equal(got, []string{EventStarted, EventProgress, EventFailed}) {
			t.Fatalf("events = %v", got)
		}
	})
}

func TestRunAndCancel(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		token := &coffer.Principal{Kind: coffer.PrincipalAPIToken, UserID: "u1", Username: "ops", Role: coffer.RoleAdmin,
			Scopes: coffer.RoleAdmin.Permissions()}

		// Queued, then canceled before it starts: no command to stop it.
		q, err := e.svc.RunAdHoc(ctx, token, e.client.ID, AdHoc{Paths: []string{"/etc"}, Exclude: []string{"*.tmp"}, Full: true})
		if err != nil {
			t.Fatal(err)
		}
		if q.State != coffer.JobQueued || q.Trigger != coffer.TriggerAPI || q.CreatedBy != "u1" || q.HostName != "host-a" || !q.Full {
			t.Fatalf("queued = %+v", q)
		}
		sent := e.cmds.sent()
		if len(sent) != 1 || sent[0].clientID != e.client.ID || sent[0].cmd.Kind != protocol.CommandBackup ||
			sent[0].cmd.Backup.BackupID != q.ID {
			t.Fatalf("commands = %+v", sent)
		}
		c, err := e.svc.Cancel(ctx, e.admin, q.ID)
		if err != nil || c.State != coffer.JobCanceled {
			t.Fatalf("cancel queued = %+v, %v", c, err)
		}
		if len(e.cmds.sent()) != 1 {
			t.Fatalf("a queued backup's cancel sent a command: %+v", e.cmds.sent())
		}
		_, err = e.svc.StartBackup(ctx, e.client.ID, protocol.StartBackupRequest{BackupID: q.ID})
		wantCode(t, err, "backup_not_queued")
		_, err = e.svc.Cancel(ctx, e.admin, q.ID)
		wantCode(t, err, "backup_finished")

		// Queued, started by its agent (twice: a retry), canceled while running.
		r, err := e.svc.RunAdHoc(ctx, e.admin, e.client.ID, AdHoc{Paths: []string{"/srv"}, OneFileSystem: true})
		if err != nil {
			t.Fatal(err)
		}
		if r.Trigger != coffer.TriggerManual {
			t.Fatalf("trigger = %s", r.Trigger)
		}
		_, err = e.svc.StartBackup(ctx, e.client.ID, protocol.StartBackupRequest{BackupID: r.ID, Paths: []string{"/x"}})
		wantCode(t, err, "backup_fields_with_id")
		st, err := e.svc.StartBackup(ctx, e.client.ID, protocol.StartBackupRequest{BackupID: r.ID})
		if err != nil {
			t.Fatal(err)
		}
		if st.Backup.ID != r.ID || st.Backup.State != coffer.JobRunning || !slices.Equal(st.Backup.Paths, []string{"/srv"}) ||
			!st.Backup.OneFileSystem {
			t.Fatalf("started = %+v", st.Backup)
		}
		again, err := e.svc.StartBackup(ctx, e.client.ID, protocol.StartBackupRequest{BackupID: r.ID})
		if err != nil || again.Backup.ID != r.ID {
			t.Fatalf("retried start = %+v, %v", again, err)
		}
		session := e.backup(r.ID).SessionID
		c, err = e.svc.Cancel(ctx, e.admin, r.ID)
		if err != nil || c.State != coffer.JobRunning || !c.CancelRequested {
			t.Fatalf("cancel running = %+v, %v", c, err)
		}
		sent = e.cmds.sent()
		if len(sent) != 3 || sent[2].cmd.Kind != protocol.CommandCancel || sent[2].cmd.Cancel.JobID != r.ID || sent[2].clientID != e.client.ID {
			t.Fatalf("commands = %+v", sent)
		}
		pr, err := e.svc.Progress(ctx, e.client.ID, r.ID, protocol.BackupProgress{})
		if err != nil || !pr.Cancel {
			t.Fatalf("progress after cancel = %+v, %v", pr, err)
		}
		done, err := e.svc.Fail(ctx, e.client.ID, r.ID, protocol.FailRequest{State: coffer.JobCanceled, Error: "canceled by the server"})
		if err != nil || done.State != coffer.JobCanceled || done.SessionID != session {
			t.Fatalf("canceled = %+v, %v", done, err)
		}
		want := []string{EventQueued, EventCanceled, EventQueued, EventStarted, EventCancelRequested, EventProgress, EventCanceled}
		if got := e.events.codes(); !slices.Equal(got, want) {
			t.Fatalf("events = %v, want %v", got, want)
		}

		_, err = e.svc.RunAdHoc(ctx, e.admin, "01NOSUCHCLIENT", AdHoc{Paths: []string{"/x"}})
		wantCode(t, err, "client_not_found")
		_, err = e.svc.RunAdHoc(ctx, e.admin, e.client.ID, AdHoc{Paths: []string{"relative"}})
		wantCode(t, err, "invalid_path")

		// A command that cannot be queued fails the backup rather than leave it waiting.
		e.cmds.err = coffer.Errorf(coffer.KindUnavailable, "db_down", "down")
		_, err = e.svc.RunAdHoc(ctx, e.admin, e.client.ID, AdHoc{Paths: []string{"/x"}})
		if err == nil {
			t.Fatal("RunAdHoc succeeded without its command")
		}
		list, err := e.svc.List(ctx, metadb.BackupFilter{ClientID: e.client.ID, States: []coffer.JobState{coffer.JobQueued}})
		if err != nil || len(list) != 0 {
			t.Fatalf("queued backups = %+v, %v", list, err)
		}
		if got := e.events.codes(); got[len(got)-1] != EventFailed {
			t.Fatalf("no failure event for the backup that could not be queued: %v", got)
		}
	})
}

func TestValidatePaths(t *testing.T) {
	long := "/" + string(bytes.Repeat([]byte("a"), MaxPathLen))
	for _, tc := range []struct {
		paths []string
		code  string
	}{
		{[]string{"/"}, ""},
		{[]string{"/home/u", "/etc"}, ""},
		{nil, "paths_required"},
		{[]string{"home"}, "invalid_path"},
		{[]string{"/home/"}, "invalid_path"},
		{[]string{"/home//u"}, "invalid_path"},
		{[]string{"/home/../etc"}, "invalid_path"},
		{[]string{"/a\x00b"}, "invalid_path"},
		{[]string{long}, "invalid_path"},
		{make([]string, MaxPaths+1), "too_many_paths"},
	} {
		err := validatePaths(tc.paths)
		if tc.code == "" {
			if err != nil {
				t.Errorf("%q: %v", tc.paths, err)
			}
			continue
		}
		if coffer.ErrorCode(err) != tc.code {
			t.Errorf("%.40q: %v, want %s", tc.paths, err, tc.code)
		}
	}
	for _, tc := range []struct {
		patterns []string
		code     string
	}{
		{nil, ""},
		{[]string{"*.tmp", "/cache/"}, ""},
		{[]string{""}, "invalid_exclude"},
		{[]string{"a\x00"}, "invalid_exclude"},
		{[]string{long}, "invalid_exclude"},
		{make([]string, MaxExcludes+1), "too_many_excludes"},
	} {
		if err := validateExcludes(tc.patterns); coffer.ErrorCode(err) != tc.code {
			t.Errorf("%.40q: %v, want %q", tc.patterns, err, tc.code)
		}
	}
}

// TestCommitRacingTheEnd covers a backup that ended (canceled, or failed
// as stale) while its commit wrote the snapshot: the snapshot, which no
// backup claims, is forgotten again.
func TestCommitRacingTheEnd(t *testing.T) {
	e := newEnv(t, metadbtest.Open(t, metadb.SQLite))
	ctx := context.Background()
	job := e.start(e.client, "/data")
	codec := agentCodec(t, job.Repository)
	snap := makeSnapshot(t, codec, 8)
	if _, err := e.upload(e.client, job.Backup.ID, frames(t, codec, snap.blobs...)); err != nil {
		t.Fatal(err)
	}
	b := e.backup(job.Backup.ID)
	snapID, err := e.svc.commitSnapshot(ctx, e.repo, &tree.Snapshot{Version: tree.SnapshotVersion, Time: time.Now().UTC(),
		Tree: snap.root, BackupID: b.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Cancel(ctx, e.admin, b.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: coffer.JobCanceled, Error: "canceled"}); err != nil {
		t.Fatal(err)
	}
	_, ferr := e.db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: coffer.JobSucceeded, SnapshotID: snapID})
	_, err = e.svc.finishFailed(ctx, e.repo, b.ID, snap.root, snapID, ferr)
	wantCode(t, err, "backup_finished")
	if snaps, err := e.repo.Snapshots(ctx); err != nil || len(snaps) != 0 {
		t.Fatalf("snapshots = %+v, %v", snaps, err)
	}
	if objs := repotest.Objects(t, e.backend, "snapshots/"); len(objs) != 0 {
		t.Fatalf("manifests = %v", objs)
	}
}

// TestConcurrentCommits: a retried commit racing the original gets the
// same backup back, not an error.
func TestConcurrentCommits(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		job := e.start(e.client, "/data")
		codec := agentCodec(t, job.Repository)
		snap := makeSnapshot(t, codec, 9)
		if _, err := e.upload(e.client, job.Backup.ID, frames(t, codec, snap.blobs...)); err != nil {
			t.Fatal(err)
		}
		req := protocol.CommitRequest{RootTree: snap.root.String(), StartedAt: time.Now().UTC()}
		got := make([]*coffer.Backup, 4)
		errs := make([]error, len(got))
		var wg sync.WaitGroup
		for i := range got {
			wg.Go(func() { got[i], errs[i] = e.svc.Commit(ctx, e.client.ID, job.Backup.ID, req) })
		}
		wg.Wait()
		for i := range got {
			if errs[i] != nil || got[i] == nil || got[i].SnapshotID != got[0].SnapshotID || got[i].State != coffer.JobSucceeded {
				t.Fatalf("commit %d = %+v, %v", i, got[i], errs[i])
			}
		}
		if snaps, err := e.repo.Snapshots(ctx); err != nil || len(snaps) != 1 {
			t.Fatalf("snapshots = %d, %v", len(snaps), err)
		}
	})
}

// TestRunPlan: a plan's "run now" queues a backup of its paths on its
// client, tagged with the plan, and full_every makes every Nth one full.
func TestRunPlan(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		plan := &coffer.Plan{ID: "plan-1", ClientID: e.client.ID, Include: []string{"/etc", "/home"},
			Exclude: []string{"*.tmp"}, OneFileSystem: true, FullEvery: 3}
		var fulls []bool
		for range 7 {
			b, err := e.svc.RunPlan(ctx, e.admin, plan)
			if err != nil {
				t.Fatal(err)
			}
			if b.PlanID != plan.ID || b.ClientID != e.client.ID || !b.OneFS || len(b.Paths) != 2 || b.Exclude[0] != "*.tmp" {
				t.Fatalf("plan backup = %+v", b)
			}
			fulls = append(fulls, b.Full)
			// Finish it as its agent would.
			if _, err := db.StartBackup(ctx, b.ID, e.client.ID, "", e.repo.Config().ID); err != nil {
				t.Fatal(err)
			}
			if _, err := db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: coffer.JobSucceeded}); err != nil {
				t.Fatal(err)
			}
			e.clock.Add(time.Minute)
		}
		if want := []bool{true, false, false, true, false, false, true}; fmt.Sprint(fulls) != fmt.Sprint(want) {
			t.Fatalf("full backups of a plan with full_every 3: %v, want %v", fulls, want)
		}
		plan.FullEvery = 0
		if b, err := e.svc.RunPlan(ctx, e.admin, plan); err != nil || b.Full {
			t.Fatalf("full_every 0 = %+v, %v; want an incremental", b, err)
		}
		_, err := e.svc.RunPlan(ctx, e.admin, &coffer.Plan{ID: "p2", ClientID: "01NOSUCHCLIENT", Include: []string{"/x"}})
		wantCode(t, err, "client_not_found")
	})
}
