package httpapi

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/server/plans"
	"github.com/danielgtaylor/huma/v2"
)

// Retention is a plan's retention policy on the wire.
type Retention struct {
	KeepLast    int    `json:"keep_last" minimum:"0" doc:"Keep the N newest successful backups."`
	KeepHourly  int    `json:"keep_hourly" minimum:"0" doc:"Keep the newest backup of each of the N most recent hours that have one."`
	KeepDaily   int    `json:"keep_daily" minimum:"0" doc:"… days, in the plan's time zone."`
	KeepWeekly  int    `json:"keep_weekly" minimum:"0" doc:"… ISO weeks."`
	KeepMonthly int    `json:"keep_monthly" minimum:"0" doc:"… months."`
	KeepYearly  int    `json:"keep_yearly" minimum:"0" doc:"… years."`
	KeepWithin  string `json:"keep_within" maxLength:"32" doc:"Keep every successful backup newer than this Go duration, e.g. 720h; 0s for none."`
	HoldDays    int    `json:"hold_days" minimum:"0" doc:"Keep every backup, failed or not, for N days after it finished."`
}

// RetentionInput is a plan's retention policy in a request; omitted rules are 0.
type RetentionInput struct {
	KeepLast    int    `json:"keep_last,omitempty" minimum:"0" doc:"Keep the N newest successful backups."`
	KeepHourly  int    `json:"keep_hourly,omitempty" minimum:"0" doc:"Keep the newest backup of each of the N most recent hours that have one."`
	KeepDaily   int    `json:"keep_daily,omitempty" minimum:"0" doc:"… days, in the plan's time zone."`
	KeepWeekly  int    `json:"keep_weekly,omitempty" minimum:"0" doc:"… ISO weeks."`
	KeepMonthly int    `json:"keep_monthly,omitempty" minimum:"0" doc:"… months."`
	KeepYearly  int    `json:"keep_yearly,omitempty" minimum:"0" doc:"… years."`
	KeepWithin  string `json:"keep_within,omitempty" maxLength:"32" doc:"Keep every successful backup newer than this Go duration, e.g. 720h; empty or 0s for none."`
	HoldDays    int    `json:"hold_days,omitempty" minimum:"0" doc:"Keep every backup, failed or not, for N days after it finished."`
}

// Plan is a backup plan on the wire.
type Plan struct {
	ID                    string     `json:"id"`
	Name                  string     `json:"name"`
	Group                 string     `json:"group"`
	ClientID              string     `json:"client_id"`
	RepositoryID          string     `json:"repository_id"`
	Schedule              string     `json:"schedule" doc:"Cron expression (Quartz style with seconds, 5-field, or @daily-style); empty when the plan runs only by hand."`
	Timezone              string     `json:"timezone" doc:"IANA time zone the schedule runs in; empty for UTC."`
	StartAt               *time.Time `json:"start_at" nullable:"true" doc:"The schedule fires no earlier than this."`
	EndAt                 *time.Time `json:"end_at" nullable:"true" doc:"The schedule fires no later than this."`
	Include               []string   `json:"include" doc:"Absolute paths to back up."`
	Exclude               []string   `json:"exclude" doc:"Gitignore-style patterns."`
	PreCommands           []string   `json:"pre_commands" doc:"Commands the agent runs before the backup (set by admins only)."`
	PostCommands          []string   `json:"post_commands" doc:"Commands the agent runs after the backup (set by admins only)."`
	CommandTimeoutSeconds int        `json:"command_timeout_seconds" doc:"How long each command may run; 0 = the server's default (10 minutes)."`
	Retention             Retention  `json:"retention"`
	Compression           string     `json:"compression" enum:"off,fastest,default,better,best"`
	FullEvery             int        `json:"full_every" doc:"Every Nth backup re-reads every file; 0 = never."`
	OneFileSystem         bool       `json:"one_file_system"`
	Enabled               bool       `json:"enabled"`
	CreatedBy             string     `json:"created_by" doc:"The user who created it; empty if that user was deleted."`
	CreatedAt             time.Time  `json:"created_at"`
	UpdatedAt             time.Time  `json:"updated_at"`
	NextFireAt            *time.Time `json:"next_fire_at" nullable:"true" readOnly:"true" doc:"When the scheduler fires the plan next; null when it will not (disabled, run by hand only, past end_at, client deleted) or has not yet caught up with a change (within seconds). Shown by get and list."`
	LastFiredAt           *time.Time `json:"last_fired_at" nullable:"true" readOnly:"true" doc:"When the scheduler last handled a due fire of the plan; null if never. Shown by get and list."`
	LastFire              string     `json:"last_fire_outcome" readOnly:"true" enum:",fired,skipped,failed" doc:"What came of that fire: fired (its backup was queued), skipped (a backup of the plan was still queued or running), failed (see the plan.fire_failed event); empty if never."`
}

