package plans_test

import (
	"context"
	"errors"
	"testing"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/server/plans"
)

// fakeRepositories knows the repositories in it; any other lookup fails
// with err, or as not found.
type fakeRepositories struct {
	known map[string]bool
	err   error
}

func (f fakeRepositories) GetRepository(_ context.Context, id string) (*coffer.Repository, error) {
	if f.known[id] {
		return &coffer.Repository{ID: id}, nil
	}
	if f.err != nil {
		return nil, f.err
	}
	return nil, coffer.Errorf(coffer.KindNotFound, "repository_not_found", "no repository with id %q", id)
}

func TestPlansNameExistingRepositories(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db)
		repos := fakeRepositories{known: map[string]bool{"repo2": true}}
		svc := plans.New(plans.Options{Store: db, Clients: fakeClients{"c1": {ID: "c1", OwnerID: e.operator.UserID}}, Backups: e.backups, Events: e.events,
			DefaultRepositoryID: "repo1", Repositories: repos})
		s := spec("second repository")
		s.RepositoryID = "repo2"
		p, err := svc.Create(ctx, e.operator, s)
		if err != nil || p.RepositoryID != "repo2" {
			t.Fatalf("create in another repository: %+v %v", p, err)
		}
		// The default needs no lookup, an unknown one is refused, on create and update.
		s.RepositoryID = ""
		if p, err = svc.Update(ctx, e.operator, p.ID, s); err != nil || p.RepositoryID != "repo1" {
			t.Fatalf("update to the default: %+v %v", p, err)
		}
		s.RepositoryID = "gone"
		_, err = svc.Update(ctx, e.operator, p.ID, s)
		wantErr(t, err, coffer.KindInvalid, "unknown_repository", "body.repository_id")
		s.Name = "other"
		_, err = svc.Create(ctx, e.operator, s)
		wantErr(t, err, coffer.KindInvalid, "unknown_repository", "body.repository_id")
		// A lookup that fails is not reported as unknown.
		broken := errors.New("database down")
		svc = plans.New(plans.Options{Store: db, Clients: fakeClients{"c1": {ID: "c1", OwnerID: e.operator.UserID}}, Backups: e.backups, Events: e.events,
			DefaultRepositoryID: "repo1", Repositories: fakeRepositories{err: broken}})
		if _, err := svc.Create(ctx, e.operator, s); !errors.Is(err, broken) {
			t.Errorf("failed lookup: %v", err)
		}
	})
}
