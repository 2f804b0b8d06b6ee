package events

import (
	"sync/atomic"

	"github.com/cofferhq/coffer"
)

// Subscription is one subscriber's feed of live events.
type Subscription struct {
	hub     *Hub
	c       chan coffer.Event
	dropped atomic.Bool
	closed  bool // guarded by hub.mu
}

// Subscribe returns a subscription that receives, in id order and without
// gaps, every event the hub delivers from now on, until it is closed or
// dropped. Subscriptions made before the hub is ready (see Ready) are
// dropped when it becomes ready; after Close, the subscription is closed
// from the start.
func (h *Hub) Subscribe() *Subscription {
	s := &Subscription{hub: h, c: make(chan coffer.Event, h.opts.Buffer)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		s.closeLocked()
		return s
	}
	h.subs[s] = struct{}{}
	return s
}

// C returns the events. It is closed when the subscription ends: by Close,
// by the hub dropping it, or by the hub stopping. Events already buffered
// stay readable after that.
func (s *Subscription) C() <-chan coffer.Event { return s.c }

// Dropped reports whether the hub ended the subscription because the
// subscriber fell behind (or subscribed before the hub was ready). Nothing
// is lost: the consumer catches up from the stored log after the last id
// it handled, and subscribes again (the SSE handler does this).
func (s *Subscription) Dropped() bool { return s.dropped.Load() }

// Close ends the subscription. It is idempotent and safe to call at any
// time, also while the hub is delivering.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.closeLocked()
}

// closeLocked closes the channel and forgets the subscription; hub.mu
// must be held.
func (s *Subscription) closeLocked() {
	if s.closed {
		return
	}
	s.closed = true
	close(s.c)
	delete(s.hub.subs, s)
}

// dropLocked ends the subscription on the hub's initiative; hub.mu must
// be held.
func (s *Subscription) dropLocked() {
	s.dropped.Store(true)
	s.closeLocked()
}