// PlanFirings reads the scheduler's state of plans (*metadb.DB): the
// plans that have one, by id.
type PlanFirings interface {
	PlanFirings(ctx context.Context, planIDs []string) (map[string]coffer.PlanFiring, error)
}

// addFirings fills in the scheduler's state of plans, in one query.
func (s *Server) addFirings(ctx context.Context, ps []Plan) error {
	if s.opts.PlanFirings == nil || len(ps) == 0 {
		return nil
	}
	ids := make([]string, len(ps))
	for i := range ps {
		ids[i] = ps[i].ID
	}
	fs, err := s.opts.PlanFirings.PlanFirings(ctx, ids)
	if err != nil {
		return err
	}
	for i := range ps {
		if f, ok := fs[ps[i].ID]; ok {
			ps[i].NextFireAt, ps[i].LastFiredAt, ps[i].LastFire = f.NextFireAt, f.LastFiredAt, string(f.LastOutcome)
		}
	}
	return nil
}

// formatDuration writes d as Go does, without trailing zero units
// ("720h", "1h30m"); 0 is "0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func toPlan(p *coffer.Plan) Plan {
	r := p.Retention
	return Plan{ID: p.ID, Name: p.Name, Group: p.Group, ClientID: p.ClientID, RepositoryID: p.RepositoryID,
		Schedule: p.Schedule, Timezone: p.Timezone, StartAt: p.StartAt, EndAt: p.EndAt,
		Include: orEmpty(p.Include), Exclude: orEmpty(p.Exclude),
		PreCommands: orEmpty(p.PreCommands), PostCommands: orEmpty(p.PostCommands),
		CommandTimeoutSeconds: int(p.CommandTimeout / time.Second),
		Retention: Retention{KeepLast: r.KeepLast, KeepHourly: r.KeepHourly, KeepDaily: r.KeepDaily, KeepWeekly: r.KeepWeekly,
			KeepMonthly: r.KeepMonthly, KeepYearly: r.KeepYearly, KeepWithin: formatDuration(r.KeepWithin), HoldDays: r.HoldDays},
		Compression: p.Compression, FullEvery: p.FullEvery, OneFileSystem: p.OneFileSystem, Enabled: p.Enabled,
		CreatedBy: p.CreatedBy, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}
}

