// Package agents owns enrolled clients and their agents: enrollment tokens
// and enrollment, agent credentials, heartbeats and the online/offline
// status, renaming clients and assigning their owners, the queue of
// commands delivered over each agent's stream, and the log lines agents
// ship (kept for a retention and up to a cap per client).
//
// Nothing here is kept only in one replica's memory: clients, tokens and
// commands live in the metadata store. What a replica keeps in memory are
// wake-ups — a command enqueued on this replica wakes the streams it serves
// at once; streams served by other replicas find it when they next poll the
// store.
package agents

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
)

// Store is the part of the metadata store the service uses. Its errors
// already carry Coffer's vocabulary: a missing client is KindNotFound
// "client_not_found", a used token KindUnauthenticated
// "enrollment_token_used", and so on.
type Store interface {
	CreateEnrollmentToken(ctx context.Context, t *coffer.EnrollmentToken) error
	EnrollClient(ctx context.Context, tokenHash string, c *coffer.Client) (*coffer.EnrollmentToken, error)
	GetClient(ctx context.Context, id string) (*coffer.Client, error)
	ClientByCredentialHash(ctx context.Context, hash string) (*coffer.Client, error)
	ListClients(ctx context.Context, f metadb.ClientFilter) ([]coffer.Client, int, error)
	UpdateClient(ctx context.Context, id string, upd metadb.ClientUpdate) (before, after *coffer.Client, err error)
	DeleteClient(ctx context.Context, id string) (*coffer.Client, error)
	RecordHeartbeat(ctx context.Context, id string, info coffer.ClientInfo) (wasOffline bool, err error)
	MarkClientsOffline(ctx context.Context, seenBefore time.Time) ([]coffer.Client, error)

	EnqueueCommand(ctx context.Context, c *coffer.AgentCommand) error
	PendingCommands(ctx context.Context, clientID string, limit int) ([]coffer.AgentCommand, error)
	MarkCommandDelivered(ctx context.Context, id string) error
	CompleteCommand(ctx context.Context, id, clientID string, result []byte) error
	GetCommand(ctx context.Context, id string) (*coffer.AgentCommand, error)
	DeleteCommandsBefore(ctx context.Context, t time.Time) (int64, error)

	// GetUser finds a client's owner (KindNotFound "user_not_found").
	GetUser(ctx context.Context, id string) (*coffer.User, error)
	// GetBackup and GetRestore check that a log line's job is its
	// client's (KindNotFound "backup_not_found", "restore_not_found").
	GetBackup(ctx context.Context, id string) (*coffer.Backup, error)
	GetRestore(ctx context.Context, id string) (*coffer.Restore, error)

	InsertClientLogs(ctx context.Context, lines []coffer.ClientLog) error
	ListClientLogs(ctx context.Context, f metadb.ClientLogFilter) ([]coffer.ClientLog, error)
	DeleteClientLogsBefore(ctx context.Context, t time.Time) (int64, error)
	TrimClientLogs(ctx context.Context, keep int) (int64, error)
}

// Publisher records events (the event hub).
type Publisher = coffer.Publisher

// Options configures a Service. Zero values take the documented defaults.
type Options struct {
	Store  Store
	Events Publisher
	Logger *slog.Logger
	Now    func() time.Time

	// HeartbeatInterval is how often agents are told to send a heartbeat
	// (default 15 s); OfflineAfter is how long without one marks a client
	// offline (default 3 × HeartbeatInterval).
	HeartbeatInterval time.Duration
	OfflineAfter      time.Duration
	// EnrollTTL is the lifetime of an enrollment token created without
	// one (default 1 h). No token lives longer than MaxEnrollTTL (7 days).
	EnrollTTL time.Duration
	// CommandRetention is how long commands are kept, delivered or not
	// (default 7 days).
	CommandRetention time.Duration
	// PollInterval is how often a command stream checks the store for
	// commands enqueued on other replicas (default 1 s); ResultPoll how
	// often a waiting directory listing checks for the agent's answer
	// posted to another replica (default 100 ms).
	PollInterval time.Duration
	ResultPoll   time.Duration
	// ListDirTimeout bounds the wait for a directory listing (default 15 s).
	ListDirTimeout time.Duration

	// LogRetention is how long the log lines agents ship are kept after
	// they arrive; zero keeps them forever, so the server configuration
	// should pass DefaultLogRetention unless told otherwise. LogMaxLines
	// caps the lines kept per client (its newest); zero: no cap.
	// LogPruneEvery is how often Maintain enforces both (default 10 min).
	LogRetention  time.Duration
	LogMaxLines   int
	LogPruneEvery time.Duration
}

