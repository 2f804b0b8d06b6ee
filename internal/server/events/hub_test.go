package events_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/server/events"
	"github.com/google/go-cmp/cmp"
)

// bound is how long a test waits for something that must happen. It
// guards against hanging; no test asserts that anything happens fast.
const bound = 10 * time.Second

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// start runs a hub until the test ends and waits until it is ready.
func start(t *testing.T, opts events.Options) *events.Hub {
	t.Helper()
	h := run(t, opts)
	waitReady(t, h)
	return h
}

// run runs a hub until the test ends, without waiting for it.
func run(t *testing.T, opts events.Options) *events.Hub {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	h := events.New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return h
}

func waitReady(t *testing.T, h *events.Hub) {
	t.Helper()
	select {
	case <-h.Ready():
	case <-time.After(bound):
		t.Fatalf("hub not ready within %v", bound)
	}
}

func event(code string) *coffer.Event {
	return &coffer.Event{Code: code, Title: "title of " + code, Audience: coffer.RoleViewer, Actor: "system"}
}

func publish(t *testing.T, h *events.Hub, code string) coffer.Event {
	t.Helper()
	e := event(code)
	if err := h.Publish(context.Background(), e); err != nil {
		t.Fatalf("publish %s: %v", code, err)
	}
	return *e
}

// receive reads n events from s.
func receive(t *testing.T, s *events.Subscription, n int) []coffer.Event {
	t.Helper()
	var out []coffer.Event
	for len(out) < n {
		select {
		case e, ok := <-s.C():
			if !ok {
				t.Fatalf("subscription ended after %d of %d events (dropped: %v)", len(out), n, s.Dropped())
			}
			out = append(out, e)
		case <-time.After(bound):
			t.Fatalf("received %d of %d events", len(out), n)
		}
	}
	return out
}

// wantOnly publishes a sentinel event and checks that it is the next thing
// every subscription receives: nothing extra was delivered before it.
func wantOnly(t *testing.T, h *events.Hub, subs ...*events.Subscription) {
	t.Helper()
	sentinel := publish(t, h, "test.sentinel")
	for i, s := range subs {
		if got := receive(t, s, 1)[0]; got.ID != sentinel.ID {
			t.Errorf("subscriber %d: got event %d (%s) before the sentinel %d", i, got.ID, got.Code, sentinel.ID)
		}
	}
}

// wantEnded waits until s's channel is closed and returns what was still
// buffered in it.
func wantEnded(t *testing.T, s *events.Subscription) []coffer.Event {
	t.Helper()
	var rest []coffer.Event
	timeout := time.After(bound)
	for {
		select {
		case e, ok := <-s.C():
			if !ok {
				return rest
			}
			rest = append(rest, e)
		case <-timeout:
			t.Fatalf("subscription still open after %v", bound)
		}
	}
}

func ids(evs []coffer.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func TestPublishDeliversInOrder(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		h := start(t, events.Options{Store: db})
		a, b := h.Subscribe(), h.Subscribe()
		defer a.Close()
		defer b.Close()

		var want []coffer.Event
		for i := range 5 {
			want = append(want, publish(t, h, fmt.Sprintf("test.%d", i)))
			if i > 0 && want[i].ID <= want[i-1].ID {
				t.Fatalf("ids not increasing: %d then %d", want[i-1].ID, want[i].ID)
			}
		}
		for name, s := range map[string]*events.Subscription{"a": a, "b": b} {
			if diff := cmp.Diff(want, receive(t, s, len(want))); diff != "" {
				t.Errorf("subscriber %s (-published +received):\n%s", name, diff)
			}
		}
		wantOnly(t, h, a, b)
		got := h.Stats()
		if diff := cmp.Diff(events.Stats{Published: 6, Delivered: 12, Subscribers: 2}, got); diff != "" {
			t.Errorf("stats (-want +got):\n%s", diff)
		}
		if err := h.Healthy(context.Background()); err != nil {
			t.Errorf("Healthy: %v", err)
		}
	})
}

