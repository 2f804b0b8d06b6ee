package storage

import (
	"context"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/internal/metadb"
)

// SampleUsage records, once an hour, each repository's stored, blob and
// logical bytes as a usage sample (the history behind the dashboard's chart
// of stored bytes, and the storage page's logical bytes and deduplication
// ratio), and prunes the samples older than UsageRetention. Several
// replicas may call it: the store keeps one sample per repository and
// hour, and a replica skips the repositories another one sampled already
// that hour. Within an hour after a pass, calling it again does nothing,
// even when some repository failed (it is tried again the next hour). A
// repository that cannot be read is logged, not returned: the error is
// the store's only.
func (s *Service) SampleUsage(ctx context.Context) error {
	now := s.now()
	hour := now.UTC().Truncate(time.Hour)
	s.usageMu.Lock()
	defer s.usageMu.Unlock()
	if s.usageHour.Equal(hour) {
		return nil
	}
	all, _, err := s.store.ListRepositories(ctx, metadb.RepositoryFilter{})
	if err != nil {
		return fmt.Errorf("usage samples: list repositories: %w", err)
	}
	done, err := s.store.SampledRepositories(ctx, now)
	if err != nil {
		return fmt.Errorf("usage samples: %w", err)
	}
	for i := range all {
		id := all[i].ID
		if done[id] {
			continue
		}
		if err := s.sampleUsage(ctx, id, false); err != nil && ctx.Err() == nil {
			s.log.Warn("record the usage of a repository", "repository_id", id, "err", err)
		}
	}
	if _, err := s.store.DeleteUsageSamplesBefore(ctx, now.Add(-s.opts.UsageRetention)); err != nil {
		return fmt.Errorf("prune usage samples: %w", err)
	}
	if ctx.Err() == nil {
		s.usageHour = hour
	}
	return nil
}

// sampleUsage records repository id's usage now; replace overwrites the
// hour's sample (after a garbage collection changed the figures).
func (s *Service) sampleUsage(ctx context.Context, id string, replace bool) error {
	repo, err := s.set.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("usage sample of repository %s: %w", id, err)
	}
	u, err := repo.Usage(ctx)
	if err != nil {
		return fmt.Errorf("usage sample of repository %s: %w", id, err)
	}
	_, err = s.store.RecordUsageSample(ctx, metadb.UsageSample{RepositoryID: id, TakenAt: s.now(), StoredBytes: u.StoredBytes,
		BlobBytes: u.BlobBytes, LogicalBytes: u.LogicalBytes}, replace)
	return err
}

// UsageHistory returns the repositories' usage samples taken since, at
// most one per repository and step (see metadb's UsageHistory).
func (s *Service) UsageHistory(ctx context.Context, since time.Time, step time.Duration) ([]metadb.UsageSample, error) {
	return s.store.UsageHistory(ctx, since, step)
}

// LatestUsage returns each repository's newest usage sample, by
// repository id: its logical bytes and deduplication ratio as of at most
// an hour ago (or its last garbage collection), without reading its index
// and snapshots. A repository not sampled yet is not in the map.
func (s *Service) LatestUsage(ctx context.Context) (map[string]metadb.UsageSample, error) {
	return s.store.LatestUsageSamples(ctx)
}

// StoredBytes returns the bytes each repository's packs take in storage,
// for every repository with packs, from one aggregate of the index.
func (s *Service) StoredBytes(ctx context.Context) (map[string]int64, error) {
	return s.store.StoredBytesByRepository(ctx)
}
