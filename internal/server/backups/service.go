// Package backups runs the server side of backups: their records and
// lifecycle, and the ingest of an agent's blobs into the repository.
//
// A backup is queued by a person (RunAdHoc) or started by the agent itself
// (StartBackup without an id). While it runs, the agent asks which blobs the
// repository lacks (CheckBlobs), uploads them in frames (Upload), reports
// progress, and finally commits the root tree (Commit), which writes the
// snapshot manifest, or gives up (Fail). Each running backup holds an index
// write session so that garbage collection spares the blobs it was told are
// present; the session ends with the backup.
package backups

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/repos"
)

// Store is the part of the metadata store backups use (*metadb.DB).
type Store interface {
	CreateBackup(ctx context.Context, b *coffer.Backup) error
	GetBackup(ctx context.Context, id string) (*coffer.Backup, error)
	StartBackup(ctx context.Context, id, clientID, sessionID, repositoryID string) (*coffer.Backup, error)
	UpdateBackupProgress(ctx context.Context, id string, stats coffer.BackupStats) (*coffer.Backup, error)
	FinishBackup(ctx context.Context, id string, f metadb.BackupFinish) (*coffer.Backup, error)
	RequestBackupCancel(ctx context.Context, id string) (*coffer.Backup, error)
	ListBackups(ctx context.Context, f metadb.BackupFilter) ([]coffer.Backup, error)
	CountBackupsByState(ctx context.Context, since time.Time) (map[coffer.JobState]int, error)
	FailStaleBackups(ctx context.Context, updatedBefore time.Time, reason string) ([]coffer.Backup, error)
	FailQueuedBackups(ctx context.Context, createdBefore time.Time, reason string) ([]coffer.Backup, error)

	// Forget, retention, metadata and progress events (forget.go,
	// retention.go, meta.go, progress.go).
	DeleteBackup(ctx context.Context, id string) (*coffer.Backup, error)
	RetentionDue(ctx context.Context) (map[string][]string, error)
	ClearRetentionDue(ctx context.Context, ids []string) error
	ClaimBackupProgressEvent(ctx context.Context, id string, every time.Duration) (bool, error)
	GetPlan(ctx context.Context, id string) (*coffer.Plan, error)
	ListPlans(ctx context.Context, f metadb.PlanFilter) ([]coffer.Plan, int, error)
	ListRestores(ctx context.Context, f metadb.RestoreFilter) ([]coffer.Restore, error)
}

// Publisher records events.
type Publisher = coffer.Publisher

// Commands queues commands for a client's agent (the agents service).
type Commands interface {
	Enqueue(ctx context.Context, clientID string, cmd protocol.Command) (string, error)
}

// Clients looks up enrolled clients (the agents service). GetClient fails
// with coffer.KindNotFound "client_not_found" for an unknown id.
type Clients interface {
	GetClient(ctx context.Context, id string) (*coffer.Client, error)
}

// Plans looks up backup plans (*metadb.DB). GetPlan fails with
// coffer.KindNotFound "plan_not_found" for an unknown id.
type Plans interface {
	GetPlan(ctx context.Context, id string) (*coffer.Plan, error)
}

// Quota admits what backups add to a repository (the storage service).
// Admit fails with coffer.KindConflict "quota_exceeded" when repository
// repositoryID cannot take addBytes more (0: a backup is starting).
type Quota interface {
	Admit(ctx context.Context, repositoryID string, addBytes int64) error
}

// Options configure a Service. Zero values take the documented defaults.
type Options struct {
	Store Store
	// Repos are the repositories backups are stored in; a backup that
	// names none goes to the default one.
	Repos    *repos.Set
	Events   Publisher
	Commands Commands
	Clients  Clients
	Logger   *slog.Logger
	Now      func() time.Time
	// Quota, when set, is asked when a backup starts and before each
	// upload is stored; a refusal fails the backup. nil: no quotas.
	Quota Quota

	// SessionTTL is the lease of a running backup's index session (default
	// 30 minutes). It is renewed when a third of it has passed, on the
	// agent's blob checks, uploads and progress reports.
	SessionTTL time.Duration
	// StaleAfter is how long a running backup may go without a progress
	// report before Maintain fails it (default 10 minutes).
	StaleAfter time.Duration
	// QueuedTTL is how long a backup may wait queued for its agent, which
	// may be offline, before Maintain fails it (default 7 days, the agents'
	// default command retention: after that its command is gone and it
	// could never start, while it would keep its plan from firing).
	QueuedTTL time.Duration
	// MaxUploadBytes bounds the body of one upload (default 32 MiB). It is
	// at least one frame of the largest blob (blob.MaxSize plus the frame
	// header): a smaller value is raised to that.
	MaxUploadBytes int64
	// MaxCheckIDs bounds the ids of one blob check (default 10000).
	MaxCheckIDs int
	// MaxConcurrentUploads bounds the uploads being verified and stored at
	// once, so memory stays near MaxConcurrentUploads × (MaxUploadBytes +
	// a pack); more wait their turn (default 4).
	MaxConcurrentUploads int
	// Compression is the level agents compress blobs at. The zero value
	// (blob.Off) takes the default, blob.Fastest: compression is skipped
	// per blob anyway when it does not shrink it.
	Compression blob.Compression

	// Plans, when set, give a plan's backup its plan's commands and
	// compression level when the agent starts it (see StartBackup).
	Plans Plans
	// CommandTimeout bounds each pre and post command of a plan on the
	// agent (default 10 minutes).
	CommandTimeout time.Duration

	// RetentionEvery is how often RunRetention applies every plan's
	// retention (default 24 hours; first when it starts). RetentionPoll
	// is how often it looks for plans whose backups committed on another
	// replica, or before a restart (default 1 minute).
	RetentionEvery time.Duration
	RetentionPoll  time.Duration
	// ProgressEvery is the least time between two progress events of one
	// backup (default 5 seconds); progress reports between them publish
	// none.
	ProgressEvery time.Duration
}

