// Package plans manages backup plans: what to back up on which client,
// into which repository, when and how long to keep it (DESIGN §2, §6).
//
// It validates plans (the schedule in the plan's time zone, the paths, the
// retention policy), enforces that only admins set the commands a plan runs
// on its client, records an audit event for every change, previews a
// plan's next fire times and starts a plan's backup by hand. Firing plans
// on their schedule is the scheduler's job.
package plans

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/schedule"
)

// Store is the part of the metadata store plans use (*metadb.DB).
// GetPlan and DeletePlan fail with coffer.KindNotFound "plan_not_found";
// CreatePlan and UpdatePlan with coffer.KindConflict "plan_name_taken".
type Store interface {
	CreatePlan(ctx context.Context, p *coffer.Plan) error
	GetPlan(ctx context.Context, id string) (*coffer.Plan, error)
	ListPlans(ctx context.Context, f metadb.PlanFilter) ([]coffer.Plan, int, error)
	UpdatePlan(ctx context.Context, p *coffer.Plan) error
	DeletePlan(ctx context.Context, id string) (*coffer.Plan, error)
	PlanStatuses(ctx context.Context) ([]metadb.PlanStatus, error)
}

// Clients looks up enrolled clients (the agents service). GetClient fails
// with coffer.KindNotFound "client_not_found" for an unknown id.
type Clients interface {
	GetClient(ctx context.Context, id string) (*coffer.Client, error)
}

// Backups starts backups (the backups service).
type Backups interface {
	// RunPlan queues a backup of plan on its client now and sends the
	// agent the command to run it, as p (trigger manual, or api for an API
	// token). It runs a disabled plan too.
	RunPlan(ctx context.Context, p *coffer.Principal, plan *coffer.Plan) (*coffer.Backup, error)
}

// Repositories looks up repositories (the storage service).
// GetRepository fails with coffer.KindNotFound "repository_not_found" for
// an unknown id.
type Repositories interface {
	GetRepository(ctx context.Context, id string) (*coffer.Repository, error)
}

// Publisher records events.
type Publisher = coffer.Publisher

// The audit event codes of plans.
const (
	EventCreated = "plan.created"
	EventUpdated = "plan.updated"
	EventDeleted = "plan.deleted"
)

// Options configure a Service.
type Options struct {
	Store   Store
	Clients Clients
	Backups Backups
	Events  Publisher
	Logger  *slog.Logger
	Now     func() time.Time
	// DefaultRepositoryID is the repository a plan that names none backs
	// up to.
	DefaultRepositoryID string
	// Repositories, when set, says which other repositories a plan may
	// name; without it only the default one.
	Repositories Repositories
}

// Service implements plans.
type Service struct {
	store       Store
	clients     Clients
	backups     Backups
	events      Publisher
	log         *slog.Logger
	now         func() time.Time
	defaultRepo string
	repos       Repositories
}

// New returns a Service.
func New(opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Service{store: opts.Store, clients: opts.Clients, backups: opts.Backups, events: opts.Events,
		log: opts.Logger, now: opts.Now, defaultRepo: opts.DefaultRepositoryID,
		repos: opts.Repositories}
}

// Spec is what a person says about a plan when creating or replacing it.
type Spec struct {
	Name         string
	Group        string
	ClientID     string
	RepositoryID string // "" = the default repository
	Schedule     string // "" = run by hand only
	Timezone     string // IANA name; "" = UTC
	StartAt      *time.Time
	EndAt        *time.Time
	Include      []string
	Exclude      []string
	PreCommands  []string
	PostCommands []string
	// CommandTimeout bounds each command (0 = the server's default); like
	// the commands, only admins may set or change it.
	CommandTimeout time.Duration
	Retention      coffer.Retention
	Compression    string // "" = DefaultCompression
	FullEvery      int
	OneFileSystem  bool
	// Enabled nil means true on create and unchanged on update.
	Enabled *bool
}

// check validates spec and the references it makes (client, repository).
func (s *Service) check(ctx context.Context, spec *Spec) error {
	if _, err := validate(spec); err != nil {
		return err
	}
	if _, err := s.clients.GetClient(ctx, spec.ClientID); err != nil {
		var ce *coffer.Error
		if errors.As(err, &ce) && ce.Kind == coffer.KindNotFound {
			return ce.With("field", "body.client_id")
		}
		return err
	}
	if spec.RepositoryID == "" {
		spec.RepositoryID = s.defaultRepo
	}
	if spec.RepositoryID == s.defaultRepo {
		return nil
	}
	unknown := invalid("repository_id", "unknown_repository", "no repository with id %q", truncate(spec.RepositoryID))
	if s.repos == nil {
		return unknown
	}
	if _, err := s.repos.GetRepository(ctx, spec.RepositoryID); err != nil {
		if coffer.IsKind(err, coffer.KindNotFound) {
			return unknown.Wrap(err)
		}
		return err
	}
	return nil
}

