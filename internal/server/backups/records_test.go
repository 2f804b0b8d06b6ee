package backups

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/retention"
	"github.com/cofferhq/coffer/internal/server/repos"
)

// This file tests forget, the retention runner, the Freezer metadata and
// progress events.

// newPlan stores a plan of client c.
func (e *env) newPlan(c *coffer.Client, name string, r coffer.Retention) *coffer.Plan {
	e.t.Helper()
	pl := &coffer.Plan{Name: name, ClientID: c.ID, Include: []string{"/data"}, Retention: r, Enabled: true}
	if err := e.db.CreatePlan(context.Background(), pl); err != nil {
		e.t.Fatal(err)
	}
	return pl
}

// commitQueued starts, uploads and commits the queued backup id of client
// c as its agent would, trusting the change cache of parent ("" none).
func (e *env) commitQueued(c *coffer.Client, id, parent string) *coffer.Backup {
	e.t.Helper()
	ctx := context.Background()
	start, err := e.svc.StartBackup(ctx, c.ID, protocol.StartBackupRequest{BackupID: id})
	if err != nil {
		e.t.Fatal(err)
	}
	return e.finishUpload(c, start, parent)
}

// commitAdHoc starts and commits an ad-hoc backup of client c.
func (e *env) commitAdHoc(c *coffer.Client, parent string) *coffer.Backup {
	e.t.Helper()
	return e.finishUpload(c, e.start(c, "/data"), parent)
}

func (e *env) finishUpload(c *coffer.Client, start *protocol.StartBackupResponse, parent string) *coffer.Backup {
	e.t.Helper()
	codec := agentCodec(e.t, start.Repository)
	snap := makeSnapshot(e.t, codec, 9)
	if _, err := e.upload(c, start.Backup.ID, frames(e.t, codec, snap.blobs...)); err != nil {
		e.t.Fatal(err)
	}
	b, err := e.svc.Commit(context.Background(), c.ID, start.Backup.ID, protocol.CommitRequest{RootTree: snap.root.String(),
		ParentID: parent, Stats: coffer.BackupStats{Files: 3, Symlinks: 1, BrokenLinks: 1}})
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// runPlan queues a backup of pl and commits it as the agent of pl's
// client; the clock then moves on.
func (e *env) runPlan(pl *coffer.Plan, parent string) *coffer.Backup {
	e.t.Helper()
	q, err := e.svc.RunPlan(context.Background(), e.admin, pl)
	if err != nil {
		e.t.Fatal(err)
	}
	c := e.client
	if pl.ClientID == e.other.ID {
		c = e.other
	}
	b := e.commitQueued(c, q.ID, parent)
	e.clock.Add(time.Hour)
	return b
}

// failPlan queues a backup of pl that its agent fails.
func (e *env) failPlan(pl *coffer.Plan) *coffer.Backup {
	e.t.Helper()
	ctx := context.Background()
	q, err := e.svc.RunPlan(ctx, e.admin, pl)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.svc.StartBackup(ctx, e.client.ID, protocol.StartBackupRequest{BackupID: q.ID}); err != nil {
		e.t.Fatal(err)
	}
	b, err := e.svc.Fail(ctx, e.client.ID, q.ID, protocol.FailRequest{State: coffer.JobFailed, Error: "disk on fire"})
	if err != nil {
		e.t.Fatal(err)
	}
	e.clock.Add(time.Hour)
	return b
}

// exists reports whether backup id's record is still there.
func (e *env) exists(id string) bool {
	e.t.Helper()
	_, err := e.db.GetBackup(context.Background(), id)
	if err != nil && coffer.ErrorCode(err) != "backup_not_found" {
		e.t.Fatal(err)
	}
	return err == nil
}

// hasSnapshot reports whether the repository still holds snapshot id.
func (e *env) hasSnapshot(id string) bool {
	e.t.Helper()
	_, err := e.repo.LoadSnapshot(context.Background(), id)
	return err == nil
}

// eventsWith returns the events of the given code.
func (l *eventLog) with(code string) []coffer.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []coffer.Event
	for _, ev := range l.events {
		if ev.Code == code {
			out = append(out, ev)
		}
	}
	return out
}

