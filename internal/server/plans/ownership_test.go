package plans_test

import (
	"context"
	"testing"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// Operators create, change, delete and run plans only of the clients they
// own; admins of every client; viewers of none.
func TestPlansNeedTheClient(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db)
		viewer := &coffer.Principal{Kind: coffer.PrincipalSession, UserID: "v", Username: "viewer", Role: coffer.RoleViewer,
			Scopes: coffer.RoleViewer.Permissions()}

		theirs := spec("theirs")
		theirs.ClientID = "c3"
		_, err := e.svc.Create(ctx, e.operator, theirs)
		wantErr(t, err, coffer.KindForbidden, "client_not_owned", "")
		_, err = e.svc.Create(ctx, viewer, spec("seen"))
		wantErr(t, err, coffer.KindForbidden, "operate_required", "")
		adminPlan, err := e.svc.Create(ctx, e.admin, theirs)
		if err != nil {
			t.Fatal(err)
		}
		mine, err := e.svc.Create(ctx, e.operator, spec("mine"))
		if err != nil {
			t.Fatal(err)
		}

		// Update: the plan's client, and the client it moves to.
		_, err = e.svc.Update(ctx, e.operator, adminPlan.ID, spec("taken over"))
		wantErr(t, err, coffer.KindForbidden, "client_not_owned", "")
		moved := spec("mine")
		moved.ClientID = "c3"
		_, err = e.svc.Update(ctx, e.operator, mine.ID, moved)
		wantErr(t, err, coffer.KindForbidden, "client_not_owned", "")
		moved.ClientID = "c2"
		if pl, err := e.svc.Update(ctx, e.operator, mine.ID, moved); err != nil || pl.ClientID != "c2" {
			t.Fatalf("move to an owned client = %+v, %v", pl, err)
		}

		// Run and delete.
		_, err = e.svc.RunNow(ctx, e.operator, adminPlan.ID)
		wantErr(t, err, coffer.KindForbidden, "client_not_owned", "")
		_, err = e.svc.RunNow(ctx, viewer, mine.ID)
		wantErr(t, err, coffer.KindForbidden, "operate_required", "")
		if _, err := e.svc.RunNow(ctx, e.operator, mine.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.RunNow(ctx, e.admin, adminPlan.ID); err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.Delete(ctx, e.operator, adminPlan.ID)
		wantErr(t, err, coffer.KindForbidden, "client_not_owned", "")
		if _, err := e.svc.Get(ctx, adminPlan.ID); err != nil {
			t.Fatalf("a refused delete deleted: %v", err)
		}
		if _, err := e.svc.Delete(ctx, e.operator, mine.ID); err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.Delete(ctx, e.operator, mine.ID)
		wantErr(t, err, coffer.KindNotFound, "plan_not_found", "")
		if ran := e.backups.ran; len(ran) != 2 {
			t.Errorf("plans run = %v", ran)
		}
	})
}
