package restores

import (
	"context"
	"testing"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// owners knows clients by id, with their owners' user ids.
type owners map[string]string

func (o owners) GetClient(_ context.Context, id string) (*coffer.Client, error) {
	owner, ok := o[id]
	if !ok {
		return nil, coffer.Errorf(coffer.KindNotFound, "client_not_found", "no client with id %q", id)
	}
	return &coffer.Client{ID: id, Name: id, OwnerID: owner}, nil
}

// A restore needs the backup's client and the target; its cancel the
// target.
func TestRestoresNeedBothClients(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		// The fixture's operator (user-1) owns alpha, the backup's client,
		// and gamma; user-2 owns beta.
		f := newFixture(t, db, func(o *Options) { o.Clients = owners{"alpha": "user-1", "beta": "user-2", "gamma": "user-1"} })
		ctx := f.ctx
		other := &coffer.Principal{Kind: coffer.PrincipalSession, UserID: "user-2", Username: "other",
			Role: coffer.RoleOperator, Scopes: coffer.RoleOperator.Permissions()}
		viewer := &coffer.Principal{Kind: coffer.PrincipalSession, UserID: "user-3", Username: "viewer",
			Role: coffer.RoleViewer, Scopes: coffer.RoleViewer.Permissions()}
		admin := &coffer.Principal{Kind: coffer.PrincipalSession, UserID: "user-0", Username: "admin",
			Role: coffer.RoleAdmin, Scopes: coffer.RoleAdmin.Permissions()}
		req := func(target string) Request {
			return Request{BackupID: f.backup.ID, TargetClientID: target, Destination: "/r"}
		}

		_, err := f.svc.Create(ctx, f.operator, req("beta")) // owns the source, not the target
		wantCode(t, err, coffer.KindForbidden, "client_not_owned")
		_, err = f.svc.Create(ctx, other, req("beta")) // owns the target, not the source
		wantCode(t, err, coffer.KindForbidden, "client_not_owned")
		_, err = f.svc.Create(ctx, viewer, req(""))
		wantCode(t, err, coffer.KindForbidden, "operate_required")
		if n := len(f.cmds.all()); n != 0 {
			t.Fatalf("refused restores sent %d commands", n)
		}
		toGamma, err := f.svc.Create(ctx, f.operator, req("gamma"))
		if err != nil {
			t.Fatal(err)
		}
		toBeta, err := f.svc.Create(ctx, admin, req("beta"))
		if err != nil {
			t.Fatal(err)
		}

		_, err = f.svc.Cancel(ctx, other, toGamma.ID)
		wantCode(t, err, coffer.KindForbidden, "client_not_owned")
		_, err = f.svc.Cancel(ctx, viewer, toGamma.ID)
		wantCode(t, err, coffer.KindForbidden, "operate_required")
		if r, _ := f.svc.Get(ctx, toGamma.ID); r.State != coffer.JobQueued {
			t.Fatalf("a refused cancel changed the restore: %s", r.State)
		}
		if _, err := f.svc.Cancel(ctx, f.operator, toGamma.ID); err != nil {
			t.Fatal(err)
		}
		// The target's owner cancels a restore onto it that an admin started.
		if _, err := f.svc.Cancel(ctx, other, toBeta.ID); err != nil {
			t.Fatal(err)
		}
	})
}
