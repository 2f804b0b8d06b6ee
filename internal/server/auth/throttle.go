package auth

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// throttle limits failed logins per key (a username or a client address)
// with a token bucket: Burst failures in a row, then one more every Every.
// Only failures spend tokens, and a key with no token left is refused
// before its password is even checked.
type throttle struct {
	every time.Duration
	burst int
	// maxKeys bounds memory: past it, keys whose bucket has refilled are
	// forgotten, and if that is not enough the oldest half is.
	maxKeys int

	mu   sync.Mutex
	keys map[string]*bucket
}

type bucket struct {
	lim      *rate.Limiter
	lastFail time.Time
}

func newThrottle(burst int, every time.Duration, maxKeys int) *throttle {
	return &throttle{every: every, burst: burst, maxKeys: maxKeys, keys: map[string]*bucket{}}
}

// wait returns how long key must wait before its next attempt (0: go ahead).
func (t *throttle) wait(key string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	b, ok := t.keys[key]
	if !ok {
		return 0
	}
	tokens := b.lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration(math.Ceil((1 - tokens) * float64(t.every)))
}

// fail records a failed attempt for key.
func (t *throttle) fail(key string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b, ok := t.keys[key]
	if !ok {
		if len(t.keys) >= t.maxKeys {
			t.prune(now)
		}
		b = &bucket{lim: rate.NewLimiter(rate.Every(t.every), t.burst)}
		t.keys[key] = b
	}
	b.lim.AllowN(now, 1)
	b.lastFail = now
}

// prune forgets keys whose bucket is full again; if that frees too little,
// it forgets those that failed longest ago.
func (t *throttle) prune(now time.Time) {
	for k, b := range t.keys {
		if b.lim.TokensAt(now) >= float64(t.burst) {
			delete(t.keys, k)
		}
	}
	if len(t.keys) < t.maxKeys/2 {
		return
	}
	cutoff := now.Add(-time.Duration(t.burst) * t.every / 2)
	for k, b := range t.keys {
		if b.lastFail.Before(cutoff) {
			delete(t.keys, k)
		}
	}
	if len(t.keys) >= t.maxKeys {
		clear(t.keys) // under a flood of distinct keys, stay bounded
	}
}
