package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
)

// Store is the event log the hub publishes to and tails. *metadb.DB
// implements it. Ids must become visible in increasing order: a reader that
// has seen id n never later finds a smaller id.
type Store interface {
	// InsertEvent stores e, assigning e.ID and, when zero, e.CreatedAt.
	InsertEvent(ctx context.Context, e *coffer.Event) error
	// ListEvents returns events matching q (the hub asks for the next
	// events after an id, oldest first).
	ListEvents(ctx context.Context, q metadb.EventQuery) ([]coffer.Event, error)
	// LastEventID returns the newest id, 0 when there is none.
	LastEventID(ctx context.Context) (int64, error)
	// DeleteEventsBefore removes events created before t and returns how many.
	DeleteEventsBefore(ctx context.Context, t time.Time) (int64, error)
}

// Defaults for Options.
const (
	DefaultBuffer       = 256
	DefaultPollInterval = 2 * time.Second
	DefaultBatchSize    = 500
	DefaultRetention    = 90 * 24 * time.Hour
	DefaultPruneEvery   = time.Hour
)

// Options configures a Hub. Zero fields take the documented defaults,
// except Retention, whose zero value disables pruning.
type Options struct {
	// Store is the event log (required).
	Store Store
	// Notifications wakes the hub when another replica has published (see
	// metadb.DB.ListenEvents); nil means none, and the hub relies on polling.
	Notifications <-chan struct{}
	// PollInterval is how often the hub looks for events without being
	// woken: the delay bound for events of other replicas when there are no
	// notifications, and the safety net when there are. Default 2 s.
	PollInterval time.Duration
	// Buffer is the capacity of each subscription's channel; a subscriber
	// with this many undelivered events is dropped. Default 256.
	Buffer int
	// BatchSize bounds each read of the store. Default 500.
	BatchSize int
	// Retention is how long events are kept. Zero disables pruning, so the
	// server configuration should pass DefaultRetention (90 days) unless
	// told otherwise.
	Retention time.Duration
	// PruneEvery is how often old events are pruned. Default 1 h.
	PruneEvery time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// Logger receives the hub's logs. Default: discarded.
	Logger *slog.Logger
}

// withDefaults returns o with zero fields set to their defaults.
func (o Options) withDefaults() Options {
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.PruneEvery <= 0 {
		o.PruneEvery = DefaultPruneEvery
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Stats are the hub's counters, for metrics.
type Stats struct {
	Published          uint64 // events stored by this hub's Publish
	Delivered          uint64 // events handed to subscribers, one per subscriber per event
	DroppedSubscribers uint64 // subscribers dropped for falling behind
	Subscribers        int    // current subscriptions
}

// Hub stores published events and fans them out to subscribers. Its
// methods are safe for concurrent use. Run must be running for subscribers
// to receive anything.
type Hub struct {
	opts Options
	log  *slog.Logger
	// wake holds a pending wake-up from Publish.
	wake chan struct{}
	// ready is closed once Run knows where to start delivering.
	ready chan struct{}
	// done is closed by Close.
	done    chan struct{}
	running atomic.Bool

	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	closed bool

	// failure is the error of the last read of the store, nil once a
	// read succeeds again (for Healthy).
	failure atomic.Pointer[error]

	published atomic.Uint64
	delivered atomic.Uint64
	dropped   atomic.Uint64
}

// New returns a hub; start it with Run.
func New(opts Options) *Hub {
	opts = opts.withDefaults()
	return &Hub{
		opts:  opts,
		log:   opts.Logger,
		wake:  make(chan struct{}, 1),
		ready: make(chan struct{}),
		done:  make(chan struct{}),
		subs:  make(map[*Subscription]struct{}),
	}
}

// Publish validates and stores e, assigning e.ID and e.CreatedAt, and wakes
// the hub to deliver it. It waits for the store, never for subscribers.
// An event without a Code or a Title or with an invalid Audience is
// refused with a coffer.KindInvalid error.
func (h *Hub) Publish(ctx context.Context, e *coffer.Event) error {
	if err := validate(e); err != nil {
		return err
	}
	if err := h.opts.Store.InsertEvent(ctx, e); err != nil {
		return fmt.Errorf("publish event %s: %w", e.Code, err)
	}
	h.published.Add(1)
	select {
	case h.wake <- struct{}{}:
	default:
	}
	return nil
}

// validate checks what every published event must carry.
func validate(e *coffer.Event) error {
	switch {
	case e == nil:
		return coffer.Errorf(coffer.KindInvalid, "invalid_event", "publish event: no event")
	case e.Code == "":
		return coffer.Errorf(coffer.KindInvalid, "invalid_event", "publish event: code is empty")
	case e.Title == "":
		return coffer.Errorf(coffer.KindInvalid, "invalid_event", "publish event %s: title is empty", e.Code)
	case !e.Audience.Valid():
		return coffer.Errorf(coffer.KindInvalid, "invalid_event", "publish event %s: invalid audience %q", e.Code, e.Audience)
	}
	return nil
}

// Ready returns a channel closed once Run has read its starting point from
// the store. A server may wait for it (or report not-ready) before
// accepting streams: subscriptions made earlier are dropped at that moment,
// since the hub cannot know which of the events committed meanwhile their
// consumers already replayed.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// Healthy reports whether the hub is delivering: Run has started, has not
// stopped, and its last read of the store succeeded. Its signature is that
// of a health probe.
func (h *Hub) Healthy(context.Context) error {
	select {
	case <-h.done:
		return errors.New("the event hub is stopped")
	default:
	}
	if p := h.failure.Load(); p != nil {
		return fmt.Errorf("the event hub cannot read the event log: %w", *p)
	}
	select {
	case <-h.ready:
		return nil
	default:
		return errors.New("the event hub has not started")
	}
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	n := len(h.subs)
	h.mu.Unlock()
	return Stats{
		Published:          h.published.Load(),
		Delivered:          h.delivered.Load(),
		DroppedSubscribers: h.dropped.Load(),
		Subscribers:        n,
	}
}

// Close stops the hub: Run returns, every subscription's channel is
// closed, and later subscriptions are closed from the start. Publish still
// stores events (other replicas deliver them). Close is idempotent.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	close(h.done)
	for s := range h.subs {
		s.closeLocked()
	}
}

// Run delivers events to subscribers and prunes old ones until ctx is done
// or Close is called; then it closes the hub and returns nil. It is the
// hub's only goroutine and must be called once; a second call returns an
// error at once.
//
// Store failures are logged and retried at the next wake-up or poll; they
// never stop the hub.
func (h *Hub) Run(ctx context.Context) error {
	if !h.running.CompareAndSwap(false, true) {
		return errors.New("run event hub: already running")
	}
	defer h.Close()

	poll := time.NewTicker(h.opts.PollInterval)
	defer poll.Stop()
	var pruneTick <-chan time.Time
	if h.opts.Retention > 0 {
		prune := time.NewTicker(h.opts.PruneEvery)
		defer prune.Stop()
		pruneTick = prune.C
	}

	t := tailer{hub: h}
	t.tail(ctx)
	if h.opts.Retention > 0 {
		h.prune(ctx)
	}
	notify := h.opts.Notifications
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-h.done:
			return nil
		case <-pruneTick:
			h.prune(ctx)
			continue
		case _, ok := <-notify:
			if !ok {
				h.log.Warn("event notifications ended; relying on polling", "poll_interval", h.opts.PollInterval)
				notify = nil
				continue
			}
		case <-h.wake:
		case <-poll.C:
		}
		t.tail(ctx)
	}
}

