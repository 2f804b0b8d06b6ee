// Package storage manages where backups live: S3-compatible endpoints and
// the repositories on them or on the server's disks (DESIGN §2, §4, §7).
//
// It tests a repository's storage before recording it (a real write, read
// and delete), attaches a Coffer repository it finds there or initialises
// a new one, and refuses a location that holds something else. It keeps
// repository credentials sealed with a key derived from the master key and
// never hands them out. It owns the server's set of open repositories
// (package repos), opening each on first use from its record. It runs
// verifies and garbage collections as background jobs, one of a kind per
// repository at a time across replicas, and enforces repository quotas
// for the backups service. It records each repository's storage use once
// an hour, the history behind the dashboard's chart. Every change is an
// audit event; no event or log line carries a credential.
package storage

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/server/repos"
)

// Store is the part of the metadata store the service uses (*metadb.DB).
// Its errors are those documented on metadb's methods.
type Store interface {
	CreateEndpoint(ctx context.Context, e *coffer.Endpoint) error
	GetEndpoint(ctx context.Context, id string) (*coffer.Endpoint, error)
	ListEndpoints(ctx context.Context, f metadb.EndpointFilter) ([]coffer.Endpoint, int, error)
	UpdateEndpoint(ctx context.Context, e *coffer.Endpoint) error
	DeleteEndpoint(ctx context.Context, id string) (*coffer.Endpoint, error)

	CreateRepository(ctx context.Context, r *coffer.Repository) error
	GetRepository(ctx context.Context, id string) (*coffer.Repository, error)
	ListRepositories(ctx context.Context, f metadb.RepositoryFilter) ([]coffer.Repository, int, error)
	UpdateRepository(ctx context.Context, r *coffer.Repository) error
	DeleteRepository(ctx context.Context, id string) (*coffer.Repository, error)
	SetDefaultRepository(ctx context.Context, id string) error
	SetRepositoryQuotaLevel(ctx context.Context, id string, from, to int) (bool, error)
	RepositoryStoredBytes(ctx context.Context, id string) (int64, error)
	RepositorySnapshots(ctx context.Context, id string) ([]metadb.SnapshotOwner, error)
	StoredBytesByRepository(ctx context.Context) (map[string]int64, error)

	RecordUsageSample(ctx context.Context, s metadb.UsageSample, replace bool) (bool, error)
	SampledRepositories(ctx context.Context, t time.Time) (map[string]bool, error)
	UsageHistory(ctx context.Context, since time.Time, step time.Duration) ([]metadb.UsageSample, error)
	LatestUsageSamples(ctx context.Context) (map[string]metadb.UsageSample, error)
	DeleteUsageSamplesBefore(ctx context.Context, t time.Time) (int64, error)

	CreateRepositoryJob(ctx context.Context, j *coffer.RepositoryJob) error
	RunningRepositoryJobs(ctx context.Context, repositoryID string) ([]coffer.RepositoryJob, error)
	HeartbeatRepositoryJob(ctx context.Context, id string) error
	FinishRepositoryJob(ctx context.Context, id string, state coffer.JobState, result *coffer.MaintenanceResult) (*coffer.RepositoryJob, error)
	FailStaleRepositoryJobs(ctx context.Context, before time.Time, reason string) ([]coffer.RepositoryJob, error)
}

// Publisher records events.
type Publisher interface {
	Publish(ctx context.Context, e *coffer.Event) error
}

// Options configure a Service. Zero values take the documented defaults.
type Options struct {
	Store Store
	// Default is the server's default repository, opened at start from
	// its flags; the service's repository set holds it for good.
	Default *repository.Repository
	// MasterKey opens repositories and (through a derived key) seals
	// their credentials.
	MasterKey []byte
	// Index returns the engine index of a repository (metadb's DB.Index).
	Index  func(repositoryID string) repository.Index
	Events Publisher
	Logger *slog.Logger
	Now    func() time.Time

	// ProbeTimeout bounds the storage checks of a create or update
	// (default 30 s).
	ProbeTimeout time.Duration
	// JobHeartbeat is how often a running job records that its replica is
	// alive (default 1 minute); Maintain fails jobs silent for JobStaleAfter
	// (default 10 minutes).
	JobHeartbeat  time.Duration
	JobStaleAfter time.Duration
	// GCLease is the engine's GC lease of a collection (default 15
	// minutes, renewed every third of it): another replica can collect
	// the repository that long after this one died mid-collection.
	GCLease time.Duration
	// GCInterval is how often CollectDue collects each repository
	// (default 24 h).
	GCInterval time.Duration
	// QuotaRefresh is how long Admit trusts the stored bytes it read
	// (default 10 s); uploads it admits meanwhile are added to them.
	QuotaRefresh time.Duration
	// UsageRetention is how long the hourly usage samples are kept
	// (default 400 days).
	UsageRetention time.Duration
	// Verify and GC, when set, replace the engine's Verify and GC (tests
	// make them block or fail).
	Verify func(ctx context.Context, r *repository.Repository, o repository.VerifyOptions) (*repository.VerifyReport, error)
	GC     func(ctx context.Context, r *repository.Repository, o repository.GCOptions) (*repository.GCReport, error)
}

