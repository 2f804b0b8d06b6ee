// Package agent is Coffer's agent: it enrolls a machine with a server,
// keeps its state directory (the credential, the change caches), and runs
// backups and restores — started by the server over the command stream
// (Agent.Run, the daemon) or by the CLI on the machine (Agent.Backup,
// Agent.Restore).
//
// The agent talks to the server only through package apiclient, with the
// bodies of package protocol. It never holds the repository's data key or
// storage credentials: it computes blob ids with the repository's id key,
// compresses blobs and uploads them; the server checks, encrypts and packs
// them. A restore reads blobs back through the server and checks every
// one against its id before writing it.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/apiclient"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/chunker"
	"github.com/cofferhq/coffer/internal/protocol"
)

// Options configure an Agent.
type Options struct {
	// StateDir is the state directory ("": DefaultStateDir()).
	StateDir string
	// State is the enrollment (nil: read from StateDir).
	State *State
	// Logger receives the agent's log (nil: slog.Default()).
	Logger *slog.Logger
	// Version is this agent's version, reported to the server.
	Version string
	// HTTPClient sends the agent's requests (nil: a plain client).
	HTTPClient *http.Client
	// Workers is how many goroutines read and chunk files, and how many
	// compress blobs, during a backup (default GOMAXPROCS), and how many
	// files a restore writes at once (default 2×GOMAXPROCS).
	Workers int
	// RefuseCommands makes the agent refuse the pre and post commands of
	// plans (coffer agent run --allow-commands=false): a backup whose plan
	// has any fails, saying so, and runs none of them.
	RefuseCommands bool
}

// Agent runs backups and restores for one enrolled client. Its methods
// are safe for concurrent use.
type Agent struct {
	opts  Options
	state State
	log   *slog.Logger
	api   *apiclient.Client
	jobs  jobs
	// ship sends the daemon's log to the server; a.log feeds it.
	ship *logShipper

	// uploads are the options of each backup's uploader (tests shrink them).
	uploads uploaderOptions
	// progressEvery is how often a running job reports to the server.
	progressEvery time.Duration
	// commands runs plans' pre and post commands (tests shorten its waits).
	commands commandRunner
}

// New returns an Agent for the enrollment in opts.
func New(opts Options) (*Agent, error) {
	if opts.StateDir == "" {
		opts.StateDir = DefaultStateDir()
	}
	if opts.State == nil {
		st, err := LoadState(opts.StateDir)
		if err != nil {
			return nil, err
		}
		opts.State = st
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	api, err := apiclient.New(apiclient.Options{Server: opts.State.Server, Credential: opts.State.Credential,
		HTTPClient: opts.HTTPClient, UserAgent: userAgent(opts.Version)})
	if err != nil {
		return nil, err
	}
	inner := opts.Logger.Handler()
	ship := newLogShipper(func(ctx context.Context, b protocol.LogBatch) error {
		_, err := api.ShipLogs(ctx, b)
		return err
	}, slog.New(inner).With("client_id", opts.State.ClientID))
	log := slog.New(&shipHandler{inner: inner, ship: ship}).With("client_id", opts.State.ClientID)
	return &Agent{opts: opts, state: *opts.State, log: log, api: api, ship: ship,
		jobs: jobs{running: map[string]context.CancelCauseFunc{}}, progressEvery: time.Second}, nil
}

// Backups returns up to limit of this client's backups, newest first
// (limit ≤ 0: 50).
func (a *Agent) Backups(ctx context.Context, limit int) ([]protocol.BackupSummary, error) {
	if limit <= 0 {
		limit = 50
	}
	var out []protocol.BackupSummary
	cursor := ""
	for len(out) < limit {
		items, next, err := a.api.Backups(ctx, cursor, min(limit-len(out), 500))
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if next == "" || len(items) == 0 {
			break
		}
		cursor = next
	}
	return firstN(out, limit), nil
}

// List returns the entries of the directory at path (slash-separated,
// relative to the backup's root; "" or "/" for the root) in one of this
// client's backups.
func (a *Agent) List(ctx context.Context, backupID, path string) ([]protocol.TreeEntry, error) {
	return a.api.Tree(ctx, backupID, path)
}

// codecFor returns the blob codec of a repository as the server describes
// it: ids only, no data key.
func codecFor(p protocol.RepositoryParams) (*blob.Codec, error) {
	var keys blob.Keys
	if len(p.IDKey) != len(keys.IDKey) {
		return nil, fmt.Errorf("the server sent an id key of %d bytes, want %d: is it a compatible version?", len(p.IDKey), len(keys.IDKey))
	}
	copy(keys.IDKey[:], p.IDKey)
	return blob.NewCodec(keys)
}

// chunkerParams returns the repository's chunker parameters.
func chunkerParams(p protocol.RepositoryParams) (chunker.Params, error) {
	c := chunker.Params{Min: p.ChunkerMin, Avg: p.ChunkerAvg, Max: p.ChunkerMax}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("the server sent chunker parameters %s: %w", c, err)
	}
	return c, nil
}

