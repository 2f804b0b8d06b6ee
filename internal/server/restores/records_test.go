package restores

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
)

// owned knows clients by id, with their owners' user ids.
type owned map[string]string

func (o owned) GetClient(_ context.Context, id string) (*coffer.Client, error) {
	owner, ok := o[id]
	if !ok {
		return nil, coffer.Errorf(coffer.KindNotFound, "client_not_found", "no client with id %q", id)
	}
	return &coffer.Client{ID: id, Name: id, OwnerID: owner}, nil
}

func principal(id string, role coffer.Role) *coffer.Principal {
	return &coffer.Principal{Kind: coffer.PrincipalSession, UserID: id, Username: id, Role: role, Scopes: role.Permissions()}
}

func TestDeleteRestore(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db, func(o *Options) { o.Clients = owned{"alpha": "user-1", "beta": "user-2"} })
		ctx := f.ctx
		viewer, stranger, admin := principal("v", coffer.RoleViewer), principal("user-2", coffer.RoleOperator),
			principal("boss", coffer.RoleAdmin)

		r, err := f.svc.Create(ctx, f.operator, Request{BackupID: f.backup.ID, Destination: "/restore"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.svc.Delete(ctx, f.operator, r.ID)
		wantCode(t, err, coffer.KindConflict, "restore_active")
		if _, err := f.svc.Cancel(ctx, f.operator, r.ID); err != nil {
			t.Fatal(err)
		}
		_, err = f.svc.Delete(ctx, viewer, r.ID)
		wantCode(t, err, coffer.KindForbidden, "operate_required")
		_, err = f.svc.Delete(ctx, stranger, r.ID)
		wantCode(t, err, coffer.KindForbidden, "client_not_owned")
		_, err = f.svc.Delete(ctx, nil, r.ID)
		wantCode(t, err, coffer.KindForbidden, "operate_required")
		_, err = f.svc.Delete(ctx, f.operator, "01NOSUCH")
		wantCode(t, err, coffer.KindNotFound, "restore_not_found")

		done, err := f.svc.Delete(ctx, f.operator, r.ID)
		if err != nil || done.ID != r.ID || done.State != coffer.JobCanceled {
			t.Fatalf("Delete = %+v, %v", done, err)
		}
		_, err = f.svc.Get(ctx, r.ID)
		wantCode(t, err, coffer.KindNotFound, "restore_not_found")
		var ev *coffer.Event
		for i := range f.rec.events {
			if f.rec.events[i].Code == "restore.deleted" {
				ev = &f.rec.events[i]
			}
		}
		if ev == nil || ev.ActorID != "user-1" || ev.Resource.ID != r.ID || !strings.Contains(ev.Message, "deleted by operator") {
			t.Fatalf("delete event = %+v", ev)
		}
		if _, err := f.db.GetBackup(ctx, f.backup.ID); err != nil {
			t.Fatalf("the backup went with its restore: %v", err)
		}

		// The restores of a client that no longer exists: only admins.
		gone := &coffer.Restore{BackupID: f.backup.ID, SourceClientID: "alpha", TargetClientID: "deleted-client",
			Destination: "/r", Overwrite: coffer.OverwriteSkip}
		if err := db.CreateRestore(ctx, gone); err != nil {
			t.Fatal(err)
		}
		if _, err := db.FinishRestore(ctx, gone.ID, metadb.RestoreFinish{State: coffer.JobSucceeded}); err != nil {
			t.Fatal(err)
		}
		_, err = f.svc.Delete(ctx, f.operator, gone.ID)
		wantCode(t, err, coffer.KindForbidden, "client_not_owned")
		if _, err := f.svc.Delete(ctx, admin, gone.ID); err != nil {
			t.Fatalf("admin delete: %v", err)
		}
	})
}

func TestRestoreProgressEvents(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		db.Now = f.clock.Now
		r := f.running()
		for i := range 11 {
			resp, err := f.svc.Progress(f.ctx, f.alpha, r.ID, protocol.RestoreProgress{Stats: coffer.RestoreStats{Files: uint64(i),
				TotalFiles: 10}})
			if err != nil || resp.Cancel {
				t.Fatalf("progress = %+v, %v", resp, err)
			}
			f.clock.Advance(time.Second)
		}
		var msgs []string
		for _, e := range f.rec.events {
			if e.Code == "restore.progress" {
				msgs = append(msgs, e.Message)
			}
		}
		if len(msgs) != 3 || !strings.Contains(msgs[1], "5 files") || !strings.Contains(msgs[1], "of 10 files") {
			t.Fatalf("progress events in 11 s of reports: %q; want 3, at 0, 5 and 10 s", msgs)
		}
	})
}