func commandsNeedAdmin() error {
	return coffer.Errorf(coffer.KindForbidden, "commands_need_admin",
		"only an admin may set or change a plan's pre_commands and post_commands: they run as the agent's user on the client").
		With("required_permission", string(coffer.PermManage))
}

func hasCommands(spec *Spec) bool {
	return len(spec.PreCommands) > 0 || len(spec.PostCommands) > 0 || spec.CommandTimeout != 0
}

func apply(pl *coffer.Plan, spec *Spec) {
	pl.Name, pl.Group, pl.ClientID, pl.RepositoryID = spec.Name, spec.Group, spec.ClientID, spec.RepositoryID
	pl.Schedule, pl.Timezone, pl.StartAt, pl.EndAt = spec.Schedule, spec.Timezone, utc(spec.StartAt), utc(spec.EndAt)
	pl.Include, pl.Exclude = orEmpty(spec.Include), orEmpty(spec.Exclude)
	pl.CommandTimeout = spec.CommandTimeout
	pl.PreCommands, pl.PostCommands = orEmpty(spec.PreCommands), orEmpty(spec.PostCommands)
	pl.Retention, pl.Compression, pl.FullEvery, pl.OneFileSystem = spec.Retention, spec.Compression, spec.FullEvery, spec.OneFileSystem
	if spec.Enabled != nil {
		pl.Enabled = *spec.Enabled
	}
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func orEmpty(xs []string) []string {
	if xs == nil {
		return []string{}
	}
	return xs
}

// Create validates spec and stores it as a new plan created by p. Setting
// commands needs coffer.PermManage (403 "commands_need_admin"); p must be
// allowed to act on the plan's client (coffer.Principal.MayOperate: 403
// "client_not_owned" for an operator who does not own it).
func (s *Service) Create(ctx context.Context, p *coffer.Principal, spec Spec) (*coffer.Plan, error) {
	if err := s.check(ctx, &spec); err != nil {
		return nil, err
	}
	if err := s.mayOperate(ctx, p, spec.ClientID); err != nil {
		return nil, err
	}
	if hasCommands(&spec) && !p.Can(coffer.PermManage) {
		return nil, commandsNeedAdmin()
	}
	pl := &coffer.Plan{Enabled: true, CreatedBy: p.UserID}
	apply(pl, &spec)
	if err := s.store.CreatePlan(ctx, pl); err != nil {
		return nil, err
	}
	msg := fmt.Sprintf("%s created %s.", p.Username, describe(pl))
	if hasCommands(&spec) {
		msg += fmt.Sprintf(" It runs %d pre and %d post commands.", len(pl.PreCommands), len(pl.PostCommands))
	}
	s.audit(ctx, p, pl, EventCreated, "Plan created", msg)
	return pl, nil
}

// Get returns plan id.
func (s *Service) Get(ctx context.Context, id string) (*coffer.Plan, error) {
	return s.store.GetPlan(ctx, id)
}

// List returns the plans matching f and how many match in all.
func (s *Service) List(ctx context.Context, f metadb.PlanFilter) ([]coffer.Plan, int, error) {
	return s.store.ListPlans(ctx, f)
}

// Update replaces plan id with spec (its id, author and creation time
// stay). Changing its commands needs coffer.PermManage; anyone who may
// operate can change the rest of a plan whose commands an admin set, by
// sending them back unchanged. p must be allowed to act on the plan's
// client, and on the new one when the plan moves to another client
// (coffer.Principal.MayOperate).
func (s *Service) Update(ctx context.Context, p *coffer.Principal, id string, spec Spec) (*coffer.Plan, error) {
	old, err := s.store.GetPlan(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.mayOperate(ctx, p, old.ClientID); err != nil {
		return nil, err
	}
	if err := s.check(ctx, &spec); err != nil {
		return nil, err
	}
	if spec.ClientID != old.ClientID {
		if err := s.mayOperate(ctx, p, spec.ClientID); err != nil {
			return nil, err
		}
	}
	cmdsChanged := !slices.Equal(old.PreCommands, spec.PreCommands) || !slices.Equal(old.PostCommands, spec.PostCommands) ||
		old.CommandTimeout != spec.CommandTimeout
	if cmdsChanged && !p.Can(coffer.PermManage) {
		return nil, commandsNeedAdmin()
	}
	pl := *old
	apply(&pl, &spec)
	if err := s.store.UpdatePlan(ctx, &pl); err != nil {
		return nil, err
	}
	msg := fmt.Sprintf("%s updated %s.", p.Username, describe(&pl))
	if cmdsChanged {
		msg += fmt.Sprintf(" Its commands changed: now %d pre and %d post commands.", len(pl.PreCommands), len(pl.PostCommands))
	}
	if old.Enabled != pl.Enabled {
		msg += map[bool]string{true: " It is enabled.", false: " It is disabled."}[pl.Enabled]
	}
	s.audit(ctx, p, &pl, EventUpdated, "Plan updated", msg)
	return &pl, nil
}

// Delete deletes plan id, if p may act on its client. Its backups stay
// until they are forgotten.
func (s *Service) Delete(ctx context.Context, p *coffer.Principal, id string) (*coffer.Plan, error) {
	pl, err := s.store.GetPlan(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.mayOperate(ctx, p, pl.ClientID); err != nil {
		return nil, err
	}
	pl, err = s.store.DeletePlan(ctx, id)
	if err != nil {
		return nil, err
	}
	s.audit(ctx, p, pl, EventDeleted, "Plan deleted",
		fmt.Sprintf("%s deleted %s; its backups are kept until forgotten.", p.Username, describe(pl)))
	return pl, nil
}

// Preview returns up to count (1 to MaxPreview; 0 means 5) times plan id
// fires after from, within its start_at/end_at window, in its time zone,
// and the name of that zone. A plan run only by hand has none; a disabled
// plan's times are those it would fire at when enabled.
func (s *Service) Preview(ctx context.Context, id string, count int, from time.Time) ([]time.Time, string, error) {
	if err := checkCount(count); err != nil {
		return nil, "", err
	}
	pl, err := s.store.GetPlan(ctx, id)
	if err != nil {
		return nil, "", err
	}
	return nextFires(pl.Schedule, pl.Timezone, count, from, schedule.Window{Start: pl.StartAt, End: pl.EndAt})
}

// PreviewSchedule is Preview for a schedule not saved in a plan (yet), as
// a person types it: the next count (1 to MaxPreview; 0 means 5) times expr
// fires after from in time zone tz ("" = UTC), and that zone's name. Its
// errors are those saving a plan with them would give: "invalid_schedule"
// (field body.schedule) and "invalid_timezone" (body.timezone). An empty
// expression (run by hand only) has no times.
func (s *Service) PreviewSchedule(expr, tz string, count int, from time.Time) ([]time.Time, string, error) {
	if err := checkCount(count); err != nil {
		return nil, "", err
	}
	return nextFires(expr, tz, count, from, schedule.Window{})
}

func checkCount(count int) error {
	if count < 0 || count > MaxPreview {
		return coffer.Errorf(coffer.KindInvalid, "invalid_count", "count must be between 1 and %d (got %d)", MaxPreview, count).
			With("field", "query.count")
	}
	return nil
}

// nextFires computes up to count (0 means 5) fire times of expr in tz
// after from, within w.
func nextFires(expr, tz string, count int, from time.Time, w schedule.Window) ([]time.Time, string, error) {
	if count == 0 {
		count = defaultPreview
	}
	loc, err := location(tz)
	if err != nil {
		return nil, "", err
	}
	sched, err := parseSchedule(expr, loc)
	if err != nil || sched == nil {
		return []time.Time{}, loc.String(), err
	}
	times := sched.NextN(from, count, w)
	if times == nil {
		times = []time.Time{}
	}
	return times, loc.String(), nil
}

// RunNow starts a backup of plan id now, as p, even when the plan is
// disabled, if p may act on the plan's client.
func (s *Service) RunNow(ctx context.Context, p *coffer.Principal, id string) (*coffer.Backup, error) {
	pl, err := s.store.GetPlan(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.mayOperate(ctx, p, pl.ClientID); err != nil {
		return nil, err
	}
	if s.backups == nil {
		return nil, coffer.Errorf(coffer.KindUnavailable, "backups_unavailable", "this server cannot run backups")
	}
	return s.backups.RunPlan(ctx, p, pl)
}

// mayOperate checks that p may act on client id (coffer.Principal.MayOperate).
// A client deleted since the plan was made has no owner any more: only
// admins act on its plans.
func (s *Service) mayOperate(ctx context.Context, p *coffer.Principal, id string) error {
	return coffer.MayOperateClient(ctx, s.clients, p, id)
}

// describe names a plan in event messages.
func describe(pl *coffer.Plan) string {
	d := fmt.Sprintf("plan “%s” (%s) of client %s", pl.Name, pl.ID, pl.ClientID)
	if pl.Schedule != "" {
		tz := pl.Timezone
		if tz == "" {
			tz = "UTC"
		}
		d += fmt.Sprintf(" on %q %s", pl.Schedule, tz)
	}
	return strings.TrimSpace(d)
}

// audit records an audit event about plan pl by p. A failure to record it
// is logged: the change, already stored, is what counts.
func (s *Service) audit(ctx context.Context, p *coffer.Principal, pl *coffer.Plan, code, title, message string) {
	coffer.Record(ctx, s.events, s.log, p, &coffer.Event{Level: coffer.LevelInfo, Code: code, Title: title, Message: message,
		Resource: coffer.ResourceRef{Type: "plan", ID: pl.ID}, Audience: coffer.RoleOperator})
}