// Service implements backups.
type Service struct {
	store       Store
	repos       *repos.Set
	events      Publisher
	commands    Commands
	clients     Clients
	quota       Quota
	log         *slog.Logger
	now         func() time.Time
	sessionTTL  time.Duration
	staleAfter  time.Duration
	queuedTTL   time.Duration
	maxUpload   int64
	maxCheck    int
	compression blob.Compression
	uploads     chan struct{} // a slot per upload being processed
	plans       Plans
	cmdTimeout  time.Duration

	records // retention and progress events (retention.go, progress.go)

	mu      sync.Mutex
	renewed map[string]time.Time // backup id → last renewal of its session (this replica's view)
}

// New returns a Service.
func New(opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 30 * time.Minute
	}
	if opts.StaleAfter <= 0 {
		opts.StaleAfter = 10 * time.Minute
	}
	if opts.QueuedTTL <= 0 {
		opts.QueuedTTL = 7 * 24 * time.Hour
	}
	if opts.MaxUploadBytes <= 0 {
		opts.MaxUploadBytes = 32 << 20
	}
	opts.MaxUploadBytes = max(opts.MaxUploadBytes, blob.MaxSize+protocol.FrameHeaderSize)
	if opts.MaxCheckIDs <= 0 {
		opts.MaxCheckIDs = 10000
	}
	if opts.MaxConcurrentUploads <= 0 {
		opts.MaxConcurrentUploads = 4
	}
	if opts.Compression == blob.Off {
		opts.Compression = blob.Fastest
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = 10 * time.Minute
	}
	return &Service{store: opts.Store, repos: opts.Repos, events: opts.Events, commands: opts.Commands,
		plans: opts.Plans, cmdTimeout: opts.CommandTimeout, quota: opts.Quota,
		clients: opts.Clients, log: opts.Logger, now: opts.Now, sessionTTL: opts.SessionTTL,
		staleAfter: opts.StaleAfter, queuedTTL: opts.QueuedTTL, maxUpload: opts.MaxUploadBytes, maxCheck: opts.MaxCheckIDs,
		compression: opts.Compression, uploads: make(chan struct{}, opts.MaxConcurrentUploads),
		renewed: map[string]time.Time{}, records: newRecords(opts)}
}

// RepositoryParams are what an agent needs to produce blobs repo can store:
// its id, chunker parameters and id key, the compression level, and the
// server's limits on uploads and checks.
func RepositoryParams(repo *repository.Repository, compression blob.Compression, maxUpload int64, maxCheck int) protocol.RepositoryParams {
	cfg := repo.Config()
	cp := cfg.ChunkerParams()
	key := repo.Codec().IDKey()
	return protocol.RepositoryParams{ID: cfg.ID, ChunkerMin: cp.Min, ChunkerAvg: cp.Avg, ChunkerMax: cp.Max,
		IDKey: key[:], Compression: compression.String(), MaxUploadBytes: maxUpload, MaxCheckIDs: maxCheck}
}

// params returns the parameters the service hands to agents for repo.
func (s *Service) params(repo *repository.Repository) protocol.RepositoryParams {
	return RepositoryParams(repo, s.compression, s.maxUpload, s.maxCheck)
}

// repoOf returns the repository b is stored in.
func (s *Service) repoOf(ctx context.Context, b *coffer.Backup) (*repository.Repository, error) {
	repo, err := s.repos.Get(ctx, b.RepositoryID)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", b.ID, err)
	}
	return repo, nil
}