func TestConcurrentPublishers(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		h := start(t, events.Options{Store: db})
		subs := []*events.Subscription{h.Subscribe(), h.Subscribe(), h.Subscribe()}
		const writers, each = 4, 50
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					if err := h.Publish(context.Background(), event(fmt.Sprintf("w%d.%d", w, i))); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		for n, s := range subs {
			got := receive(t, s, writers*each)
			codes := map[string]bool{}
			for i, e := range got {
				if i > 0 && e.ID <= got[i-1].ID {
					t.Fatalf("subscriber %d: id %d after %d", n, e.ID, got[i-1].ID)
				}
				codes[e.Code] = true
			}
			if len(codes) != writers*each {
				t.Errorf("subscriber %d: %d distinct events, want %d", n, len(codes), writers*each)
			}
		}
		wantOnly(t, h, subs...)
		if st := h.Stats(); st.Published != writers*each+1 || st.DroppedSubscribers != 0 {
			t.Errorf("stats = %+v", st)
		}
	})
}

func TestSlowSubscriberIsDropped(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		const buffer = 4
		h := start(t, events.Options{Store: db, Buffer: buffer})
		slow := h.Subscribe() // never reads
		fast := h.Subscribe()
		defer fast.Close()

		// Ten times the buffer: the slow subscriber must not hold anything
		// up. The fast one reads each event before the next is published,
		// so its small buffer never fills.
		var published []coffer.Event
		for i := range 10 * buffer {
			e := publish(t, h, fmt.Sprintf("test.%d", i))
			published = append(published, e)
			if got := receive(t, fast, 1)[0]; got.ID != e.ID {
				t.Fatalf("fast subscriber got %d, want %d", got.ID, e.ID)
			}
		}
		if fast.Dropped() {
			t.Error("fast subscriber dropped")
		}
		rest := wantEnded(t, slow)
		if !slow.Dropped() {
			t.Error("slow subscriber not reported as dropped")
		}
		if diff := cmp.Diff(ids(published[:buffer]), ids(rest)); diff != "" {
			t.Errorf("slow subscriber's buffer (-want +got):\n%s", diff)
		}
		if st := h.Stats(); st.DroppedSubscribers != 1 || st.Subscribers != 1 {
			t.Errorf("stats = %+v, want 1 dropped and 1 remaining subscriber", st)
		}
		slow.Close() // closing a dropped subscription is harmless
	})
}

// listen returns db's notifications for the rest of the test.
func listen(t *testing.T, db *metadb.DB) <-chan struct{} {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	notes, err := db.ListenEvents(ctx, testLogger(t))
	if err != nil || notes == nil {
		cancel()
		t.Fatalf("ListenEvents = %v, %v", notes, err)
	}
	t.Cleanup(func() {
		cancel()
		for range notes {
		}
	})
	return notes
}

// crossReplica publishes on a and checks that a subscriber of b receives
// every event, in order.
func crossReplica(t *testing.T, a, b *events.Hub) {
	t.Helper()
	sub := b.Subscribe()
	defer sub.Close()
	var want []int64
	for i := range 20 {
		want = append(want, publish(t, a, fmt.Sprintf("from.a.%d", i)).ID)
	}
	if diff := cmp.Diff(want, ids(receive(t, sub, len(want)))); diff != "" {
		t.Errorf("replica b received (-published on a +received):\n%s", diff)
	}
	if st := b.Stats(); st.Published != 0 || st.Delivered != uint64(len(want)) {
		t.Errorf("replica b stats = %+v", st)
	}
}

func TestReplicas(t *testing.T) {
	t.Run("notifications", func(t *testing.T) {
		dbA, dbB := metadbtest.OpenReplicas(t, metadb.Postgres)
		a := start(t, events.Options{Store: dbA})
		// Only a notification can wake b within the test.
		b := start(t, events.Options{Store: dbB, Notifications: listen(t, dbB), PollInterval: time.Hour})
		crossReplica(t, a, b)
	})
	for _, d := range []metadb.Dialect{metadb.SQLite, metadb.Postgres} {
		t.Run("polling/"+string(d), func(t *testing.T) {
			dbA, dbB := metadbtest.OpenReplicas(t, d)
			a := start(t, events.Options{Store: dbA})
			b := start(t, events.Options{Store: dbB, PollInterval: 50 * time.Millisecond})
			crossReplica(t, a, b)
		})
	}
}