func TestCommitRecordsMetadata(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		if _, err := db.RecordHeartbeat(ctx, e.client.ID, coffer.ClientInfo{Hostname: "host-a", OS: "linux", Arch: "amd64",
			AgentVersion: "1.0.0"}); err != nil {
			t.Fatal(err)
		}
		pl := e.newPlan(e.client, "nightly", coffer.Retention{})
		full := e.runPlan(pl, "")
		inc1 := e.runPlan(pl, full.ID)
		inc2 := e.runPlan(pl, inc1.ID)
		pl.FullEvery = 1 // every backup full: the agent reads every file, whatever cache it has
		refull := e.runPlan(pl, inc2.ID)
		pl.FullEvery = 0
		after := e.runPlan(pl, refull.ID)
		orphan := e.runPlan(pl, "01FORGOTTENMEANWHILE")
		adhoc := e.commitAdHoc(e.client, "")

		for _, tc := range []struct {
			b       *coffer.Backup
			level   int
			session string
			name    string
		}{
			{full, 0, full.ID, "nightly"}, {inc1, 1, full.ID, "nightly"}, {inc2, 2, full.ID, "nightly"},
			{refull, 0, refull.ID, "nightly"}, {after, 1, refull.ID, "nightly"}, {orphan, 1, "", "nightly"},
			{adhoc, 0, adhoc.ID, ""},
		} {
			want := coffer.BackupMeta{Level: tc.level, Session: tc.session, Name: tc.name, ClientOS: "linux",
				AgentVersion: "1.0.0", Compression: "fastest", Encrypted: true}
			if got := e.backup(tc.b.ID).Meta; got != want {
				t.Errorf("backup %s: meta %+v, want %+v", tc.b.ID, got, want)
			}
		}
		if st := e.backup(full.ID).Stats; st.BrokenLinks != 1 {
			t.Errorf("broken links = %d, want what the agent counted", st.BrokenLinks)
		}

		// The record stays true after the agent is upgraded and the plan renamed.
		if _, err := db.RecordHeartbeat(ctx, e.client.ID, coffer.ClientInfo{Hostname: "host-a", OS: "linux", Arch: "amd64",
			AgentVersion: "2.0.0"}); err != nil {
			t.Fatal(err)
		}
		pl.Name = "renamed"
		if err := db.UpdatePlan(ctx, pl); err != nil {
			t.Fatal(err)
		}
		if m := e.backup(full.ID).Meta; m.AgentVersion != "1.0.0" || m.Name != "nightly" {
			t.Errorf("after the upgrade and the rename: %+v", m)
		}
		// A failed backup records who ran it, but no place in a chain.
		failed := e.failPlan(pl)
		if m := e.backup(failed.ID).Meta; m != (coffer.BackupMeta{Name: "renamed", ClientOS: "linux", AgentVersion: "2.0.0",
			Compression: "fastest", Encrypted: true}) {
			t.Errorf("failed backup's meta = %+v", m)
		}
	})
}

func TestExpiresAt(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		held := e.newPlan(e.client, "held", coffer.Retention{KeepLast: 5, HoldDays: 2})
		held.Timezone = "Europe/Berlin"
		if err := db.UpdatePlan(ctx, held); err != nil {
			t.Fatal(err)
		}
		unheld := e.newPlan(e.client, "unheld", coffer.Retention{KeepLast: 5})
		a := e.runPlan(held, "")
		b := e.runPlan(unheld, "")
		c := e.commitAdHoc(e.client, "")
		queued, err := e.svc.RunPlan(ctx, e.admin, held)
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.svc.ExpiresAt(ctx, e.backup(a.ID), e.backup(b.ID), e.backup(c.ID), queued)
		if err != nil {
			t.Fatal(err)
		}
		berlin, _ := time.LoadLocation("Europe/Berlin")
		want, _ := retention.HoldUntil(retention.Policy{HoldDays: 2}, *a.FinishedAt, berlin)
		if got[0] == nil || !got[0].Equal(want) || got[1] != nil || got[2] != nil || got[3] != nil {
			t.Fatalf("ExpiresAt = %v; want [%v nil nil nil]", got, want)
		}
		if _, err := db.DeletePlan(ctx, held.ID); err != nil {
			t.Fatal(err)
		}
		if got, err := e.svc.ExpiresAt(ctx, e.backup(a.ID)); err != nil || got[0] != nil {
			t.Fatalf("ExpiresAt of a deleted plan's backup = %v, %v; want nil", got, err)
		}
	})
}

