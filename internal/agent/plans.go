package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/cofferhq/coffer/internal/apiclient"
	"github.com/cofferhq/coffer/internal/protocol"
)

// The agent shows this client's plans (coffer agent plans) as the server
// has them; the server fires them. The last list the server sent is kept
// in the state directory so that it can still be shown while the server
// is unreachable.
const (
	// plansFile is the cache of the last list, in the state directory.
	plansFile = "plans.json"
	// plansCacheVersion is the version of plansFile's format.
	plansCacheVersion = 1
	// plansFetchTimeout bounds asking the server, retries included.
	plansFetchTimeout = 30 * time.Second
	// plansRefresh is how often the daemon refreshes the cache.
	plansRefresh = 15 * time.Minute
)

// PlansView is this client's enabled plans as the agent knows them.
type PlansView struct {
	Plans []protocol.AgentPlan
	// FetchedAt is when the server sent them.
	FetchedAt time.Time
	// Cached is set when the server could not be asked (Err says why):
	// Plans are the last it sent, possibly out of date.
	Cached bool
	Err    error
}

// plansCache is the content of plansFile.
type plansCache struct {
	Version   int                  `json:"version"`
	Server    string               `json:"server"`
	ClientID  string               `json:"client_id"`
	FetchedAt time.Time            `json:"fetched_at"`
	Plans     []protocol.AgentPlan `json:"plans"`
}

// Plans asks the server for this client's enabled plans and keeps the
// answer in the state directory. When the server cannot be reached (or
// fails), it returns the last answer kept, marked Cached; when it refuses
// the request (the credential, say), that error.
func (a *Agent) Plans(ctx context.Context) (*PlansView, error) {
	fetched, err := a.fetchPlans(ctx)
	if err == nil {
		return fetched, nil
	}
	if ctx.Err() != nil || !unreachable(err) {
		return nil, err
	}
	c, cerr := a.loadPlans()
	if cerr != nil {
		return nil, fmt.Errorf("%w; no earlier list of the plans is kept: %v", err, cerr)
	}
	return &PlansView{Plans: c.Plans, FetchedAt: c.FetchedAt, Cached: true, Err: err}, nil
}

// fetchPlans asks the server and, on success, replaces the cache (a
// failure to write it is logged).
func (a *Agent) fetchPlans(ctx context.Context) (*PlansView, error) {
	fctx, cancel := context.WithTimeout(ctx, plansFetchTimeout)
	defer cancel()
	plans, err := a.api.Plans(fctx)
	if err != nil {
		return nil, fmt.Errorf("ask the server for this client's plans: %w", err)
	}
	v := &PlansView{Plans: plans, FetchedAt: time.Now().UTC()}
	if err := a.savePlans(v); err != nil {
		a.log.Warn("could not keep the list of plans in the state directory", "err", err)
	}
	return v, nil
}

// unreachable reports whether err means the server could not answer (a
// network failure, a timeout, a 5xx or 429), as opposed to refusing.
func unreachable(err error) bool {
	var ae *apiclient.Error
	if !errors.As(err, &ae) {
		return true
	}
	return ae.Status >= 500 || ae.Status == http.StatusTooManyRequests
}

func (a *Agent) savePlans(v *PlansView) error {
	b, err := json.MarshalIndent(plansCache{Version: plansCacheVersion, Server: a.state.Server, ClientID: a.state.ClientID,
		FetchedAt: v.FetchedAt, Plans: v.Plans}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(a.opts.StateDir, plansFile), append(b, '\n'))
}

// loadPlans reads the cache; one of another server or client (the agent
// was enrolled again) does not count.
func (a *Agent) loadPlans() (*plansCache, error) {
	p := filepath.Join(a.opts.StateDir, plansFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var c plansCache
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s is damaged: %w", p, err)
	}
	if c.Version != plansCacheVersion || c.Server != a.state.Server || c.ClientID != a.state.ClientID {
		return nil, fmt.Errorf("%s is of another enrollment or version", p)
	}
	if c.Plans == nil {
		c.Plans = []protocol.AgentPlan{}
	}
	return &c, nil
}

// refreshPlans keeps the cache of plans fresh while the daemon runs: at
// start and every plansRefresh. Failures are only logged (at debug: the
// heartbeats already say when the server is unreachable).
func (d *daemon) refreshPlans(ctx context.Context) {
	for {
		if _, err := d.a.fetchPlans(ctx); err != nil && ctx.Err() == nil {
			d.a.log.Debug("could not refresh the list of plans", "err", err)
		}
		if sleepCtx(ctx, plansRefresh) != nil {
			return
		}
	}
}
