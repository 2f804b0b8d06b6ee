package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/oklog/ulid/v2"
)

// requestInfo is what the middleware learns about one request as it passes
// through the layers, for the access log line and error envelopes.
type requestInfo struct {
	id       string
	clientIP string
	https    bool
	maxBody  int64

	mu   sync.Mutex
	user string
	err  error
}

func (i *requestInfo) setUser(u string) { i.mu.Lock(); i.user = u; i.mu.Unlock() }
func (i *requestInfo) setErr(err error) { i.mu.Lock(); i.err = err; i.mu.Unlock() }

type requestInfoKey struct{}

func requestInfoFrom(ctx context.Context) *requestInfo {
	if ctx == nil {
		return nil
	}
	i, _ := ctx.Value(requestInfoKey{}).(*requestInfo)
	return i
}

// RequestID returns the correlation id of the request ctx belongs to.
func RequestID(ctx context.Context) string {
	if i := requestInfoFrom(ctx); i != nil {
		return i.id
	}
	return ""
}

var saneRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// quietRoutes are polled by load balancers and scrapers: their access log
// lines go to debug level.
var quietRoutes = map[string]bool{"GET /healthz": true, "GET /readyz": true, "GET /metrics": true}

// observe is the outermost layer: it assigns the correlation id, recovers
// panics into a 500 envelope, and records the access log line and the
// request metrics once the request is done.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &requestInfo{id: r.Header.Get("X-Request-Id")}
		if !saneRequestID.MatchString(info.id) {
			info.id = ulid.Make().String()
		}
		info.clientIP, info.https = s.clientAddr(r)
		w.Header().Set("X-Request-Id", info.id)
		rec := &recorder{ResponseWriter: w}
		r2 := r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info))

		s.metrics.inFlight.Inc()
		defer func() {
			s.metrics.inFlight.Dec()
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				info.setErr(fmt.Errorf("panic: %v\n%s", p, debug.Stack()))
				if !rec.wroteHeader {
					writeError(rec, r2, errors.New("panic"))
				}
			}
			route := r2.Pattern
			if route == "" {
				route = "unmatched"
			}
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			elapsed := time.Since(start)
			s.metrics.duration.WithLabelValues(r.Method, route, strconv.Itoa(status/100)+"xx").Observe(elapsed.Seconds())
			s.logAccess(r, route, status, rec.bytes, elapsed, info)
		}()
		next.ServeHTTP(rec, r2)
	})
}

func (s *Server) logAccess(r *http.Request, route string, status int, bytes int64, elapsed time.Duration, info *requestInfo) {
	info.mu.Lock()
	user, err := info.user, info.err
	info.mu.Unlock()
	level := slog.LevelInfo
	switch {
	case status >= 500:
		level = slog.LevelError
	case quietRoutes[route] && status < 400:
		level = slog.LevelDebug
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("route", route),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.Int64("bytes", bytes),
		slog.String("request_id", info.id),
		slog.String("user", user),
		slog.String("remote_ip", info.clientIP),
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	s.log.LogAttrs(context.Background(), level, "http request", attrs...)
}

// clientAddr returns the client's address and whether it reached us over
// HTTPS. Forwarded headers count only from a trusted proxy: the right-most
// X-Forwarded-For entry not itself a trusted proxy is the client.
func (s *Server) clientAddr(r *http.Request) (ip string, https bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	https = r.TLS != nil
	addr, err := netip.ParseAddr(host)
	if err != nil || !s.trusted(addr) {
		return host, https
	}
	if proto := r.Header.Get("X-Forwarded-Proto"); proto != "" {
		https = strings.EqualFold(proto, "https")
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		host = hop.Unmap().String()
		if !s.trusted(hop) {
			break
		}
	}
	return host, https
}

func (s *Server) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// recorder remembers the status and size of a response. It unwraps for
// http.ResponseController (flushes and write deadlines on SSE streams).
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// routeOrError sends requests the mux has no route for to an error envelope:
// 405 with an Allow header when the path exists under another method, 404
// otherwise — except page loads outside /api, which get the UI's page.
func (s *Server) routeOrError(w http.ResponseWriter, r *http.Request) {
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	probe := &headerProbe{header: http.Header{}}
	h.ServeHTTP(probe, r)
	if probe.status == http.StatusMethodNotAllowed {
		allow := probe.header.Get("Allow")
		w.Header().Set("Allow", allow)
		writeError(w, r, &APIError{status: http.StatusMethodNotAllowed, Code: "method_not_allowed",
			Detail:   fmt.Sprintf("%s is not allowed on %s: use %s", r.Method, r.URL.Path, allow),
			Metadata: map[string]any{"allowed": strings.Split(allow, ", ")}})
		return
	}
	if uiOwns(r) {
		s.uiNotFound(w, r)
		return
	}
	writeError(w, r, coffer.Errorf(coffer.KindNotFound, "route_not_found",
		"there is no route %s %s: see /api/v1/openapi.json for the API", r.Method, r.URL.Path))
}

// headerProbe captures what the mux's built-in 404/405 handler would send.
type headerProbe struct {
	header http.Header
	status int
}

func (p *headerProbe) Header() http.Header         { return p.header }
func (p *headerProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *headerProbe) WriteHeader(code int)        { p.status = code }
