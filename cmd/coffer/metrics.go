package main

import (
	"runtime"

	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/server/events"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// newRegistry is the server's own Prometheus registry (not the global one):
// runtime and process metrics, build information, the database pool, and
// the event hub. The HTTP layer adds its request metrics.
func newRegistry(version, commit string, db *metadb.DB, hub *events.Hub) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewDBStatsCollector(db.SQL(), string(db.Dialect())),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "coffer_build_info",
			Help:        "Always 1; the labels describe the running binary.",
			ConstLabels: prometheus.Labels{"version": version, "commit": commit, "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "coffer_events_published_total",
			Help: "Events stored by this server process.",
		}, func() float64 { return float64(hub.Stats().Published) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "coffer_events_delivered_total",
			Help: "Events handed to live subscribers (SSE streams) by this process.",
		}, func() float64 { return float64(hub.Stats().Delivered) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "coffer_events_dropped_subscribers_total",
			Help: "Live subscribers dropped for falling behind (they catch up from the stored log).",
		}, func() float64 { return float64(hub.Stats().DroppedSubscribers) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coffer_events_subscribers",
			Help: "Live event subscribers connected to this process.",
		}, func() float64 { return float64(hub.Stats().Subscribers) }),
	)
	return reg
}
