// Package auth owns accounts and credentials: password hashing (argon2id),
// logins and sessions, personal API tokens, login throttling, the first
// admin account, and the audit events for all of it.
//
// Route-level authorization (which permission a route needs) lives in the
// HTTP layer; this package enforces the rules that depend on the data:
// ownership of tokens and passwords, the last active admin, and that a
// credential can never grant more than it holds.
package auth

import (
	"context"
	"log/slog"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
)

// Store is the part of the metadata store the service uses.
type Store interface {
	CreateUser(ctx context.Context, u *coffer.User) error
	GetUser(ctx context.Context, id string) (*coffer.User, error)
	GetUserByUsername(ctx context.Context, username string) (*coffer.User, error)
	CountUsers(ctx context.Context) (int, error)
	ListUsers(ctx context.Context, f metadb.UserFilter) ([]coffer.User, int, error)
	UpdateUser(ctx context.Context, id string, upd metadb.UserUpdate) (*coffer.User, error)
	DeleteUser(ctx context.Context, id string) (*coffer.User, error)
	RecordLogin(ctx context.Context, id string) error

	CreateSession(ctx context.Context, s *coffer.Session) error
	SessionByTokenHash(ctx context.Context, hash string) (*coffer.Session, *coffer.User, error)
	TouchSession(ctx context.Context, id string) error
	DeleteSession(ctx context.Context, id string) error
	DeleteUserSessions(ctx context.Context, userID, keepID string) (int64, error)
	DeleteExpiredSessions(ctx context.Context, t time.Time) (int64, error)

	CreateAPIToken(ctx context.Context, t *coffer.APIToken) error
	APITokenByHash(ctx context.Context, hash string) (*coffer.APIToken, *coffer.User, error)
	GetAPIToken(ctx context.Context, id string) (*coffer.APIToken, error)
	ListAPITokens(ctx context.Context, userID string) ([]coffer.APIToken, error)
	DeleteAPIToken(ctx context.Context, id string) error
	TouchAPIToken(ctx context.Context, id string) error
}

// Publisher records audit events.
type Publisher = coffer.Publisher

// Options configures a Service. Zero values take the documented defaults.
type Options struct {
	Store  Store
	Events Publisher
	Logger *slog.Logger
	Now    func() time.Time

	// SessionTTL is how long a login lasts (default 12 h).
	SessionTTL time.Duration
	// UserFailures failed logins in a row for one username are allowed,
	// then one more every UserFailureEvery (defaults 5 and 30 s).
	UserFailures     int
	UserFailureEvery time.Duration
	// IPFailures and IPFailureEvery are the same for one client address
	// (defaults 20 and 6 s).
	IPFailures     int
	IPFailureEvery time.Duration
	// HashConcurrency bounds concurrent password hashes (19 MiB each) so a
	// login flood cannot exhaust memory (default 4).
	HashConcurrency int
}

// Service implements accounts and credentials.
type Service struct {
	store      Store
	events     Publisher
	log        *slog.Logger
	now        func() time.Time
	sessionTTL time.Duration
	userLimit  *throttle
	ipLimit    *throttle
	hashSlots  chan struct{}
}

// New returns a Service.
func New(opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur(&opts.SessionTTL, 12*time.Hour)
	def(&opts.UserFailures, 5)
	defDur(&opts.UserFailureEvery, 30*time.Second)
	def(&opts.IPFailures, 20)
	defDur(&opts.IPFailureEvery, 6*time.Second)
	def(&opts.HashConcurrency, 4)
	return &Service{
		store:      opts.Store,
		events:     opts.Events,
		log:        opts.Logger,
		now:        opts.Now,
		sessionTTL: opts.SessionTTL,
		userLimit:  newThrottle(opts.UserFailures, opts.UserFailureEvery, 100_000),
		ipLimit:    newThrottle(opts.IPFailures, opts.IPFailureEvery, 100_000),
		hashSlots:  make(chan struct{}, opts.HashConcurrency),
	}
}

// SessionTTL is how long a new login lasts.
func (s *Service) SessionTTL() time.Duration { return s.sessionTTL }

// hash runs a password hash or verification within the concurrency bound.
func (s *Service) hash(ctx context.Context, fn func()) error {
	select {
	case s.hashSlots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.hashSlots }()
	fn()
	return nil
}

// Bootstrap creates the first admin account when there are no users at all.
// With password "" it generates one and returns it, to be shown once.
// created is false when accounts already exist (nothing is changed).
func (s *Service) Bootstrap(ctx context.Context, username, password string) (created bool, generated string, err error) {
	n, err := s.store.CountUsers(ctx)
	if err != nil || n > 0 {
		return false, "", err
	}
	if password == "" {
		generated, _ = NewSecret("")
		generated = generated[:24]
		password = generated
	}
	u, err := s.newUser(ctx, NewUser{Username: username, Password: password, Role: coffer.RoleAdmin})
	if coffer.ErrorCode(err) == "username_taken" {
		return false, "", nil // another replica bootstrapped at the same moment
	}
	if err != nil {
		return false, "", err
	}
	s.audit(ctx, nil, &coffer.Event{Level: coffer.LevelInfo, Code: "user.created", Title: "Admin account created",
		Message:  "The first admin account " + quote(u.Username) + " was created at first start.",
		Resource: userRef(u), Audience: coffer.RoleAdmin, UserID: u.ID})
	return true, generated, nil
}

// Maintain deletes expired sessions; the server calls it periodically.
func (s *Service) Maintain(ctx context.Context) {
	n, err := s.store.DeleteExpiredSessions(ctx, s.now())
	if err != nil {
		s.log.Warn("delete expired sessions", "err", err)
		return
	}
	if n > 0 {
		s.log.Debug("deleted expired sessions", "count", n)
	}
}

// audit publishes an audit event on behalf of actor (nil: the server).
// A failure to record it is logged: the change itself already happened.
func (s *Service) audit(ctx context.Context, actor *coffer.Principal, e *coffer.Event) {
	coffer.Record(ctx, s.events, s.log, actor, e)
}

func userRef(u *coffer.User) coffer.ResourceRef { return coffer.ResourceRef{Type: "user", ID: u.ID} }

func quote(s string) string { return "“" + s + "”" }