func TestForget(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		operator := &coffer.Principal{Kind: coffer.PrincipalSession, UserID: "op", Username: "op", Role: coffer.RoleOperator,
			Scopes: coffer.RoleOperator.Permissions()}
		admin := &coffer.Principal{Kind: coffer.PrincipalSession, UserID: "u-admin", Username: "alice", Role: coffer.RoleAdmin,
			Scopes: coffer.RoleAdmin.Permissions()}

		b := e.commitAdHoc(e.client, "")
		_, err := e.svc.Forget(ctx, operator, b.ID)
		wantCode(t, err, "manage_required")
		_, err = e.svc.Forget(ctx, nil, b.ID)
		wantCode(t, err, "manage_required")
		_, err = e.svc.Forget(ctx, admin, "01NOSUCH")
		wantCode(t, err, "backup_not_found")

		// Queued and running backups are canceled first.
		queued, err := e.svc.RunAdHoc(ctx, e.admin, e.client.ID, AdHoc{Paths: []string{"/x"}})
		if err != nil {
			t.Fatal(err)
		}
		ce := wantCode(t, err2(e.svc.Forget(ctx, admin, queued.ID)), "backup_active")
		if !strings.Contains(ce.Detail, "cancel it first") {
			t.Errorf("detail = %q", ce.Detail)
		}
		running := e.start(e.client, "/y")
		wantCode(t, err2(e.svc.Forget(ctx, admin, running.Backup.ID)), "backup_active")

		// A backup being restored waits for the restore; its record stays afterwards.
		r := &coffer.Restore{BackupID: b.ID, SourceClientID: e.client.ID, TargetClientID: e.client.ID, Destination: "/r",
			Overwrite: coffer.OverwriteSkip}
		if err := db.CreateRestore(ctx, r); err != nil {
			t.Fatal(err)
		}
		ce = wantCode(t, err2(e.svc.Forget(ctx, admin, b.ID)), "backup_restoring")
		if ce.Meta["restore_id"] != r.ID {
			t.Errorf("metadata = %v", ce.Meta)
		}
		if _, err := db.FinishRestore(ctx, r.ID, metadb.RestoreFinish{State: coffer.JobSucceeded}); err != nil {
			t.Fatal(err)
		}

		done, err := e.svc.Forget(ctx, admin, b.ID)
		if err != nil || done.ID != b.ID {
			t.Fatalf("Forget = %+v, %v", done, err)
		}
		if e.exists(b.ID) || e.hasSnapshot(b.SnapshotID) {
			t.Fatal("the record or the snapshot outlived Forget")
		}
		if _, err := db.GetRestore(ctx, r.ID); err != nil {
			t.Fatalf("the restore record went with the backup: %v", err)
		}
		evs := e.events.with(EventForgotten)
		if len(evs) != 1 || evs[0].ActorID != "u-admin" || evs[0].Actor != "alice" || evs[0].Resource.ID != b.ID ||
			!strings.Contains(evs[0].Message, "alice") {
			t.Fatalf("forget events = %+v", evs)
		}
		wantCode(t, err2(e.svc.Forget(ctx, admin, b.ID)), "backup_not_found")

		// A failed backup holds no snapshot: its record goes.
		if _, err := e.svc.Cancel(ctx, e.admin, queued.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Forget(ctx, admin, queued.ID); err != nil || e.exists(queued.ID) {
			t.Fatalf("forget a canceled backup: %v", err)
		}

		// Concurrent forgets: one wins, one event.
		c := e.commitAdHoc(e.client, "")
		var wg sync.WaitGroup
		var mu sync.Mutex
		var wins int
		for range 4 {
			wg.Go(func() {
				_, err := e.svc.Forget(ctx, admin, c.ID)
				mu.Lock()
				defer mu.Unlock()
				switch coffer.ErrorCode(err) {
				case "":
					wins++
				case "backup_not_found":
				default:
					t.Errorf("concurrent forget: %v", err)
				}
			})
		}
		wg.Wait()
		if wins != 1 || len(e.events.with(EventForgotten)) != 3 || e.hasSnapshot(c.SnapshotID) {
			t.Fatalf("%d concurrent forgets won, %d events", wins, len(e.events.with(EventForgotten)))
		}
	})
}

func err2[T any](_ T, err error) error { return err }

