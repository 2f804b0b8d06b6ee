package restores

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cofferhq/coffer"
)

// publishProgress publishes a "restore.progress" event of running restore
// r, unless one was published less than ProgressEvery ago: agents report
// every second or so, the event stream gets one event every few seconds.
// The store grants the event to one replica an interval; this replica asks
// it at most once an interval.
func (s *Service) publishProgress(ctx context.Context, p *coffer.Principal, r *coffer.Restore) {
	if !s.progress.due(r.ID, s.now()) {
		return
	}
	ok, err := s.store.ClaimRestoreProgressEvent(ctx, r.ID, s.progress.every)
	if err != nil {
		s.log.Warn("claim a restore progress event", "restore_id", r.ID, "err", err)
		return
	}
	if !ok {
		return
	}
	st := r.Stats
	msg := fmt.Sprintf("Restore %s of backup %s to %s on client %s is running: %d files and %d bytes written",
		r.ID, r.BackupID, r.Destination, r.TargetClientID, st.Files, st.Bytes)
	if st.TotalFiles > 0 {
		msg += fmt.Sprintf(" of %d files and %d bytes", st.TotalFiles, st.TotalBytes)
	}
	s.publish(ctx, p, r, coffer.LevelInfo, "restore.progress", "Restore progress", msg+".")
}

// throttle spaces out what a replica does per job: due is true at most
// once an interval for each id.
type throttle struct {
	every time.Duration

	mu     sync.Mutex
	last   map[string]time.Time // id → when due last said true
	pruned time.Time
}

func newThrottle(every time.Duration) *throttle {
	return &throttle{every: every, last: map[string]time.Time{}}
}

// due reports whether an interval has passed since it last said true for
// id, and records now if so. Ids not seen for two intervals (jobs that
// ended) are dropped, once an interval.
func (t *throttle) due(id string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.pruned) >= t.every {
		t.pruned = now
		for k, v := range t.last {
			if now.Sub(v) >= 2*t.every {
				delete(t.last, k)
			}
		}
	}
	if last, ok := t.last[id]; ok && now.Sub(last) < t.every {
		return false
	}
	t.last[id] = now
	return true
}