// tailer is Run's delivery state; only Run's goroutine touches it.
type tailer struct {
	hub     *Hub
	started bool  // last is known
	last    int64 // the newest id delivered
	failing bool  // the last read failed (to log outages once)
}

// tail delivers every committed event after t.last, in batches, until the
// store has no more. The first successful call only fixes the starting point.
func (t *tailer) tail(ctx context.Context) {
	h := t.hub
	if !t.started {
		last, err := h.opts.Store.LastEventID(ctx)
		if err != nil {
			t.failed(ctx, "read last event id", err)
			return
		}
		t.recovered()
		t.last, t.started = last, true
		h.markReady()
		h.log.Debug("event hub started", "after_id", last)
		return
	}
	for ctx.Err() == nil {
		batch, err := h.opts.Store.ListEvents(ctx, metadb.EventQuery{AfterID: t.last, Limit: h.opts.BatchSize})
		if err != nil {
			t.failed(ctx, "read events", err)
			return
		}
		t.recovered()
		if len(batch) == 0 {
			return
		}
		h.deliver(batch)
		t.last = batch[len(batch)-1].ID
		if len(batch) < h.opts.BatchSize {
			return
		}
	}
}

// failed logs a store failure: the first of an outage as a warning, the
// rest at debug level. Failures caused by the hub stopping are not logged.
func (t *tailer) failed(ctx context.Context, what string, err error) {
	if ctx.Err() != nil {
		return
	}
	t.hub.failure.Store(&err)
	level := slog.LevelWarn
	if t.failing {
		level = slog.LevelDebug
	}
	t.failing = true
	t.hub.log.Log(ctx, level, "event hub cannot "+what+"; will retry", "after_id", t.last, "err", err)
}

// recovered notes that the store answers again.
func (t *tailer) recovered() {
	if t.failing {
		t.failing = false
		t.hub.failure.Store(nil)
		t.hub.log.Info("event hub reads events again", "after_id", t.last)
	}
}

// markReady records that delivery has a starting point and drops the
// subscriptions made before it (see Ready).
func (h *Hub) markReady() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.ready)
	for s := range h.subs {
		s.dropLocked()
	}
}

// deliver hands each event, in order, to every subscriber, dropping those
// whose buffer is full.
func (h *Hub) deliver(batch []coffer.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range batch {
		for s := range h.subs {
			select {
			case s.c <- e:
				h.delivered.Add(1)
			default:
				s.dropLocked()
				h.dropped.Add(1)
				h.log.Warn("dropped slow event subscriber", "event_id", e.ID, "buffer", h.opts.Buffer)
			}
		}
	}
}

// prune deletes events older than the retention period.
func (h *Hub) prune(ctx context.Context) {
	before := h.opts.Now().Add(-h.opts.Retention)
	n, err := h.opts.Store.DeleteEventsBefore(ctx, before)
	if err != nil {
		if ctx.Err() == nil {
			h.log.Warn("prune old events", "before", before, "err", err)
		}
		return
	}
	if n > 0 {
		h.log.Info("pruned old events", "deleted", n, "before", before)
	}
}