// PlanInput is the body of POST /api/v1/plans and PUT /api/v1/plans/{id}.
type PlanInput struct {
	Name                  string          `json:"name" minLength:"1" maxLength:"400" doc:"1 to 100 characters, unique regardless of letter case."`
	Group                 string          `json:"group,omitempty" maxLength:"400" doc:"Up to 100 characters."`
	ClientID              string          `json:"client_id" minLength:"1" maxLength:"64"`
	RepositoryID          string          `json:"repository_id,omitempty" maxLength:"64" doc:"Empty for the server's default repository; otherwise the id of a repository (GET /api/v1/repositories)."`
	Schedule              string          `json:"schedule,omitempty" maxLength:"256" doc:"Cron expression: Quartz style with seconds and ? (0 0 2 * * ?), standard 5-field, or @daily, @hourly, @every 6h…; empty to run only by hand."`
	Timezone              string          `json:"timezone,omitempty" maxLength:"64" doc:"IANA time zone of the schedule, e.g. Europe/Berlin; empty for UTC."`
	StartAt               *time.Time      `json:"start_at,omitempty" doc:"The schedule fires no earlier than this."`
	EndAt                 *time.Time      `json:"end_at,omitempty" doc:"The schedule fires no later than this; after start_at."`
	Include               []string        `json:"include" minItems:"1" maxItems:"1000" doc:"Absolute, clean paths on the client."`
	Exclude               []string        `json:"exclude,omitempty" maxItems:"10000" doc:"Gitignore-style patterns, each up to 4096 bytes."`
	PreCommands           []string        `json:"pre_commands,omitempty" maxItems:"20" doc:"Setting or changing them requires the manage permission (403 commands_need_admin); send them back unchanged to edit the rest."`
	PostCommands          []string        `json:"post_commands,omitempty" maxItems:"20" doc:"As pre_commands."`
	CommandTimeoutSeconds int             `json:"command_timeout_seconds,omitempty" minimum:"0" maximum:"86400" doc:"How long each command may run, in seconds; 0 or omitted = the server's default (10 minutes). Like the commands, only admins may set or change it."`
	Retention             *RetentionInput `json:"retention,omitempty"`
	Compression           string          `json:"compression,omitempty" enum:"off,fastest,default,better,best" doc:"Default fastest."`
	FullEvery             int             `json:"full_every,omitempty" minimum:"0"`
	OneFileSystem         bool            `json:"one_file_system,omitempty"`
	Enabled               *bool           `json:"enabled,omitempty" doc:"Default true on create; unchanged when omitted on update."`
}

func (in *PlanInput) spec() (plans.Spec, error) {
	s := plans.Spec{Name: in.Name, Group: in.Group, ClientID: in.ClientID, RepositoryID: in.RepositoryID,
		Schedule: in.Schedule, Timezone: in.Timezone, StartAt: in.StartAt, EndAt: in.EndAt, Include: in.Include,
		Exclude: in.Exclude, PreCommands: in.PreCommands, PostCommands: in.PostCommands, Compression: in.Compression,
		CommandTimeout: time.Duration(in.CommandTimeoutSeconds) * time.Second,
		FullEvery:      in.FullEvery, OneFileSystem: in.OneFileSystem, Enabled: in.Enabled}
	if r := in.Retention; r != nil {
		s.Retention = coffer.Retention{KeepLast: r.KeepLast, KeepHourly: r.KeepHourly, KeepDaily: r.KeepDaily,
			KeepWeekly: r.KeepWeekly, KeepMonthly: r.KeepMonthly, KeepYearly: r.KeepYearly, HoldDays: r.HoldDays}
		if r.KeepWithin != "" {
			d, err := time.ParseDuration(r.KeepWithin)
			if err != nil {
				return s, coffer.Errorf(coffer.KindInvalid, "invalid_retention",
					"retention keep_within %q is not a duration like 720h or 168h30m", r.KeepWithin).
					With("field", "body.retention.keep_within")
			}
			s.Retention.KeepWithin = d
		}
	}
	return s, nil
}

// planOut is the single-resource envelope of a plan.
type planOut struct {
	Body struct {
		Plan Plan `json:"plan"`
	}
}

func newPlanOut(p *coffer.Plan) *planOut {
	out := &planOut{}
	out.Body.Plan = toPlan(p)
	return out
}