// Defaults of the client log settings for the server configuration.
const (
	DefaultLogRetention = 30 * 24 * time.Hour
	DefaultLogMaxLines  = 100_000
)

// Limits of enrollment token lifetimes.
const (
	MinEnrollTTL = time.Minute
	MaxEnrollTTL = 7 * 24 * time.Hour
)

// Service implements clients and agents.
type Service struct {
	store Store
	evs   Publisher
	log   *slog.Logger
	now   func() time.Time
	opts  Options

	mu      sync.Mutex
	feeds   map[string]map[*Feed]struct{} // client id → open command streams on this replica
	waiters map[string]chan struct{}      // command id → a directory listing waiting for its result
	pruned  time.Time                     // when Maintain last pruned client logs (this replica)

	closing   chan struct{} // closed by Close: command streams end
	closeOnce sync.Once
}

// New returns a Service.
func New(opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&opts.HeartbeatInterval, 15*time.Second)
	def(&opts.OfflineAfter, 3*opts.HeartbeatInterval)
	def(&opts.EnrollTTL, time.Hour)
	opts.EnrollTTL = min(max(opts.EnrollTTL, MinEnrollTTL), MaxEnrollTTL)
	def(&opts.CommandRetention, 7*24*time.Hour)
	def(&opts.PollInterval, time.Second)
	def(&opts.ResultPoll, 100*time.Millisecond)
	def(&opts.ListDirTimeout, 15*time.Second)
	def(&opts.LogPruneEvery, 10*time.Minute)
	return &Service{
		store:   opts.Store,
		evs:     opts.Events,
		log:     opts.Logger,
		now:     opts.Now,
		opts:    opts,
		feeds:   map[string]map[*Feed]struct{}{},
		waiters: map[string]chan struct{}{},
		closing: make(chan struct{}),
	}
}

// Close ends every command stream on this replica (the server is shutting
// down: agents reconnect to another replica or when it is back). It is
// safe to call more than once.
func (s *Service) Close() { s.closeOnce.Do(func() { close(s.closing) }) }

// HeartbeatInterval is how often agents should send a heartbeat. The
// server should call Maintain about as often.
func (s *Service) HeartbeatInterval() time.Duration { return s.opts.HeartbeatInterval }

// Maintain marks the clients whose heartbeats stopped offline (with a
// client.offline event each), deletes commands older than the retention
// and, every LogPruneEvery, client log lines past their retention or their
// client's cap. The server calls it periodically, about once per heartbeat
// interval; with several replicas each client is reported offline once.
func (s *Service) Maintain(ctx context.Context) error {
	now := s.now()
	gone, err := s.store.MarkClientsOffline(ctx, now.Add(-s.opts.OfflineAfter))
	if err != nil {
		return err
	}
	for i := range gone {
		c := &gone[i]
		since := "it enrolled"
		if c.LastSeenAt != nil {
			since = c.LastSeenAt.UTC().Format(time.RFC3339)
		}
		s.log.Info("client offline", "client_id", c.ID, "client", c.Name)
		s.publish(ctx, nil, &coffer.Event{Level: coffer.LevelWarning, Code: "client.offline", Title: "Client offline",
			Message:  "The agent of " + quote(c.Name) + " missed its heartbeats: nothing heard from it since " + since + ".",
			Resource: clientRef(c.ID), Audience: coffer.RoleViewer})
	}
	n, err := s.store.DeleteCommandsBefore(ctx, now.Add(-s.opts.CommandRetention))
	if err != nil {
		return err
	}
	if n > 0 {
		s.log.Debug("deleted old agent commands", "count", n)
	}
	return s.pruneLogs(ctx, now)
}

// publish records an event on behalf of actor (nil: the server). A failure
// to record it is logged: the change itself already happened.
func (s *Service) publish(ctx context.Context, actor *coffer.Principal, e *coffer.Event) {
	coffer.Record(ctx, s.evs, s.log, actor, e)
}

func clientRef(id string) coffer.ResourceRef { return coffer.ResourceRef{Type: "client", ID: id} }

func quote(s string) string { return "“" + s + "”" }
