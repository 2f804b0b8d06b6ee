package backups

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cofferhq/coffer"
)

// EventProgress is the code of a running backup's progress events.
const EventProgress = "backup.progress"

// publishProgress publishes a progress event of running backup b, unless
// one was published less than ProgressEvery ago: agents report every
// second or so, the event stream gets one event every few seconds. The
// store grants the event to one replica an interval; this replica asks it
// at most once an interval.
func (s *Service) publishProgress(ctx context.Context, clientID string, b *coffer.Backup) {
	if !s.progress.due(b.ID, s.now()) {
		return
	}
	ok, err := s.store.ClaimBackupProgressEvent(ctx, b.ID, s.progress.every)
	if err != nil {
		s.log.Warn("claim a backup progress event", "backup_id", b.ID, "err", err)
		return
	}
	if !ok {
		return
	}
	st := b.Stats
	msg := fmt.Sprintf("The %s is running: %d files and %d bytes done", what(b), st.Files, st.LogicalBytes)
	if st.TotalFiles > 0 {
		msg += fmt.Sprintf(" of %d files and %d bytes found so far", st.TotalFiles, st.TotalBytes)
	}
	msg += fmt.Sprintf(", %d bytes added to the repository.", st.AddedBytes)
	s.publish(ctx, agentActor(clientID), b, EventProgress, coffer.LevelInfo, "Backup progress", msg)
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
