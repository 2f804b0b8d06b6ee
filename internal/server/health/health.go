// Package health runs the server's readiness checks and component health
// probes. The HTTP layer renders the results; the composition root decides
// which checks exist (database, data directory, event hub, and later the
// storage backends and the scheduler).
package health

import (
	"context"
	"sync"
	"time"
)

// Status is a component's state.
type Status string

// The component states.
const (
	OK          Status = "ok"          // working normally
	Degraded    Status = "degraded"    // working, with a problem that needs attention
	Unavailable Status = "unavailable" // not working
)

// Check is one named probe. It returns nil when healthy, an error
// otherwise; a DegradedError means "working, but not well".
type Check struct {
	Name string
	// Ready marks checks that gate readiness (/readyz); the others only
	// show in the component health report.
	Ready bool
	Probe func(ctx context.Context) error
}

// DegradedError reports a component that works with a problem.
type DegradedError struct{ Reason string }

func (e *DegradedError) Error() string { return e.Reason }

// Result is the outcome of one check.
type Result struct {
	Name     string
	Status   Status
	Message  string
	Duration time.Duration
}

// Healthy reports whether the check passed (degraded counts as passing).
func (r Result) Healthy() bool { return r.Status != Unavailable }

// Run runs the checks concurrently, each bounded by timeout, and returns
// their results in the order given.
func Run(ctx context.Context, checks []Check, timeout time.Duration) []Result {
	results := make([]Result, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			start := time.Now()
			err := runProbe(cctx, c.Probe)
			r := Result{Name: c.Name, Status: OK, Duration: time.Since(start)}
			if err != nil {
				r.Status, r.Message = Unavailable, err.Error()
				if de, ok := err.(*DegradedError); ok {
					r.Status, r.Message = Degraded, de.Reason
				}
			}
			results[i] = r
		})
	}
	wg.Wait()
	return results
}

// runProbe returns the probe's error, or the context's if the probe does
// not return in time (the probe goroutine is left to finish on its own:
// probes must honour ctx, and a stuck one must not stall the report).
func runProbe(ctx context.Context, probe func(context.Context) error) error {
	done := make(chan error, 1)
	go func() { done <- probe(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Overall folds component states: unavailable if any is, else degraded if
// any is, else ok.
func Overall(results []Result) Status {
	s := OK
	for _, r := range results {
		switch r.Status {
		case Unavailable:
			return Unavailable
		case Degraded:
			s = Degraded
		}
	}
	return s
}