func TestStopEndsSubscriptions(t *testing.T) {
	stops := map[string]func(h *events.Hub, cancel context.CancelFunc){
		"Close":          func(h *events.Hub, _ context.CancelFunc) { h.Close() },
		"context ending": func(_ *events.Hub, cancel context.CancelFunc) { cancel() },
	}
	for name, stop := range stops {
		t.Run(name, func(t *testing.T) {
			db := metadbtest.Open(t, metadb.SQLite)
			h := events.New(events.Options{Store: db, Logger: testLogger(t)})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- h.Run(ctx) }()
			waitReady(t, h)
			subs := []*events.Subscription{h.Subscribe(), h.Subscribe()}
			publish(t, h, "test.before")
			for _, s := range subs {
				receive(t, s, 1)
			}

			stop(h, cancel)
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(bound):
				t.Fatalf("Run still running %v after stopping", bound)
			}
			for i, s := range subs {
				wantEnded(t, s)
				if s.Dropped() {
					t.Errorf("subscription %d ended by shutdown reports Dropped", i)
				}
				s.Close()
			}
			late := h.Subscribe()
			if _, ok := <-late.C(); ok {
				t.Error("Subscribe after stopping returned an open subscription")
			}
			late.Close()
			if n := h.Stats().Subscribers; n != 0 {
				t.Errorf("%d subscribers after stopping", n)
			}
			if h.Healthy(context.Background()) == nil {
				t.Error("a stopped hub reports healthy")
			}
			// Events are still stored: other replicas deliver them.
			publish(t, h, "test.after")
		})
	}
}

