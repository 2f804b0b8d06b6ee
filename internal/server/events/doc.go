// Package events is the live event hub: it stores the events services
// publish and fans them out to live subscribers (the SSE streams of the HTTP
// layer), in id order, with no duplicates and no gaps, across every server
// replica that shares the metadata database.
//
// The database is the only source of the fan-out. Publish stores an event
// and wakes the hub; the hub's single tailing goroutine (Run) then reads
// every event after the last one it delivered and hands each to every
// subscriber. Events published on other replicas take the same path: the
// tailer also wakes on a cross-replica notification (PostgreSQL
// LISTEN/NOTIFY, see metadb.DB.ListenEvents) and on a periodic poll, which
// alone suffices when notifications are unavailable. Because the store makes
// ids visible in increasing order, "everything after the last id" never
// skips an event.
//
// A subscriber that cannot keep up is dropped rather than waited for: its
// channel is closed and Subscription.Dropped reports it. Nothing is lost
// overall, because every event is in the store. A stream consumer follows
// this protocol:
//
//  1. Subscribe.
//  2. Replay from the store every event after the client's Last-Event-ID.
//  3. Forward events from the subscription, skipping ids already replayed.
//  4. When the channel closes, end the stream; the client reconnects with
//     its Last-Event-ID and starts again at 1.
//
// A subscription receives, in order and without gaps, every event the hub
// delivers from the moment Subscribe returns, so steps 2 and 3 together miss
// nothing. The hub also retires old events (Options.Retention).
package events