func TestRetentionKeepLast(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		pl := e.newPlan(e.client, "daily", coffer.Retention{KeepLast: 2})
		other := e.newPlan(e.other, "other", coffer.Retention{})
		oldFailure := e.failPlan(pl)
		var bs []*coffer.Backup
		var midFailure *coffer.Backup
		for i := range 4 {
			if i == 3 {
				midFailure = e.failPlan(pl)
			}
			bs = append(bs, e.runPlan(pl, ""))
		}
		newFailure := e.failPlan(pl)
		adhoc := e.commitAdHoc(e.client, "")
		otherB := e.runPlan(other, "")

		due, err := db.RetentionDue(ctx)
		if err != nil || len(due[pl.ID]) != 4 || len(due[other.ID]) != 1 {
			t.Fatalf("marks before retention = %v, %v", due, err)
		}
		if err := e.svc.ApplyDueRetention(ctx); err != nil {
			t.Fatal(err)
		}
		// The newest two successful backups remain, with the failure
		// after the oldest of them; the rest went, snapshots included.
		kept := map[string]bool{bs[2].ID: true, bs[3].ID: true, midFailure.ID: true, newFailure.ID: true, adhoc.ID: true,
			otherB.ID: true}
		list, err := db.ListBackups(ctx, metadb.BackupFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, b := range list {
			ids = append(ids, b.ID)
			if !kept[b.ID] {
				t.Errorf("backup %s (%s) was kept", b.ID, b.State)
			}
		}
		if len(list) != len(kept) {
			t.Errorf("backups left: %v", ids)
		}
		if e.exists(oldFailure.ID) {
			t.Error("a failure older than every kept backup was kept")
		}
		for i, b := range bs {
			if e.hasSnapshot(b.SnapshotID) != (i >= 2) {
				t.Errorf("backup %d: snapshot kept = %v", i, e.hasSnapshot(b.SnapshotID))
			}
		}
		evs := e.events.with(EventRetentionForgotten)
		if len(evs) != 3 { // bs[0], bs[1] and the old failure
			t.Fatalf("retention events = %+v", evs)
		}
		for _, ev := range evs {
			if !strings.Contains(ev.Message, "not kept by keep_last=2") && !strings.Contains(ev.Message, "older than every backup") ||
				ev.Actor != "system" || !strings.Contains(ev.Message, "“daily”") {
				t.Errorf("event %+v does not name the rule", ev)
			}
		}
		if due, err := db.RetentionDue(ctx); err != nil || len(due) != 0 {
			t.Fatalf("marks after retention = %v, %v", due, err)
		}
		// Running it again changes nothing.
		if err := e.svc.ApplyAllRetention(ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(e.events.with(EventRetentionForgotten)); n != 3 {
			t.Fatalf("a second run forgot more: %d events", n)
		}
		res, err := e.svc.ApplyRetention(ctx, pl.ID)
		if err != nil || len(res.Forgotten) != 0 || !slices.Equal(res.Kept, []string{newFailure.ID, bs[3].ID, midFailure.ID, bs[2].ID}) {
			t.Fatalf("ApplyRetention = %+v, %v", res, err)
		}
		_, err = e.svc.ApplyRetention(ctx, "01NOPLAN")
		wantCode(t, err, "plan_not_found")
	})
}

// TestRetentionKeepsNewest checks through the runner that the newest
// successful backup stays whatever the policy lets go, and that an expired
// hold is named.
func TestRetentionKeepsNewest(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		pl := e.newPlan(e.client, "held", coffer.Retention{HoldDays: 1})
		a := e.runPlan(pl, "")
		b := e.runPlan(pl, "")
		e.failPlan(pl) // the newest backup failed: the newest successful one still stays
		e.clock.Add(72 * time.Hour)
		if err := e.svc.ApplyAllRetention(ctx); err != nil {
			t.Fatal(err)
		}
		if e.exists(a.ID) || !e.exists(b.ID) || !e.hasSnapshot(b.SnapshotID) {
			t.Fatalf("after the hold: a exists %v, b exists %v", e.exists(a.ID), e.exists(b.ID))
		}
		evs := e.events.with(EventRetentionForgotten)
		if len(evs) != 1 || !strings.Contains(evs[0].Message, "hold_days=1 expired on "+
			a.FinishedAt.AddDate(0, 0, 1).UTC().Format(time.RFC3339)) {
			t.Fatalf("events = %+v", evs)
		}
	})
}