// admit asks the quota whether backup b's repository takes addBytes more.
// A refusal fails the backup with the quota's reason, since it could not
// finish, and is returned.
func (s *Service) admit(ctx context.Context, b *coffer.Backup, addBytes int64) error {
	if s.quota == nil {
		return nil
	}
	err := s.quota.Admit(ctx, b.RepositoryID, addBytes)
	var ce *coffer.Error
	if err == nil || !errors.As(err, &ce) || ce.Kind != coffer.KindConflict {
		return err
	}
	done, ferr := s.store.FinishBackup(context.WithoutCancel(ctx), b.ID, metadb.BackupFinish{State: coffer.JobFailed, Stats: b.Stats,
		Error: ce.Detail})
	if ferr != nil {
		s.log.Warn("fail a backup over its repository's quota", "backup_id", b.ID, "err", ferr)
		return err
	}
	s.endSession(ctx, done)
	s.publishFinished(ctx, systemActor, done)
	return err
}

// MaxUploadBytes is the largest upload body the service accepts.
func (s *Service) MaxUploadBytes() int64 { return s.maxUpload }

func backupNotFound(id string) error {
	return coffer.Errorf(coffer.KindNotFound, "backup_not_found", "no backup with id %q", id)
}

// agentBackup returns backup id if it belongs to clientID. Another
// client's backup is reported as not found: agents see only their own.
func (s *Service) agentBackup(ctx context.Context, clientID, id string) (*coffer.Backup, error) {
	b, err := s.store.GetBackup(ctx, id)
	if err != nil {
		return nil, err
	}
	if b.ClientID != clientID {
		return nil, backupNotFound(id)
	}
	return b, nil
}

// runningBackup is agentBackup for a backup that must be running.
func (s *Service) runningBackup(ctx context.Context, clientID, id string) (*coffer.Backup, error) {
	b, err := s.agentBackup(ctx, clientID, id)
	if err != nil {
		return nil, err
	}
	if b.State != coffer.JobRunning {
		return nil, notRunning(b)
	}
	return b, nil
}

func notRunning(b *coffer.Backup) error {
	if b.State.Final() {
		return coffer.Errorf(coffer.KindConflict, "backup_finished",
			"backup %s already ended (%s): start a new backup", b.ID, b.State).With("state", string(b.State))
	}
	return coffer.Errorf(coffer.KindConflict, "backup_not_running",
		"backup %s is %s, not running: start it first", b.ID, b.State).With("state", string(b.State))
}

// renew extends the lease of b's index session when a third of it has
// passed since this replica last did. A lease that lapsed anyway is
// logged, not fatal: Commit checks every blob the snapshot references, so
// one that garbage collection took meanwhile is reported then and uploaded
// again.
func (s *Service) renew(ctx context.Context, b *coffer.Backup) {
	if b.SessionID == "" {
		return
	}
	now := s.now()
	s.mu.Lock()
	last, ok := s.renewed[b.ID]
	due := !ok || now.Sub(last) >= s.sessionTTL/3
	if due {
		s.renewed[b.ID] = now
	}
	s.mu.Unlock()
	if !due {
		return
	}
	repo, err := s.repoOf(ctx, b)
	if err == nil {
		err = repo.Index().RenewSession(ctx, repository.Session{ID: b.SessionID}, s.sessionTTL)
	}
	if err == nil {
		return
	}
	if errors.Is(err, repository.ErrSessionExpired) {
		s.log.Warn("backup's write session expired; blobs garbage collection removed meanwhile will be reported at commit",
			"backup_id", b.ID, "client_id", b.ClientID, "session", b.SessionID)
		return
	}
	s.mu.Lock()
	delete(s.renewed, b.ID) // try again on the next call
	s.mu.Unlock()
	s.log.Warn("renew backup's write session", "backup_id", b.ID, "session", b.SessionID, "err", err)
}

// endSession ends b's index session (its blobs are committed, or no longer
// needed) and forgets its renewal time.
func (s *Service) endSession(ctx context.Context, b *coffer.Backup) {
	s.mu.Lock()
	delete(s.renewed, b.ID)
	s.mu.Unlock()
	if b.SessionID == "" {
		return
	}
	repo, err := s.repoOf(ctx, b)
	if err == nil {
		err = repo.Index().EndSession(context.WithoutCancel(ctx), repository.Session{ID: b.SessionID})
	}
	if err != nil {
		// The lease runs out by itself; until then GC merely keeps more.
		s.log.Warn("end backup's write session", "backup_id", b.ID, "session", b.SessionID, "err", err)
	}
}

// pruneRenewals forgets renewal times older than the session lease: those
// backups ended on another replica, or will renew at once when they return.
func (s *Service) pruneRenewals(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, t := range s.renewed {
		if now.Sub(t) > s.sessionTTL {
			delete(s.renewed, id)
		}
	}
}