// Service implements storage.
type Service struct {
	store  Store
	set    *repos.Set
	master []byte
	sealer *sealer
	index  func(string) repository.Index
	events Publisher
	log    *slog.Logger
	now    func() time.Time
	opts   Options

	// Jobs run under runCtx; Close cancels it and waits for them.
	runCtx    context.Context
	cancelRun context.CancelFunc
	jobMu     sync.Mutex
	closed    bool
	jobs      sync.WaitGroup

	quotaMu sync.Mutex
	quota   map[string]*quotaState

	// opened holds, per repository this replica opened, a fingerprint of
	// the settings it was opened with (see Refresh).
	openedMu sync.Mutex
	opened   map[string][32]byte

	// usageHour is the hour this replica last took the usage samples of
	// (see SampleUsage).
	usageMu   sync.Mutex
	usageHour time.Time
}

// New returns a Service. It fails when the master key is not 32 bytes.
func New(opts Options) (*Service, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = 30 * time.Second
	}
	if opts.JobHeartbeat <= 0 {
		opts.JobHeartbeat = time.Minute
	}
	if opts.JobStaleAfter <= 0 {
		opts.JobStaleAfter = 10 * time.Minute
	}
	if opts.GCLease <= 0 {
		opts.GCLease = 15 * time.Minute
	}
	if opts.GCInterval <= 0 {
		opts.GCInterval = 24 * time.Hour
	}
	if opts.QuotaRefresh <= 0 {
		opts.QuotaRefresh = 10 * time.Second
	}
	if opts.UsageRetention <= 0 {
		opts.UsageRetention = 400 * 24 * time.Hour
	}
	if opts.Verify == nil {
		opts.Verify = func(ctx context.Context, r *repository.Repository, o repository.VerifyOptions) (*repository.VerifyReport, error) {
			return r.Verify(ctx, o)
		}
	}
	if opts.GC == nil {
		opts.GC = func(ctx context.Context, r *repository.Repository, o repository.GCOptions) (*repository.GCReport, error) {
			return r.GC(ctx, o)
		}
	}
	sl, err := newSealer(opts.MasterKey)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s := &Service{store: opts.Store, master: opts.MasterKey, sealer: sl, index: opts.Index, events: opts.Events,
		log: opts.Logger, now: opts.Now, opts: opts,
		runCtx: runCtx, cancelRun: cancel, quota: map[string]*quotaState{}, opened: map[string][32]byte{}}
	s.set = repos.New(opts.Default, s.Open)
	return s, nil
}

// Repos returns the server's open repositories: the default one, and
// every other opened from its record on first use.
func (s *Service) Repos() *repos.Set { return s.set }

// Close cancels the running jobs and waits for them to end (each records
// its failure). It does not close the repositories: Repos().Close does.
func (s *Service) Close() {
	s.jobMu.Lock()
	s.closed = true
	s.jobMu.Unlock()
	s.cancelRun()
	s.jobs.Wait()
}

// The event codes of storage.
const (
	EventEndpointCreated   = "endpoint.created"
	EventEndpointUpdated   = "endpoint.updated"
	EventEndpointDeleted   = "endpoint.deleted"
	EventCreated           = "repository.created"
	EventUpdated           = "repository.updated"
	EventDeleted           = "repository.deleted"
	EventVerifyStarted     = "repository.verify_started"
	EventVerifyOK          = "repository.verify_succeeded"
	EventVerifyDamaged     = "repository.verify_damaged"
	EventVerifyFailed      = "repository.verify_failed"
	EventGCStarted         = "repository.gc_started"
	EventGCOK              = "repository.gc_succeeded"
	EventGCFailed          = "repository.gc_failed"
	EventQuotaWarning      = "repository.quota_warning"
	EventQuotaBelowWarning = "repository.quota_recovered"
)

// audit records an audit event — a change a person (or, with a nil
// principal, the server) made to the storage configuration — for admins,
// who manage storage.
func (s *Service) audit(ctx context.Context, p *coffer.Principal, ref coffer.ResourceRef, level coffer.Level, code, title, message string) {
	s.emit(ctx, p, ref, level, code, title, message, coffer.RoleAdmin)
}

// publish records an event about a repository's health — a job's
// outcome, a quota warning — for everyone who may read repositories.
func (s *Service) publish(ctx context.Context, p *coffer.Principal, ref coffer.ResourceRef, level coffer.Level, code, title, message string) {
	s.emit(ctx, p, ref, level, code, title, message, coffer.RoleViewer)
}

// emit records an event; it never carries a credential. A failure to
// record it is logged: the change, already stored, is what counts.
func (s *Service) emit(ctx context.Context, p *coffer.Principal, ref coffer.ResourceRef, level coffer.Level, code, title, message string,
	audience coffer.Role) {
	coffer.Record(ctx, s.events, s.log, p, &coffer.Event{Level: level, Code: code, Title: title, Message: message,
		Resource: ref, Audience: audience})
}

func repoRef(id string) coffer.ResourceRef     { return coffer.ResourceRef{Type: "repository", ID: id} }
func endpointRef(id string) coffer.ResourceRef { return coffer.ResourceRef{Type: "endpoint", ID: id} }

// actorName names who did something in an event message.
func actorName(p *coffer.Principal) string {
	if p == nil || p.Username == "" {
		return "The server"
	}
	return p.Username
}

// formatBytes writes n in binary units ("1.5 GiB").
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit || m <= -unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