func (s *Server) registerPlans() {
	if s.opts.Plans == nil {
		return
	}
	tags := []string{"plans"}
	svc := s.opts.Plans

	type listIn struct {
		OffsetParams
		ClientID string `query:"client_id" maxLength:"64" doc:"Only this client's plans."`
		Group    string `query:"group" maxLength:"400" doc:"Only plans in this group (exact)."`
		Enabled  string `query:"enabled" enum:"true,false" doc:"Only enabled (true) or disabled (false) plans."`
		Name     string `query:"name" maxLength:"400" doc:"Only plans whose name contains this, in any letter case."`
	}
	handle(s, Read, huma.Operation{
		OperationID: "list-plans", Method: http.MethodGet, Path: "/api/v1/plans", Tags: tags,
		Summary: "List plans", Description: "Plans ordered by name, offset-paginated.",
	}, func(ctx context.Context, in *listIn) (*struct{ Body *Page[Plan] }, error) {
		f := metadb.PlanFilter{ClientID: in.ClientID, Group: in.Group, Name: in.Name, Offset: in.offset(), Limit: in.PageSize}
		if in.Enabled != "" {
			e := in.Enabled == "true"
			f.Enabled = &e
		}
		ps, total, err := svc.List(ctx, f)
		if err != nil {
			return nil, err
		}
		items := make([]Plan, len(ps))
		for i := range ps {
			items[i] = toPlan(&ps[i])
		}
		if err := s.addFirings(ctx, items); err != nil {
			return nil, err
		}
		return &struct{ Body *Page[Plan] }{offsetPage(items, in.OffsetParams, total)}, nil
	})

	type createIn struct {
		Body PlanInput
	}
	handle(s, Operate, huma.Operation{
		OperationID: "create-plan", Method: http.MethodPost, Path: "/api/v1/plans", Tags: tags,
		Summary: "Create a plan",
		Description: "Validates and stores a plan. An invalid schedule is 400 invalid_schedule naming the cron field " +
			"(metadata.schedule_field) and why; an unknown client is 404 client_not_found; an unknown repository_id is " +
			"400 unknown_repository. Only admins may set commands.",
		DefaultStatus: http.StatusCreated, Errors: []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *createIn) (*planOut, error) {
		spec, err := in.Body.spec()
		if err != nil {
			return nil, err
		}
		p, err := svc.Create(ctx, principalFrom(ctx), spec)
		if err != nil {
			return nil, err
		}
		return newPlanOut(p), nil
	})

	type idIn struct {
		ID string `path:"id" maxLength:"64"`
	}
	handle(s, Read, huma.Operation{
		OperationID: "get-plan", Method: http.MethodGet, Path: "/api/v1/plans/{id}", Tags: tags,
		Summary: "Get a plan", Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *idIn) (*planOut, error) {
		p, err := svc.Get(ctx, in.ID)
		if err != nil {
			return nil, err
		}
		items := []Plan{toPlan(p)}
		if err := s.addFirings(ctx, items); err != nil {
			return nil, err
		}
		out := &planOut{}
		out.Body.Plan = items[0]
		return out, nil
	})

	type updateIn struct {
		ID   string `path:"id" maxLength:"64"`
		Body PlanInput
	}
	handle(s, Operate, huma.Operation{
		OperationID: "update-plan", Method: http.MethodPut, Path: "/api/v1/plans/{id}", Tags: tags,
		Summary: "Replace a plan",
		Description: "Replaces the plan (its id, author and creation time stay); omitted optional fields take their " +
			"defaults, except enabled, which stays. Changing pre_commands or post_commands requires the manage " +
			"permission; send them back unchanged to edit the rest.",
		Errors: []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *updateIn) (*planOut, error) {
		spec, err := in.Body.spec()
		if err != nil {
			return nil, err
		}
		p, err := svc.Update(ctx, principalFrom(ctx), in.ID, spec)
		if err != nil {
			return nil, err
		}
		return newPlanOut(p), nil
	})

	handle(s, Operate, huma.Operation{
		OperationID: "delete-plan", Method: http.MethodDelete, Path: "/api/v1/plans/{id}", Tags: tags,
		Summary: "Delete a plan", Description: "Deletes the plan. Its backups stay until they are forgotten.",
		Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *idIn) (*struct{ Body CommandResult }, error) {
		p, err := svc.Delete(ctx, principalFrom(ctx), in.ID)
		if err != nil {
			return nil, err
		}
		return &struct{ Body CommandResult }{CommandResult{Message: "Plan deleted; its backups are kept.", Success: true, ID: p.ID}}, nil
	})

	handle(s, Operate, huma.Operation{
		OperationID: "run-plan", Method: http.MethodPost, Path: "/api/v1/plans/{id}/run", Tags: tags,
		Summary: "Run a plan now",
		Description: "Queues a backup of the plan on its client now and sends its agent the command to run it, even " +
			"when the plan is disabled. Its trigger is api for an API token, manual otherwise. A plan runs one backup " +
			"at a time: while one is queued or running this is 409 plan_backup_active (metadata.backup_id names it).",
		DefaultStatus: http.StatusCreated, Errors: []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *idIn) (*backupOut, error) {
		b, err := svc.RunNow(ctx, principalFrom(ctx), in.ID)
		if err != nil {
			return nil, err
		}
		return newBackupOut(b), nil
	})

	type previewIn struct {
		Body struct {
			Schedule string    `json:"schedule" maxLength:"256" doc:"The cron expression, as a plan's schedule takes it."`
			Timezone string    `json:"timezone,omitempty" maxLength:"64" doc:"IANA time zone of the schedule; empty for UTC."`
			Count    int       `json:"count,omitempty" minimum:"0" maximum:"100" doc:"How many fire times (default 5)."`
			From     time.Time `json:"from,omitzero" doc:"Fire times after this instant (RFC 3339); default now."`
		}
	}
	handle(s, Read, huma.Operation{
		OperationID: "preview-schedule", Method: http.MethodPost, Path: "/api/v1/plans/schedule-preview", Tags: tags,
		Summary: "Preview a schedule's fire times",
		Description: "The next fire times of a cron expression not saved in a plan (yet), as the plan form shows them while " +
			"one types. Nothing is stored. A bad expression or time zone gets the error saving a plan with it would: " +
			"400 invalid_schedule (with metadata.schedule_field) or invalid_timezone.",
	}, func(ctx context.Context, in *previewIn) (*fireTimesOut, error) {
		return newFireTimes(svc.PreviewSchedule(in.Body.Schedule, in.Body.Timezone, in.Body.Count, s.nowOr(in.Body.From)))
	})

	type scheduleIn struct {
		ID    string    `path:"id" maxLength:"64"`
		Count int       `query:"count" minimum:"1" maximum:"100" default:"5" doc:"How many fire times."`
		From  time.Time `query:"from" doc:"Fire times after this instant (RFC 3339); default now."`
	}
	handle(s, Read, huma.Operation{
		OperationID: "preview-plan-schedule", Method: http.MethodGet, Path: "/api/v1/plans/{id}/schedule", Tags: tags,
		Summary: "Preview a plan's fire times",
		Description: "The next count times the plan's schedule fires after from, in the plan's time zone. A disabled " +
			"plan's times are those it would fire at once enabled.",
		Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *scheduleIn) (*fireTimesOut, error) {
		return newFireTimes(svc.Preview(ctx, in.ID, in.Count, s.nowOr(in.From)))
	})
}

// fireTimesOut is the answer of the schedule previews: a schedule's next
// fire times and their zone.
type fireTimesOut struct {
	Body struct {
		Timezone string      `json:"timezone" doc:"The IANA time zone the times are in (UTC without one)."`
		Times    []time.Time `json:"times" doc:"The next fire times in ascending order, with that zone's offset (a plan's within its start_at/end_at); empty for a schedule that never fires (run by hand only)."`
	}
}

// newFireTimes wraps a preview's result; no fire time is [], not null.
func newFireTimes(times []time.Time, tz string, err error) (*fireTimesOut, error) {
	if err != nil {
		return nil, err
	}
	out := &fireTimesOut{}
	out.Body.Timezone, out.Body.Times = tz, times
	if times == nil {
		out.Body.Times = []time.Time{}
	}
	return out, nil
}

// nowOr is t, or the server's now when t is zero (a parameter not given).
func (s *Server) nowOr(t time.Time) time.Time {
	if t.IsZero() {
		return s.opts.Now()
	}
	return t
}
