package metadb

import (
	"context"
	"fmt"
	"time"
)

// This file keeps the history of repositories' storage use: one sample per
// repository and hour, for the dashboard's chart of stored bytes over time
// and the storage page's logical bytes and deduplication ratio, which are
// too costly to compute on each page view.

// UsageSample is a repository's storage use at one time.
type UsageSample struct {
	RepositoryID string
	TakenAt      time.Time
	StoredBytes  int64 // what its packs take in storage
	// BlobBytes is what its distinct blobs take in storage (compressed
	// and encrypted): the deduplication ratio's denominator.
	BlobBytes    int64
	LogicalBytes int64 // what its snapshots hold before deduplication and compression
}

// hourBucket is t in whole hours since the epoch, the sample's slot.
func hourBucket(t time.Time) int64 { return t.Unix() / 3600 }

// RecordUsageSample stores s as its repository's sample of the hour
// s.TakenAt falls in and reports whether it did. The hour's slot takes one
// sample: when it holds one already (another replica got there first), the
// store keeps it, unless replace is set (a garbage collection just changed
// the figures), which overwrites it. A repository without a record is no
// error: nothing is stored.
func (db *DB) RecordUsageSample(ctx context.Context, s UsageSample, replace bool) (bool, error) {
	onConflict := "DO NOTHING"
	if replace {
		onConflict = "DO UPDATE SET taken_at = excluded.taken_at, stored_bytes = excluded.stored_bytes, blob_bytes = excluded.blob_bytes, logical_bytes = excluded.logical_bytes"
	}
	at := ts(s.TakenAt)
	res, err := db.sql.ExecContext(ctx, `INSERT INTO repository_usage_samples (repository_id, hour_bucket, taken_at, stored_bytes, blob_bytes, logical_bytes)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (repository_id, hour_bucket) `+onConflict,
		s.RepositoryID, hourBucket(at), at, s.StoredBytes, s.BlobBytes, s.LogicalBytes)
	if isForeignKeyViolation(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("record usage sample of repository %s: %w", s.RepositoryID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("record usage sample of repository %s: %w", s.RepositoryID, err)
	}
	return n > 0, nil
}

// SampledRepositories returns the ids of the repositories that have a
// usage sample for the hour t falls in, so that a replica skips computing
// what another one recorded already.
func (db *DB) SampledRepositories(ctx context.Context, t time.Time) (map[string]bool, error) {
	ids, err := queryAll(ctx, db.sql, func(r rowScanner) (string, error) {
		var id string
		err := r.Scan(&id)
		return id, err
	}, `SELECT repository_id FROM repository_usage_samples WHERE hour_bucket = $1`, hourBucket(ts(t)))
	if err != nil {
		return nil, fmt.Errorf("list sampled repositories: %w", err)
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// UsageHistory returns the usage samples taken at or after since, at most
// one per repository and step (the latest of each step, with steps aligned
// to whole multiples of step since the epoch in UTC), ordered by
// repository and time. step is rounded down to whole hours (at least one),
// so a chart of 30 days by 6 hours reads at most 120 samples per
// repository.
func (db *DB) UsageHistory(ctx context.Context, since time.Time, step time.Duration) ([]UsageSample, error) {
	hours := max(int64(step/time.Hour), 1)
	rows, err := queryAll(ctx, db.sql, scanUsageSample, `SELECT `+usageSampleColumns+` FROM repository_usage_samples s
		JOIN (SELECT repository_id, MAX(hour_bucket) AS hour_bucket FROM repository_usage_samples
			WHERE hour_bucket >= $1 GROUP BY repository_id, hour_bucket / $2) l
		ON l.repository_id = s.repository_id AND l.hour_bucket = s.hour_bucket
		WHERE s.taken_at >= $3
		ORDER BY s.repository_id, s.hour_bucket`, hourBucket(ts(since)), hours, ts(since))
	if err != nil {
		return nil, fmt.Errorf("read usage history: %w", err)
	}
	return rows, nil
}

// LatestUsageSamples returns each repository's newest usage sample, by
// repository id; a repository without one is not in the map.
func (db *DB) LatestUsageSamples(ctx context.Context) (map[string]UsageSample, error) {
	rows, err := queryAll(ctx, db.sql, scanUsageSample, `SELECT `+usageSampleColumns+` FROM repository_usage_samples s
		JOIN (SELECT repository_id, MAX(hour_bucket) AS hour_bucket FROM repository_usage_samples GROUP BY repository_id) l
		ON l.repository_id = s.repository_id AND l.hour_bucket = s.hour_bucket`)
	if err != nil {
		return nil, fmt.Errorf("read latest usage samples: %w", err)
	}
	out := make(map[string]UsageSample, len(rows))
	for _, s := range rows {
		out[s.RepositoryID] = s
	}
	return out, nil
}

// usageSampleColumns are the columns scanUsageSample reads, of the table
// aliased s.
const usageSampleColumns = `s.repository_id, s.taken_at, s.stored_bytes, s.blob_bytes, s.logical_bytes`

func scanUsageSample(r rowScanner) (UsageSample, error) {
	var s UsageSample
	err := r.Scan(&s.RepositoryID, utc{&s.TakenAt}, &s.StoredBytes, &s.BlobBytes, &s.LogicalBytes)
	return s, err
}

// DeleteUsageSamplesBefore removes the usage samples taken before t and
// returns how many.
func (db *DB) DeleteUsageSamplesBefore(ctx context.Context, t time.Time) (int64, error) {
	res, err := db.sql.ExecContext(ctx, `DELETE FROM repository_usage_samples WHERE hour_bucket < $1`, hourBucket(ts(t)))
	if err != nil {
		return 0, fmt.Errorf("delete old usage samples: %w", err)
	}
	return res.RowsAffected()
}

// StoredBytesByRepository returns, for every repository that has packs in
// its index, the bytes those packs take: RepositoryStoredBytes of all
// repositories in one aggregate query.
func (db *DB) StoredBytesByRepository(ctx context.Context) (map[string]int64, error) {
	type row struct {
		id string
		n  int64
	}
	rows, err := queryAll(ctx, db.sql, func(r rowScanner) (row, error) {
		var x row
		err := r.Scan(&x.id, &x.n)
		return x, err
	}, `SELECT r.repository_id, COALESCE(SUM(p.size), 0) FROM engine_packs p
		JOIN engine_repos r ON r.id = p.repo WHERE r.repository_id <> '' GROUP BY r.repository_id`)
	if err != nil {
		return nil, fmt.Errorf("stored bytes of repositories: %w", err)
	}
	out := make(map[string]int64, len(rows))
	for _, x := range rows {
		out[x.id] = x.n
	}
	return out, nil
}