func TestSubscribeBeforeReady(t *testing.T) {
	db := metadbtest.Open(t, metadb.SQLite)
	h := events.New(events.Options{Store: db, Logger: testLogger(t)})
	early := h.Subscribe()
	if err := h.Healthy(context.Background()); err == nil {
		t.Error("a hub that has not started reports healthy")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitReady(t, h)
	// The hub cannot know what the early subscriber's consumer replayed.
	wantEnded(t, early)
	if !early.Dropped() {
		t.Error("a subscription made before the hub was ready is not reported as dropped")
	}
	if err := h.Run(ctx); err == nil {
		t.Error("a second Run did not fail")
	}
}

func TestSubscriptionCloseDuringDelivery(t *testing.T) {
	db := metadbtest.Open(t, metadb.SQLite)
	h := start(t, events.Options{Store: db})
	var subs []*events.Subscription
	for range 20 {
		subs = append(subs, h.Subscribe())
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 50 {
			if err := h.Publish(context.Background(), event(fmt.Sprint(i))); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for _, s := range subs {
		wg.Go(func() {
			receive(t, s, 1)
			s.Close()
			s.Close()
		})
	}
	wg.Wait()
	for _, s := range subs {
		wantEnded(t, s)
		if s.Dropped() {
			t.Error("a subscription closed by its owner reports Dropped")
		}
	}
	if n := h.Stats().Subscribers; n != 0 {
		t.Errorf("%d subscribers after all closed", n)
	}
}

func TestBatches(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		h := start(t, events.Options{Store: db, BatchSize: 3})
		sub := h.Subscribe()
		defer sub.Close()
		// Stored behind the hub's back (as another replica without
		// notifications would), then one Publish wakes it.
		var want []int64
		for i := range 10 {
			e := event(fmt.Sprintf("direct.%d", i))
			if err := db.InsertEvent(context.Background(), e); err != nil {
				t.Fatal(err)
			}
			want = append(want, e.ID)
		}
		want = append(want, publish(t, h, "test.wake").ID)
		if diff := cmp.Diff(want, ids(receive(t, sub, len(want)))); diff != "" {
			t.Errorf("received (-want +got):\n%s", diff)
		}
	})
}

func TestRetention(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		now := time.Now().UTC()
		day := 24 * time.Hour
		store := func(code string, age time.Duration) {
			t.Helper()
			e := event(code)
			e.CreatedAt = now.Add(-age)
			if err := db.InsertEvent(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		left := func() []string {
			t.Helper()
			evs, err := db.ListEvents(ctx, metadb.EventQuery{Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			var codes []string
			for _, e := range evs {
				codes = append(codes, e.Code)
			}
			return codes
		}
		// roundTrip returns once Run has passed its start-up prune: Run
		// prunes before it first waits for a wake-up.
		roundTrip := func(h *events.Hub) {
			t.Helper()
			sub := h.Subscribe()
			defer sub.Close()
			e := publish(t, h, "test.roundtrip")
			if got := receive(t, sub, 1)[0]; got.ID != e.ID {
				t.Fatalf("got %d, want %d", got.ID, e.ID)
			}
		}
		store("old.100d", 100*day)
		store("old.95d", 95*day)
		store("kept.89d", 89*day)
		store("kept.1h", time.Hour)

		// Retention 0 keeps everything.
		roundTrip(start(t, events.Options{Store: db}))
		if got := left(); len(got) != 5 {
			t.Fatalf("without retention, events were deleted: %v", got)
		}

		var clock atomic.Int64
		clock.Store(now.UnixNano())
		h := start(t, events.Options{Store: db, Retention: 90 * day, PruneEvery: 20 * time.Millisecond,
			Now: func() time.Time { return time.Unix(0, clock.Load()).UTC() }})
		roundTrip(h)
		if diff := cmp.Diff([]string{"kept.89d", "kept.1h", "test.roundtrip", "test.roundtrip"}, left()); diff != "" {
			t.Errorf("after the start-up prune (-want +got):\n%s", diff)
		}

		// Two days later the periodic prune takes the 89-day-old event.
		clock.Store(now.Add(2 * day).UnixNano())
		deadline := time.Now().Add(bound)
		for len(left()) != 3 {
			if time.Now().After(deadline) {
				t.Fatalf("periodic prune did not run within %v: %v", bound, left())
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func TestPublishValidates(t *testing.T) {
	db := metadbtest.Open(t, metadb.SQLite)
	h := events.New(events.Options{Store: db})
	cases := []struct {
		name string
		e    *coffer.Event
	}{
		{"nil", nil},
		{"no code", &coffer.Event{Title: "t", Audience: coffer.RoleViewer}},
		{"no title", &coffer.Event{Code: "c", Audience: coffer.RoleViewer}},
		{"no audience", &coffer.Event{Code: "c", Title: "t"}},
		{"unknown audience", &coffer.Event{Code: "c", Title: "t", Audience: "root"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := h.Publish(context.Background(), c.e)
			if !coffer.IsKind(err, coffer.KindInvalid) {
				t.Errorf("Publish = %v, want a %s error", err, coffer.KindInvalid)
			}
		})
	}
	if last, err := db.LastEventID(context.Background()); err != nil || last != 0 {
		t.Errorf("LastEventID = %d, %v: an invalid event was stored", last, err)
	}
	if n := h.Stats().Published; n != 0 {
		t.Errorf("Published = %d, want 0", n)
	}
}

// flakyStore is the real store whose reads fail while down is set, as
// during a database outage.
type flakyStore struct {
	*metadb.DB
	down atomic.Bool
}

var errDown = errors.New("database is down")

func (s *flakyStore) ListEvents(ctx context.Context, q metadb.EventQuery) ([]coffer.Event, error) {
	if s.down.Load() {
		return nil, errDown
	}
	return s.DB.ListEvents(ctx, q)
}

func (s *flakyStore) LastEventID(ctx context.Context) (int64, error) {
	if s.down.Load() {
		return 0, errDown
	}
	return s.DB.LastEventID(ctx)
}

// waitHealth waits until h's health is as wanted.
func waitHealth(t *testing.T, h *events.Hub, healthy bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for (h.Healthy(context.Background()) == nil) != healthy {
		if time.Now().After(deadline) {
			t.Fatalf("Healthy = %v after %v, want healthy=%v", h.Healthy(context.Background()), bound, healthy)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStoreOutage(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		store := &flakyStore{DB: db}
		store.down.Store(true)
		h := run(t, events.Options{Store: store, PollInterval: 20 * time.Millisecond})
		waitHealth(t, h, false)
		select {
		case <-h.Ready():
			t.Fatal("ready without having read the last event id")
		default:
		}

		store.down.Store(false)
		waitReady(t, h)
		waitHealth(t, h, true)
		sub := h.Subscribe()
		defer sub.Close()

		store.down.Store(true)
		e := publish(t, h, "test.during_outage") // writes still work
		waitHealth(t, h, false)
		store.down.Store(false)
		if got := receive(t, sub, 1)[0]; got.ID != e.ID {
			t.Errorf("after the outage got %d, want %d", got.ID, e.ID)
		}
		waitHealth(t, h, true)
	})
}
