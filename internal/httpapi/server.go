// Package httpapi is Coffer's HTTP layer: the REST API under /api/v1, the
// probes and metrics, and (later) the web UI mount. It is the only package
// that knows HTTP status codes and wire types: handlers convert between the
// JSON shapes of the API contract and the domain types of the services, and
// errors from any layer become Coffer's error envelope in one place
// (errors.go).
//
// Routes are registered through huma, which validates requests against the
// same schemas it publishes in the OpenAPI document, so the document
// describes exactly what the server accepts.
package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/cofferhq/coffer/internal/server/auth"
	"github.com/cofferhq/coffer/internal/server/backups"
	"github.com/cofferhq/coffer/internal/server/events"
	"github.com/cofferhq/coffer/internal/server/health"
	"github.com/cofferhq/coffer/internal/server/plans"
	"github.com/cofferhq/coffer/internal/server/restores"
	"github.com/cofferhq/coffer/internal/server/storage"
	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/prometheus/client_golang/prometheus"
)

// EventLog is the stored event history.
type EventLog interface {
	ListEvents(ctx context.Context, q metadb.EventQuery) ([]coffer.Event, error)
	LastEventID(ctx context.Context) (int64, error)
}

// eventSubscription is a live feed from the event hub.
type eventSubscription interface {
	C() <-chan coffer.Event
	Dropped() bool
	Close()
}

// Options configures a Server. Zero values take the documented defaults.
type Options struct {
	Auth     *auth.Service
	Events   *events.Hub
	EventLog EventLog
	// Agents, Backups and Restores serve clients, their agents and their
	// jobs; nil leaves their routes out (tests of other areas).
	Agents   *agents.Service
	Backups  *backups.Service
	Restores *restores.Service
	Plans    *plans.Service
	// PlanFirings shows the scheduler's state of plans on them
	// (*metadb.DB); nil leaves next_fire_at and last_fired_at null.
	PlanFirings PlanFirings
	// Storage serves endpoints and repositories (nil leaves them out).
	Storage *storage.Service

	// Readiness gates /readyz; Components are reported by /api/v1/health.
	Readiness  []health.Check
	Components []health.Check

	Logger *slog.Logger
	// Registry receives the HTTP metrics; Gatherer is served at /metrics.
	Registry prometheus.Registerer
	Gatherer prometheus.Gatherer

	Version string
	Commit  string

	// MaxBodyBytes limits request bodies (default 1 MiB).
	MaxBodyBytes int64
	// TrustedProxies are the reverse proxies whose X-Forwarded-For and
	// X-Forwarded-Proto headers are believed.
	TrustedProxies []netip.Prefix
	// Heartbeat is the interval of SSE heartbeat comments (default 15 s);
	// WriteTimeout is the deadline given to each SSE write (default 30 s).
	Heartbeat    time.Duration
	WriteTimeout time.Duration
	// Now returns the current time (default time.Now).
	Now func() time.Time
}

// Server is the HTTP handler of a coffer server.
type Server struct {
	opts     Options
	log      *slog.Logger
	mux      *http.ServeMux
	api      huma.API
	metrics  *httpMetrics
	handler  http.Handler
	patterns []string
	openapi  func() ([]byte, error)
	ui       *uiServer
}

// New builds the server and registers every route.
func New(opts Options) (*Server, error) {
	installErrorHook()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 15 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Gatherer == nil {
		g, ok := opts.Registry.(prometheus.Gatherer)
		if !ok {
			return nil, errors.New("httpapi: Options.Gatherer is required when Registry is not a *prometheus.Registry")
		}
		opts.Gatherer = g
	}
	m, err := newHTTPMetrics(opts.Registry)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, log: opts.Logger, mux: http.NewServeMux(), metrics: m}
	s.api = humago.New(recordingMux{s}, apiConfig(opts.Version))
	s.openapi = sync.OnceValues(func() ([]byte, error) { return s.api.OpenAPI().MarshalJSON() })

	s.registerSystem()
	s.registerAuth()
	s.registerUsers()
	s.registerTokens()
	s.registerEvents()
	s.registerAgents()
	s.registerBackups()
	s.registerRestores()
	s.registerPlans()
	s.registerAgentPlans()
	s.registerStorage()
	s.registerBrowse()
	if err := s.registerUI(); err != nil {
		return nil, err
	}

	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, &APIError{status: http.StatusForbidden, Code: "cross_origin_request",
			Detail: "cross-origin requests that change state are refused: use the Coffer UI or an API client with a bearer token"})
	}))
	s.handler = s.observe(cop.Handler(http.HandlerFunc(s.routeOrError)))
	return s, nil
}

// Handler returns the root handler.
func (s *Server) Handler() http.Handler { return s.handler }

// OpenAPI returns the API description.
func (s *Server) OpenAPI() *huma.OpenAPI { return s.api.OpenAPI() }

// Patterns returns every "METHOD /path" pattern registered on the mux.
func (s *Server) Patterns() []string { return append([]string(nil), s.patterns...) }

// recordingMux registers on the server's mux and remembers the patterns, so
// a test can hold the OpenAPI document and the real routes against each other.
type recordingMux struct{ s *Server }

func (m recordingMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.s.patterns = append(m.s.patterns, pattern)
	m.s.mux.HandleFunc(pattern, h)
}

func (m recordingMux) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.s.mux.ServeHTTP(w, r) }

func apiConfig(version string) huma.Config {
	cfg := huma.DefaultConfig("Coffer API", version)
	cfg.OpenAPI.Info.Description = "The REST API of Coffer, a self-hosted backup server. " +
		"Every error is the envelope {code, detail, metadata, correlation_id}; lists are {items, pagination} " +
		"or {items, total}; single resources are {\"<name>\": {...}}; commands return {message, success}."
	cfg.CreateHooks = nil // no $schema fields or Link headers in responses
	cfg.OpenAPIPath, cfg.DocsPath, cfg.SchemasPath = "", "", ""
	cfg.RejectUnknownQueryParameters = true
	cfg.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		"bearer": {Type: "http", Scheme: "bearer",
			Description: "A login token from POST /api/v1/auth/login (cfr_s_…) or an API token (cfr_t_…)."},
		"session_cookie": {Type: "apiKey", In: "cookie", Name: SessionCookie,
			Description: "The browser session cookie set by login; state-changing requests must be same-origin."},
		"agent_credential": {Type: "http", Scheme: "bearer",
			Description: "An enrolled client's credential (cfr_a_…) from POST /api/v1/agent/enroll; it reaches only /api/v1/agent/... routes."},
	}
	return cfg
}

type httpMetrics struct {
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
}

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	m := &httpMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "coffer_http_request_duration_seconds",
			Help:    "Time to serve HTTP requests, by method, route pattern and status class.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"method", "route", "status_class"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coffer_http_requests_in_flight",
			Help: "HTTP requests being served (SSE streams included).",
		}),
	}
	for _, c := range []prometheus.Collector{m.duration, m.inFlight} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