// jobs are the backups and restores running in this agent.
type jobs struct {
	mu      sync.Mutex
	running map[string]context.CancelCauseFunc
}

// errJobRunning is returned for a job already running here.
var errJobRunning = errors.New("already running on this agent")

// add registers a running job; the returned func unregisters it.
func (j *jobs) add(id string, cancel context.CancelCauseFunc) (func(), error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.running[id]; ok {
		return nil, fmt.Errorf("job %s is %w", id, errJobRunning)
	}
	j.running[id] = cancel
	return func() {
		j.mu.Lock()
		delete(j.running, id)
		j.mu.Unlock()
	}, nil
}

// cancel stops job id with cause; false if it is not running.
func (j *jobs) cancel(id string, cause error) bool {
	j.mu.Lock()
	cancel, ok := j.running[id]
	j.mu.Unlock()
	if ok {
		cancel(cause)
	}
	return ok
}

// ids lists the running jobs.
func (j *jobs) ids() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]string, 0, len(j.running))
	for id := range j.running {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Causes of a job's cancellation, as recorded on the server.
var (
	errCanceledOnServer = errors.New("canceled on the server")
	errShutdown         = errors.New("canceled: the agent is shutting down")
)

// stopped reports whether a job ended because it was canceled (not
// failed), and why, for the server's record.
func stopped(ctx context.Context) (bool, string) {
	if ctx.Err() == nil {
		return false, ""
	}
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, errCanceledOnServer), errors.Is(cause, errShutdown):
		return true, cause.Error()
	case errors.Is(cause, context.DeadlineExceeded):
		return false, "the job ran out of time"
	case errors.Is(cause, context.Canceled):
		return true, "canceled: interrupted on the machine"
	}
	return true, "canceled: " + cause.Error()
}

// finalCall returns a context for the call that records a job's end: it
// must reach the server even when the job's context was canceled.
func finalCall(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
}

// recordFailure records on the server (through record) that job id, a
// backup or a restore as kind says, ended with err: canceled when ctx was
// canceled, else failed. It returns the job's state and the error for its
// caller, which names the job.
func recordFailure(ctx context.Context, log *slog.Logger, kind, id string, err error, errs []coffer.PathError,
	record func(context.Context, string, protocol.FailRequest) error) (coffer.JobState, error) {
	canceled, why := stopped(ctx)
	fail := protocol.FailRequest{State: coffer.JobFailed, Error: truncate(err.Error(), 8192), Errors: firstN(errs, maxPathErrors)}
	if canceled {
		fail.State, fail.Error = coffer.JobCanceled, why
		err = fmt.Errorf("%s %s %s: %w", kind, id, why, context.Canceled)
		log.Warn(kind+" canceled", "reason", why)
	} else {
		log.Error(kind+" failed", "err", err)
		err = fmt.Errorf("%s %s failed: %w", kind, id, err)
	}
	fctx, fcancel := finalCall(ctx)
	defer fcancel()
	if ferr := record(fctx, id, fail); ferr != nil {
		log.Warn("could not record the "+kind+"'s end on the server", "err", ferr)
	}
	return fail.State, err
}

// maxPathErrors is the most errors a commit or finish carries (protocol
// maxItems).
const maxPathErrors = 100000
