package storage

import (
	"context"
	"fmt"
	"time"

	"github.com/cofferhq/coffer"
)

// quotaState is what Admit knows of one repository: its quota and the
// stored bytes read at some time, plus what it admitted since.
type quotaState struct {
	name     string
	quota    int64 // 0: none (or no record)
	stored   int64
	admitted int64
	at       time.Time
}

// Admit reports, as an error, whether repository id can take addBytes
// more: coffer.KindConflict "quota_exceeded" when its stored bytes and
// addBytes would exceed its quota. With addBytes 0 (a backup starting) it
// refuses only a repository already at or over its quota. A repository
// without a quota, or without a record, admits everything.
//
// Stored bytes come from one aggregate of the index's pack sizes, read
// again once QuotaRefresh has passed; uploads this replica admits
// meanwhile count too. When a refresh finds that usage crossed 80 % or
// 95 % of the quota, a warning event says so, once per crossing across
// replicas; going back below is announced too.
func (s *Service) Admit(ctx context.Context, id string, addBytes int64) error {
	if id == "" {
		id = s.set.DefaultID()
	}
	st, err := s.quotaOf(ctx, id)
	if err != nil {
		return err
	}
	if st.quota == 0 {
		return nil
	}
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	used := st.stored + st.admitted
	if (addBytes == 0 && used >= st.quota) || (addBytes > 0 && used+addBytes > st.quota) {
		return coffer.Errorf(coffer.KindConflict, "quota_exceeded",
			"repository “%s” is over its quota: it stores %s of its %s quota (%d%%) and this needs %s more; raise the repository's quota, or forget backups and run a garbage collection to free space",
			st.name, formatBytes(used), formatBytes(st.quota), percent(used, st.quota), formatBytes(addBytes)).
			With("repository_id", id).With("quota_bytes", st.quota).With("stored_bytes", used).With("add_bytes", addBytes)
	}
	st.admitted += addBytes
	return nil
}

func percent(n, of int64) int64 {
	if of <= 0 {
		return 0
	}
	return n * 100 / of
}

// quotaOf returns the quota figures of repository id, refreshing them
// when they are older than QuotaRefresh.
func (s *Service) quotaOf(ctx context.Context, id string) (*quotaState, error) {
	now := s.now()
	s.quotaMu.Lock()
	st, ok := s.quota[id]
	s.quotaMu.Unlock()
	if ok && now.Sub(st.at) < s.opts.QuotaRefresh {
		return st, nil
	}
	fresh, err := s.refreshQuota(ctx, id)
	if err != nil {
		return nil, err
	}
	fresh.at = now
	s.quotaMu.Lock()
	s.quota[id] = fresh
	s.quotaMu.Unlock()
	return fresh, nil
}

// refreshQuota reads repository id's quota and stored bytes and announces
// a change of its warning level.
func (s *Service) refreshQuota(ctx context.Context, id string) (*quotaState, error) {
	r, err := s.store.GetRepository(ctx, id)
	if coffer.IsKind(err, coffer.KindNotFound) {
		return &quotaState{}, nil
	}
	if err != nil {
		return nil, err
	}
	st := &quotaState{name: r.Name, quota: r.QuotaBytes}
	if r.QuotaBytes == 0 && r.QuotaLevel == 0 {
		return st, nil
	}
	if st.stored, err = s.store.RepositoryStoredBytes(ctx, id); err != nil {
		return nil, err
	}
	s.announceLevel(ctx, r, st.stored)
	return st, nil
}

// quotaLevel is the warning level usage of stored bytes has reached.
func quotaLevel(stored, quota int64) int {
	switch p := percent(stored, quota); {
	case quota == 0:
		return 0
	case p >= coffer.QuotaWarnHigh:
		return coffer.QuotaWarnHigh
	case p >= coffer.QuotaWarnLow:
		return coffer.QuotaWarnLow
	}
	return 0
}

// announceLevel records the warning level r's usage is at and, when this
// replica moved it, publishes the crossing.
func (s *Service) announceLevel(ctx context.Context, r *coffer.Repository, stored int64) {
	level := quotaLevel(stored, r.QuotaBytes)
	if level == r.QuotaLevel {
		return
	}
	moved, err := s.store.SetRepositoryQuotaLevel(ctx, r.ID, r.QuotaLevel, level)
	if err != nil {
		s.log.Warn("record the quota level of a repository", "repository_id", r.ID, "err", err)
		return
	}
	if !moved {
		return
	}
	usage := fmt.Sprintf("it stores %s of its %s quota (%d%%)", formatBytes(stored), formatBytes(r.QuotaBytes), percent(stored, r.QuotaBytes))
	if level > r.QuotaLevel {
		s.publish(ctx, nil, repoRef(r.ID), coffer.LevelWarning, EventQuotaWarning, fmt.Sprintf("Repository over %d%% of its quota", level),
			fmt.Sprintf("Repository “%s” passed %d%% of its quota: %s. Backups that would exceed it will fail: raise the quota, or forget backups and run a garbage collection.",
				r.Name, level, usage))
		return
	}
	s.publish(ctx, nil, repoRef(r.ID), coffer.LevelInfo, EventQuotaBelowWarning, "Repository usage back below its quota warning",
		fmt.Sprintf("Repository “%s” is back below %d%% of its quota: %s.", r.Name, r.QuotaLevel, usage))
}