func TestRetentionSpecialCases(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()

		// No policy: nothing goes, the marks are cleared.
		none := e.newPlan(e.client, "none", coffer.Retention{})
		n1, n2 := e.runPlan(none, ""), e.runPlan(none, "")
		// A deleted plan: its backups stay, its marks are cleared.
		gone := e.newPlan(e.client, "gone", coffer.Retention{KeepLast: 1})
		g1, g2 := e.runPlan(gone, ""), e.runPlan(gone, "")
		if _, err := db.DeletePlan(ctx, gone.ID); err != nil {
			t.Fatal(err)
		}
		// A backup being restored is skipped, and its mark stays until it can go.
		busy := e.newPlan(e.client, "busy", coffer.Retention{KeepLast: 1})
		b1 := e.runPlan(busy, "")
		r := &coffer.Restore{BackupID: b1.ID, SourceClientID: e.client.ID, TargetClientID: e.client.ID, Destination: "/r",
			Overwrite: coffer.OverwriteSkip, State: coffer.JobRunning}
		if err := db.CreateRestore(ctx, r); err != nil {
			t.Fatal(err)
		}
		b2 := e.runPlan(busy, "")

		if err := e.svc.ApplyDueRetention(ctx); err != nil {
			t.Fatal(err)
		}
		for _, b := range []*coffer.Backup{n1, n2, g1, g2, b1, b2} {
			if !e.exists(b.ID) {
				t.Errorf("backup %s went", b.ID)
			}
		}
		due, err := db.RetentionDue(ctx)
		if err != nil || len(due) != 1 || len(due[busy.ID]) != 2 {
			t.Fatalf("marks = %v, %v; want busy's only", due, err)
		}
		if _, err := db.FinishRestore(ctx, r.ID, metadb.RestoreFinish{State: coffer.JobSucceeded}); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.ApplyDueRetention(ctx); err != nil {
			t.Fatal(err)
		}
		if e.exists(b1.ID) || !e.exists(b2.ID) {
			t.Fatal("the restored backup did not go once its restore ended")
		}
		if due, err := db.RetentionDue(ctx); err != nil || len(due) != 0 {
			t.Fatalf("marks = %v, %v", due, err)
		}
	})
}

// TestRetentionReplicas runs retention on two replicas at once: they
// forget each backup once, with one event, and fail nowhere.
func TestRetentionReplicas(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		pl := e.newPlan(e.client, "busy", coffer.Retention{KeepLast: 1})
		var bs []*coffer.Backup
		for range 6 {
			bs = append(bs, e.runPlan(pl, ""))
		}
		other := New(Options{Store: db, Repos: repos.New(e.repo, nil), Events: e.events, Commands: e.cmds, Clients: db, Now: e.clock.Now})
		var wg sync.WaitGroup
		for _, svc := range []*Service{e.svc, other, e.svc, other} {
			wg.Go(func() {
				if err := svc.ApplyAllRetention(ctx); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if n := len(e.events.with(EventRetentionForgotten)); n != 5 {
			t.Errorf("%d forget events for 5 backups", n)
		}
		for i, b := range bs {
			if e.exists(b.ID) != (i == 5) || e.hasSnapshot(b.SnapshotID) != (i == 5) {
				t.Errorf("backup %d: exists %v", i, e.exists(b.ID))
			}
		}
	})
}

// TestRunRetention checks that a plan's backup that commits wakes the
// runner, which applies the plan's retention.
func TestRunRetention(t *testing.T) {
	e := newEnv(t, metadbtest.Open(t, metadb.SQLite))
	ctx, cancel := context.WithCancel(context.Background())
	pl := e.newPlan(e.client, "p", coffer.Retention{KeepLast: 1})
	first := e.runPlan(pl, "")
	done := make(chan error)
	go func() { done <- e.svc.RunRetention(ctx) }()
	second := e.runPlan(pl, "") // the runner polls once a minute: only the wake-up makes this quick
	deadline := time.Now().Add(30 * time.Second)
	for e.exists(first.ID) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunRetention = %v", err)
	}
	if e.exists(first.ID) || !e.exists(second.ID) {
		t.Fatal("the runner did not apply the plan's retention after its backup committed")
	}
}

func TestProgressEvents(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		other := New(Options{Store: db, Repos: repos.New(e.repo, nil), Events: e.events, Commands: e.cmds, Clients: db, Now: e.clock.Now})
		job := e.start(e.client, "/data").Backup
		report := func(svc *Service, files uint64) {
			t.Helper()
			if _, err := svc.Progress(ctx, e.client.ID, job.ID, protocol.BackupProgress{Stats: coffer.BackupStats{Files: files}}); err != nil {
				t.Fatal(err)
			}
		}
		// One replica, a report a second for 12 seconds: events at 0, 5 and 10 s.
		for i := range 12 {
			report(e.svc, uint64(i))
			e.clock.Add(time.Second)
		}
		evs := e.events.with(EventProgress)
		if len(evs) != 3 {
			t.Fatalf("%d progress events in 12 s, want 3: %+v", len(evs), evs)
		}
		if !strings.Contains(evs[1].Message, "5 files") || evs[0].Level != coffer.LevelInfo || evs[0].Resource.ID != job.ID {
			t.Fatalf("progress event = %+v", evs[1])
		}
		// Two replicas at once: one event between them.
		e.clock.Add(5 * time.Second)
		for range 2 {
			report(e.svc, 20)
			report(other, 20)
		}
		if n := len(e.events.with(EventProgress)); n != 4 {
			t.Fatalf("%d progress events after two replicas reported, want 4", n)
		}
	})
}
