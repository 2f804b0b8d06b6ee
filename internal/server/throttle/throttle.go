// Package throttle spaces out what a replica does per job, such as
// publishing a running backup's progress events.
package throttle

import (
	"sync"
	"time"
)

// Throttle says yes at most once an interval for each id. It is safe for
// concurrent use.
type Throttle struct {
	every time.Duration

	mu     sync.Mutex
	last   map[string]time.Time // id → when Due last said true
	pruned time.Time
}

// New returns a Throttle with interval every.
func New(every time.Duration) *Throttle {
	return &Throttle{every: every, last: map[string]time.Time{}}
}

// Every is the interval.
func (t *Throttle) Every() time.Duration { return t.every }

// Due reports whether an interval has passed since it last said true for
// id, and records now if so. Ids not seen for two intervals (jobs that
// ended) are dropped, once an interval.
func (t *Throttle) Due(id string, now time.Time) bool {
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
