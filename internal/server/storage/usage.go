package storage

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cofferhq/coffer/internal/engine/repository"
)

// Usage is how a repository's storage is used: in all, and by each client
// and each plan.
type Usage struct {
	RepositoryID string
	repository.Usage
	QuotaBytes int64 // 0: none
	// Clients and Plans split the snapshots of the repository's backup
	// records by client and by plan ("" for ad-hoc backups), ordered by
	// id: the bytes only their snapshots reach (what forgetting them would
	// free) and the bytes they share with others.
	Clients []GroupUsage
	Plans   []GroupUsage
}

// GroupUsage is the usage of one client's or one plan's snapshots.
type GroupUsage struct {
	ID string
	repository.SetUsage
}

// Usage computes repository id's usage. The totals come from the index;
// the split by client and plan walks the trees of every snapshot, so it
// takes a while on a large repository.
func (s *Service) Usage(ctx context.Context, id string) (*Usage, error) {
	r, err := s.store.GetRepository(ctx, id)
	if err != nil {
		return nil, err
	}
	repo, err := s.set.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	total, err := repo.Usage(ctx)
	if err != nil {
		return nil, err
	}
	owners, err := s.store.RepositorySnapshots(ctx, id)
	if err != nil {
		return nil, err
	}
	// Backup records may name snapshots that were forgotten since.
	indexed, err := repo.Index().Snapshots(ctx)
	if err != nil {
		return nil, fmt.Errorf("usage of repository %s: %w", id, err)
	}
	known := make(map[string]bool, len(indexed))
	for _, sn := range indexed {
		known[sn.ID] = true
	}
	byClient, byPlan := map[string][]string{}, map[string][]string{}
	seen := map[string]bool{}
	for _, o := range owners {
		if !known[o.SnapshotID] || seen[o.SnapshotID] {
			continue
		}
		seen[o.SnapshotID] = true
		byClient[o.ClientID] = append(byClient[o.ClientID], o.SnapshotID)
		byPlan[o.PlanID] = append(byPlan[o.PlanID], o.SnapshotID)
	}
	u := &Usage{RepositoryID: id, Usage: *total, QuotaBytes: r.QuotaBytes}
	if u.Clients, err = groups(ctx, repo, byClient); err != nil {
		return nil, err
	}
	if u.Plans, err = groups(ctx, repo, byPlan); err != nil {
		return nil, err
	}
	return u, nil
}

func groups(ctx context.Context, repo *repository.Repository, sets map[string][]string) ([]GroupUsage, error) {
	out := []GroupUsage{}
	if len(sets) == 0 {
		return out, nil
	}
	m, err := repo.GroupUsage(ctx, sets)
	if err != nil {
		return nil, err
	}
	for id, su := range m {
		out = append(out, GroupUsage{ID: id, SetUsage: *su})
	}
	slices.SortFunc(out, func(a, b GroupUsage) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
