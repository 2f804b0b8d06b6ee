// Package restores runs the server side of restores: their records and
// lifecycle (a person asks for one, the target client's agent runs it and
// reports progress and the outcome), and serving a restoring agent the
// blobs it needs.
//
// An agent reads blobs only while it runs a restore that targets its own
// client, and the server never trusts where the agent says a blob is: it
// looks every requested id up in its own index. Blobs leave the server as
// stored before encryption (compressed); the agent decompresses and
// re-hashes each one against its id.
package restores

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/repos"
	"github.com/cofferhq/coffer/internal/server/throttle"
)

// Store is the part of the metadata store the service uses. Errors:
// missing rows are coffer.KindNotFound ("backup_not_found",
// "restore_not_found"); state clashes coffer.KindConflict
// ("restore_not_queued", "restore_not_running", "restore_finished").
type Store interface {
	GetBackup(ctx context.Context, id string) (*coffer.Backup, error)

	CreateRestore(ctx context.Context, r *coffer.Restore) error
	GetRestore(ctx context.Context, id string) (*coffer.Restore, error)
	StartRestore(ctx context.Context, id, targetClientID string) (*coffer.Restore, error)
	UpdateRestoreProgress(ctx context.Context, id string, stats coffer.RestoreStats) (*coffer.Restore, error)
	FinishRestore(ctx context.Context, id string, f metadb.RestoreFinish) (*coffer.Restore, error)
	RequestRestoreCancel(ctx context.Context, id string) (*coffer.Restore, error)
	ListRestores(ctx context.Context, f metadb.RestoreFilter) ([]coffer.Restore, error)
	FailStaleRestores(ctx context.Context, updatedBefore time.Time, reason string) ([]coffer.Restore, error)
	FailQueuedRestores(ctx context.Context, createdBefore time.Time, reason string) ([]coffer.Restore, error)

	// Deleting records and progress events (delete.go, progress.go).
	DeleteRestore(ctx context.Context, id string) (*coffer.Restore, error)
	ClaimRestoreProgressEvent(ctx context.Context, id string, every time.Duration) (bool, error)
}

// Publisher records events.
type Publisher = coffer.Publisher

// Commands queues orders for an agent, delivered over its command stream
// (the agents service).
type Commands interface {
	Enqueue(ctx context.Context, clientID string, cmd protocol.Command) (string, error)
}

// Clients finds enrolled clients (the agents service). A missing client is
// coffer.KindNotFound "client_not_found".
type Clients interface {
	GetClient(ctx context.Context, id string) (*coffer.Client, error)
}

// Limits of the agent's blob requests. A restoring agent plans its reads
// with them; StartRestore also reports them in the repository parameters
// (MaxCheckIDs is MaxLocateIDs, MaxUploadBytes the read limit in bytes).
const (
	// MaxLocateIDs bounds the ids of one Locate.
	MaxLocateIDs = 10000
	// MaxReadBlobs bounds the blobs of one Read.
	MaxReadBlobs = 4096
	// DefaultMaxReadBytes is the default bound on the stored bytes
	// (BlobLocation.Length) of the blobs of one Read.
	DefaultMaxReadBytes = 64 << 20
	// MaxPaths bounds the paths of one restore.
	MaxPaths = 1000
	// MaxPathLength bounds one path and the destination.
	MaxPathLength = 4096
)

// Options configures a Service. Zero values take the documented defaults.
type Options struct {
	Store Store
	// Repos are the repositories the backups live in.
	Repos    *repos.Set
	Events   Publisher
	Commands Commands
	Clients  Clients
	Logger   *slog.Logger
	Now      func() time.Time
	// StaleAfter is how long a running restore may go without a progress
	// report before Maintain fails it (default 10 min).
	StaleAfter time.Duration
	// QueuedTTL is how long a restore may wait queued for its target's
	// agent, which may be offline, before Maintain fails it (default 7
	// days, the agents' default command retention: after that its command
	// is gone and it could never start).
	QueuedTTL time.Duration
	// MaxReadBytes bounds the stored bytes of the blobs of one Read
	// (default DefaultMaxReadBytes).
	MaxReadBytes int64
	// ProgressEvery is the least time between two progress events of one
	// restore (default 5 seconds).
	ProgressEvery time.Duration
}

// Service implements restores.
type Service struct {
	store      Store
	repos      *repos.Set
	events     Publisher
	commands   Commands
	clients    Clients
	log        *slog.Logger
	now        func() time.Time
	staleAfter time.Duration
	queuedTTL  time.Duration
	maxRead    int64
	progress   *throttle.Throttle
}

// New returns a Service.
func New(opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.StaleAfter <= 0 {
		opts.StaleAfter = 10 * time.Minute
	}
	if opts.MaxReadBytes <= 0 {
		opts.MaxReadBytes = DefaultMaxReadBytes
	}
	if opts.QueuedTTL <= 0 {
		opts.QueuedTTL = 7 * 24 * time.Hour
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = 5 * time.Second
	}
	return &Service{
		store:      opts.Store,
		repos:      opts.Repos,
		events:     opts.Events,
		commands:   opts.Commands,
		clients:    opts.Clients,
		log:        opts.Logger,
		now:        opts.Now,
		staleAfter: opts.StaleAfter,
		queuedTTL:  opts.QueuedTTL,
		maxRead:    opts.MaxReadBytes,
		progress:   throttle.New(opts.ProgressEvery),
	}
}

// publish records an event about restore r on behalf of actor (nil: the
// server). A failure to record it is logged: the change already happened.
func (s *Service) publish(ctx context.Context, actor *coffer.Principal, r *coffer.Restore, level coffer.Level, code, title, msg string) {
	e := &coffer.Event{Level: level, Code: code, Title: title, Message: msg,
		Resource: coffer.ResourceRef{Type: "restore", ID: r.ID}, Audience: coffer.RoleViewer}
	coffer.Record(ctx, s.events, s.log, actor, e)
}

// Maintain fails the running restores whose agent stopped reporting
// progress StaleAfter ago, and the restores that waited queued for
// QueuedTTL (a restore to an offline client waits for it until then). The
// server calls it periodically; several replicas may.
func (s *Service) Maintain(ctx context.Context) error {
	reason := "the agent stopped reporting progress for " + s.staleAfter.String() +
		": the restore was marked failed; run it again"
	stale, err := s.store.FailStaleRestores(ctx, s.now().Add(-s.staleAfter), reason)
	if err != nil {
		return fmt.Errorf("fail stale restores: %w", err)
	}
	for i := range stale {
		r := &stale[i]
		s.log.Warn("restore failed: no progress from its agent", "restore_id", r.ID, "client_id", r.TargetClientID)
		s.publish(ctx, nil, r, coffer.LevelError, "restore.failed", "Restore failed",
			"Restore "+r.ID+" of backup "+r.BackupID+" failed: "+reason+".")
	}
	reason = fmt.Sprintf("the target client's agent did not start it within %v of it being queued: it was offline or lost the command; run it again", s.queuedTTL)
	expired, err := s.store.FailQueuedRestores(ctx, s.now().Add(-s.queuedTTL), reason)
	if err != nil {
		return fmt.Errorf("fail expired queued restores: %w", err)
	}
	for i := range expired {
		r := &expired[i]
		s.log.Warn("restore failed: never started", "restore_id", r.ID, "client_id", r.TargetClientID)
		s.publish(ctx, nil, r, coffer.LevelError, "restore.failed", "Restore failed",
			"Restore "+r.ID+" of backup "+r.BackupID+" failed: "+reason+".")
	}
	return nil
}
