package httpapi

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/cofferhq/coffer/internal/server/health"
	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const probeTimeout = 5 * time.Second

type liveness struct {
	Body struct {
		Status string `json:"status" example:"ok"`
	}
}

// ReadinessCheck is one check of /readyz.
type ReadinessCheck struct {
	Name    string `json:"name" example:"database"`
	Healthy bool   `json:"healthy"`
	Message string `json:"message" doc:"Why the check fails; empty when healthy."`
}

// Readiness is the body of /readyz. When not ready (503) it also carries
// the error envelope's fields, so it is an error envelope as well.
type Readiness struct {
	Status        string           `json:"status" enum:"ready,not_ready"`
	Checks        []ReadinessCheck `json:"checks"`
	FailedCount   int              `json:"failed_count"`
	Code          string           `json:"code,omitempty" doc:"not_ready when a check fails."`
	Detail        string           `json:"detail,omitempty"`
	Metadata      map[string]any   `json:"metadata,omitempty"`
	CorrelationID string           `json:"correlation_id,omitempty"`
}

// Component is one part of the server in /api/v1/health.
type Component struct {
	Name      string  `json:"name" example:"database"`
	Status    string  `json:"status" enum:"ok,degraded,unavailable"`
	Message   string  `json:"message"`
	LatencyMS float64 `json:"latency_ms" doc:"How long the probe took."`
}

// HealthReport is the body of /api/v1/health.
type HealthReport struct {
	Status     string      `json:"status" enum:"ok,degraded,unavailable"`
	Version    string      `json:"version"`
	Commit     string      `json:"commit"`
	Components []Component `json:"components"`
}

// APIVersion is one entry of GET /api.
type APIVersion struct {
	ID     string `json:"id" example:"v1"`
	Status string `json:"status" enum:"current,supported,deprecated"`
	Links  []Link `json:"links"`
}

// Link is a hypermedia link.
type Link struct {
	Rel  string `json:"rel"`
	Href string `json:"href"`
}

func (s *Server) registerSystem() {
	handle(s, Public, huma.Operation{
		OperationID: "liveness", Method: http.MethodGet, Path: "/healthz", Tags: []string{"system"},
		Summary: "Liveness probe", Description: "200 while the process is serving requests. It checks nothing else.",
	}, func(ctx context.Context, _ *struct{}) (*liveness, error) {
		out := &liveness{}
		out.Body.Status = "ok"
		return out, nil
	})

	type readyOut struct {
		Status int
		Body   Readiness
	}
	handle(s, Public, huma.Operation{
		OperationID: "readiness", Method: http.MethodGet, Path: "/readyz", Tags: []string{"system"},
		Summary:     "Readiness probe",
		Description: "200 when the server can do its work (database reachable, schema current, data directory writable); 503 naming the failing checks otherwise.",
		Responses: map[string]*huma.Response{"503": {Description: "Not ready: the failing checks are named.",
			Content: map[string]*huma.MediaType{"application/json": {Schema: &huma.Schema{Ref: "#/components/schemas/Readiness"}}}}},
	}, func(ctx context.Context, _ *struct{}) (*readyOut, error) {
		results := health.Run(ctx, s.opts.Readiness, probeTimeout)
		out := &readyOut{Status: http.StatusOK, Body: Readiness{Status: "ready", Checks: []ReadinessCheck{}}}
		var failed []string
		for _, r := range results {
			out.Body.Checks = append(out.Body.Checks, ReadinessCheck{Name: r.Name, Healthy: r.Healthy(), Message: r.Message})
			if !r.Healthy() {
				failed = append(failed, r.Name)
				s.log.Warn("readiness check failed", "check", r.Name, "err", r.Message, "request_id", RequestID(ctx))
			}
		}
		if len(failed) > 0 {
			out.Status = http.StatusServiceUnavailable
			out.Body.Status, out.Body.FailedCount = "not_ready", len(failed)
			out.Body.Code = "not_ready"
			out.Body.Detail = "the server is not ready: failing checks: " + strings.Join(failed, ", ")
			out.Body.Metadata = map[string]any{"failed_checks": failed}
			out.Body.CorrelationID = RequestID(ctx)
		}
		return out, nil
	})

	type healthOut struct{ Body HealthReport }
	handle(s, Read, huma.Operation{
		OperationID: "health", Method: http.MethodGet, Path: "/api/v1/health", Tags: []string{"system"},
		Summary: "Component health", Description: "The state of each part of the server: ok, degraded or unavailable.",
	}, func(ctx context.Context, _ *struct{}) (*healthOut, error) {
		results := health.Run(ctx, s.opts.Components, probeTimeout)
		out := &healthOut{Body: HealthReport{Status: string(health.Overall(results)), Version: s.opts.Version,
			Commit: s.opts.Commit, Components: []Component{}}}
		for _, r := range results {
			out.Body.Components = append(out.Body.Components, Component{Name: r.Name, Status: string(r.Status),
				Message: r.Message, LatencyMS: float64(r.Duration.Microseconds()) / 1000})
		}
		return out, nil
	})

	handle(s, Read, huma.Operation{
		OperationID: "metrics", Method: http.MethodGet, Path: "/metrics", Tags: []string{"system"},
		Summary:     "Prometheus metrics",
		Description: "Metrics in the Prometheus text format. Scrape with an API token (read scope) as the bearer credential.",
		Responses: map[string]*huma.Response{"200": {Description: "Prometheus text exposition format.",
			Content: map[string]*huma.MediaType{"text/plain": {Schema: &huma.Schema{Type: "string"}}}}},
	}, func(ctx context.Context, _ *struct{}) (*huma.StreamResponse, error) {
		return &huma.StreamResponse{Body: func(hctx huma.Context) {
			r, w := humago.Unwrap(hctx)
			promhttp.HandlerFor(s.opts.Gatherer, promhttp.HandlerOpts{}).ServeHTTP(w, r)
		}}, nil
	})

	type versionsOut struct {
		Body struct {
			Versions []APIVersion `json:"versions"`
		}
	}
	handle(s, Public, huma.Operation{
		OperationID: "api-versions", Method: http.MethodGet, Path: "/api", Tags: []string{"system"},
		Summary: "API versions", Description: "The API versions this server speaks.",
	}, func(ctx context.Context, _ *struct{}) (*versionsOut, error) {
		out := &versionsOut{}
		out.Body.Versions = []APIVersion{{ID: "v1", Status: "current", Links: []Link{
			{Rel: "self", Href: "/api/v1"}, {Rel: "describedby", Href: "/api/v1/openapi.json"}}}}
		return out, nil
	})

	handle(s, Public, huma.Operation{
		OperationID: "openapi", Method: http.MethodGet, Path: "/api/v1/openapi.json", Tags: []string{"system"},
		Summary: "OpenAPI document", Description: "This API's OpenAPI 3.1 description, generated from the code.",
		Responses: map[string]*huma.Response{"200": {Description: "The OpenAPI 3.1 document.",
			Content: map[string]*huma.MediaType{"application/json": {Schema: &huma.Schema{Type: "object"}}}}},
	}, func(ctx context.Context, _ *struct{}) (*huma.StreamResponse, error) {
		doc, err := s.openapi()
		if err != nil {
			return nil, err
		}
		return &huma.StreamResponse{Body: func(hctx huma.Context) {
			hctx.SetHeader("Content-Type", "application/json")
			hctx.BodyWriter().Write(doc)
		}}, nil
	})
}
