package backups

import (
	"context"
	"testing"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// Only the owner of a client and admins run and cancel its backups.
func TestBackupsNeedTheClient(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		session := func(name string, role coffer.Role) *coffer.Principal {
			u := &coffer.User{Username: name, Role: role, PasswordHash: "x"}
			if err := db.CreateUser(ctx, u); err != nil {
				t.Fatal(err)
			}
			return &coffer.Principal{Kind: coffer.PrincipalSession, UserID: u.ID, Username: name, Role: role, Scopes: role.Permissions()}
		}
		owner, stranger, viewer := session("owner", coffer.RoleOperator), session("stranger", coffer.RoleOperator),
			session("viewer", coffer.RoleViewer)
		if _, _, err := db.UpdateClient(ctx, e.client.ID, metadb.ClientUpdate{OwnerID: &owner.UserID}); err != nil {
			t.Fatal(err)
		}

		run := AdHoc{Paths: []string{"/etc"}}
		_, err := e.svc.RunAdHoc(ctx, stranger, e.client.ID, run)
		wantCode(t, err, "client_not_owned")
		_, err = e.svc.RunAdHoc(ctx, viewer, e.client.ID, run)
		wantCode(t, err, "operate_required")
		_, err = e.svc.RunAdHoc(ctx, owner, e.other.ID, run) // unowned: admins only
		wantCode(t, err, "client_not_owned")
		if sent := e.cmds.sent(); len(sent) != 0 {
			t.Fatalf("refused runs sent commands: %+v", sent)
		}
		b, err := e.svc.RunAdHoc(ctx, owner, e.client.ID, run)
		if err != nil || b.CreatedBy != owner.UserID {
			t.Fatalf("run by owner = %+v, %v", b, err)
		}

		_, err = e.svc.Cancel(ctx, stranger, b.ID)
		wantCode(t, err, "client_not_owned")
		_, err = e.svc.Cancel(ctx, viewer, b.ID)
		wantCode(t, err, "operate_required")
		if got := e.backup(b.ID); got.State != coffer.JobQueued {
			t.Fatalf("a refused cancel changed the backup: %s", got.State)
		}
		if c, err := e.svc.Cancel(ctx, owner, b.ID); err != nil || c.State != coffer.JobCanceled {
			t.Fatalf("cancel by owner = %+v, %v", c, err)
		}
		_, err = e.svc.Cancel(ctx, owner, "01NOSUCHBACKUP")
		wantCode(t, err, "backup_not_found")

		// Once the client is deleted its backups have no owner: admins only.
		b, err = e.svc.RunAdHoc(ctx, owner, e.client.ID, run)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.DeleteClient(ctx, e.client.ID); err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.Cancel(ctx, owner, b.ID)
		wantCode(t, err, "client_not_owned")
		// Deleting the client failed the backup: nothing is left to cancel.
		_, err = e.svc.Cancel(ctx, e.admin, b.ID)
		wantCode(t, err, "backup_finished")
	})
}
