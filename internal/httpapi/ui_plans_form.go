package httpapi

import (
	"cmp"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/server/plans"
)

// planForm is the plan form's input, kept as typed so that a form with an
// error comes back with everything in it.
type planForm struct {
	ID                                    string // "" for a new plan
	Name, Group, ClientID, RepositoryID   string
	Schedule, Timezone, StartAt, EndAt    string
	Include, Exclude                      []listRow
	OneFileSystem, Enabled                bool
	FullEvery, Compression                string
	Retention                             map[string]string // retentionFields key → value
	PreCommands, PostCommands, CmdTimeout string
}

// retentionField is one rule of the retention fieldset.
type retentionField struct {
	Key, Label, Hint string
	Number           bool
}

// ID is the field's element id.
func (f retentionField) ID() string { return "plan-" + strings.ReplaceAll(f.Key, "_", "-") }

var retentionFields = []retentionField{
	{Key: "keep_last", Label: "Keep the last", Hint: "Newest successful backups kept.", Number: true},
	{Key: "keep_hourly", Label: "Hourly", Hint: "Hours that keep their newest backup.", Number: true},
	{Key: "keep_daily", Label: "Daily", Hint: "Days, in the schedule's time zone.", Number: true},
	{Key: "keep_weekly", Label: "Weekly", Hint: "ISO weeks.", Number: true},
	{Key: "keep_monthly", Label: "Monthly", Hint: "Months.", Number: true},
	{Key: "keep_yearly", Label: "Yearly", Hint: "Years.", Number: true},
	{Key: "keep_within", Label: "Keep everything within", Hint: "A duration such as 720h (30 days); empty for none."},
	{Key: "hold_days", Label: "Hold every backup for", Hint: "Days after it finished, failed or not.", Number: true},
}

// planFormData is the plan form page's data.
type planFormData struct {
	Form         planForm
	Errors       map[string]string // form field → message
	Alert        string
	Clients      []clientOption
	Repos        []repoOption // shown as a select when there is more than one
	Compressions []string
	Retention    []retentionField
	Schedule     *scheduleField
}

// dateTimeLocal is the format of <input type="datetime-local">.
const dateTimeLocal = "2006-01-02T15:04"

// uiPlanNew shows an empty plan form, for the client ?client= if given.
func (s *Server) uiPlanNew(w http.ResponseWriter, r *http.Request, c *uiContext) {
	f := planForm{Enabled: true, Compression: plans.DefaultCompression, ClientID: r.URL.Query().Get("client"),
		Retention: map[string]string{}}
	s.renderPlanForm(w, r, c, http.StatusOK, &f, nil, "")
}

// uiPlanEdit shows the form filled with a plan the user may change.
func (s *Server) uiPlanEdit(w http.ResponseWriter, r *http.Request, c *uiContext) {
	pl, err := s.opts.Plans.Get(r.Context(), r.PathValue("id"))
	if err == nil {
		err = s.mayOperatePlan(r.Context(), c, pl)
	}
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.renderPlanForm(w, r, c, http.StatusOK, planFormOf(pl), nil, "")
}

// planFormOf fills the form with a stored plan.
func planFormOf(pl *coffer.Plan) *planForm {
	rt := pl.Retention
	f := &planForm{ID: pl.ID, Name: pl.Name, Group: pl.Group, ClientID: pl.ClientID, RepositoryID: pl.RepositoryID,
		Schedule: pl.Schedule, Timezone: pl.Timezone, OneFileSystem: pl.OneFileSystem, Enabled: pl.Enabled,
		FullEvery: strconv.Itoa(pl.FullEvery), Compression: pl.Compression,
		PreCommands: strings.Join(pl.PreCommands, "\n"), PostCommands: strings.Join(pl.PostCommands, "\n"),
		Retention: map[string]string{"keep_last": strconv.Itoa(rt.KeepLast), "keep_hourly": strconv.Itoa(rt.KeepHourly),
			"keep_daily": strconv.Itoa(rt.KeepDaily), "keep_weekly": strconv.Itoa(rt.KeepWeekly),
			"keep_monthly": strconv.Itoa(rt.KeepMonthly), "keep_yearly": strconv.Itoa(rt.KeepYearly),
			"hold_days": strconv.Itoa(rt.HoldDays)}}
	if rt.KeepWithin != 0 {
		f.Retention["keep_within"] = formatDuration(rt.KeepWithin)
	}
	if pl.CommandTimeout != 0 {
		f.CmdTimeout = strconv.Itoa(int(pl.CommandTimeout / time.Second))
	}
	loc, err := time.LoadLocation(pl.Timezone)
	if err != nil {
		loc = time.UTC
	}
	if pl.StartAt != nil {
		f.StartAt = pl.StartAt.In(loc).Format(dateTimeLocal)
	}
	if pl.EndAt != nil {
		f.EndAt = pl.EndAt.In(loc).Format(dateTimeLocal)
	}
	for _, p := range pl.Include {
		f.Include = append(f.Include, listRow{Kind: "include", Value: p})
	}
	for _, p := range pl.Exclude {
		f.Exclude = append(f.Exclude, listRow{Kind: "exclude", Value: p})
	}
	return f
}

// renderPlanForm renders the plan form f with its field errors and alert,
// offering only the clients the user may operate.
func (s *Server) renderPlanForm(w http.ResponseWriter, r *http.Request, c *uiContext, status int, f *planForm,
	errs map[string]string, alert string) {
	ctx := r.Context()
	d := &planFormData{Form: *f, Errors: errs, Alert: alert, Compressions: plans.Compressions, Retention: retentionFields}
	var err error
	if d.Clients, err = s.clientOptions(ctx, c.p); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	if f.ClientID != "" && !slices.ContainsFunc(d.Clients, func(o clientOption) bool { return o.ID == f.ClientID }) {
		if f.ID != "" { // a plan's client the user may not pick anew (deleted, say) stays selectable
			d.Clients = append(d.Clients, clientOption{ID: f.ClientID, Name: f.ClientID})
		} else {
			d.Form.ClientID = ""
		}
	}
	if d.Repos, err = s.repoOptions(ctx); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	d.Schedule = s.newScheduleField(f.Schedule, f.Timezone, errs)
	if d.Errors == nil {
		d.Errors = map[string]string{}
	}
	title := "New plan"
	if f.ID != "" {
		title = "Edit " + f.Name
	}
	s.render(w, r, status, "plan_form", c.view(title, "plans", d))
}

// uiPlanSave creates a plan (POST /plans) or replaces one (POST
// /plans/{id}) from the form. Input problems show next to their fields,
// with the form as typed.
func (s *Server) uiPlanSave(w http.ResponseWriter, r *http.Request, c *uiContext) {
	ctx := r.Context()
	id := r.PathValue("id")
	var old *coffer.Plan
	if id != "" {
		var err error
		if old, err = s.opts.Plans.Get(ctx, id); err == nil {
			err = s.mayOperatePlan(ctx, c, old)
		}
		if err != nil {
			s.uiFail(w, r, c, err)
			return
		}
	}
	if r.PostForm == nil {
		r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	}
	if err := r.ParseForm(); err != nil {
		s.uiError(w, r, c, http.StatusBadRequest, "Bad form", "The form could not be read. Reload the page and try again.")
		return
	}
	f, spec, errs := readPlanForm(r, old, c.p.Can(coffer.PermManage))
	f.ID = id
	if len(errs) > 0 || rowErrors(f) {
		s.renderPlanForm(w, r, c, http.StatusBadRequest, f, errs, "Some fields need fixing; see the messages next to them.")
		return
	}
	var pl *coffer.Plan
	var err error
	if id == "" {
		pl, err = s.opts.Plans.Create(ctx, c.p, spec)
	} else {
		pl, err = s.opts.Plans.Update(ctx, c.p, id, spec)
	}
	if err != nil {
		s.planFormFailed(w, r, c, f, err)
		return
	}
	s.uiDone(w, r, "/plans/"+pl.ID, "Plan “"+pl.Name+"” saved.")
}

// planFormFailed shows a service's refusal on the form: next to the field
// it names, or at the top.
func (s *Server) planFormFailed(w http.ResponseWriter, r *http.Request, c *uiContext, f *planForm, err error) {
	e := toAPIError(r.Context(), http.StatusInternalServerError, "", err)
	msg := sentence(e.Detail)
	if e.status >= 500 {
		s.uiFail(w, r, c, err)
		return
	}
	var field string
	var index int
	var hasIndex bool
	if ce := (*coffer.Error)(nil); errors.As(err, &ce) {
		field, _ = ce.Meta["field"].(string)
		field = strings.TrimPrefix(strings.TrimPrefix(field, "body."), "retention.")
		index, hasIndex = ce.Meta["index"].(int)
		field = cmp.Or(field, planCodeFields[ce.Code])
	}
	switch {
	case (field == "include" || field == "exclude") && hasIndex && index < len(rowsOf(f, field)):
		rows := rowsOf(f, field)
		rows[index] = newListRow(field, rows[index].Value, e.Detail)
		s.renderPlanForm(w, r, c, e.status, f, nil, "")
	case planFormFields[field]:
		s.renderPlanForm(w, r, c, e.status, f, map[string]string{field: msg}, "")
	default:
		s.renderPlanForm(w, r, c, e.status, f, nil, msg)
	}
}

// planCodeFields are the fields of service errors that name none.
var planCodeFields = map[string]string{"plan_name_taken": "name", "client_not_owned": "client_id"}

// planFormFields are the fields a service error may name that the form
// shows errors next to.
var planFormFields = map[string]bool{"name": true, "group": true, "client_id": true, "repository_id": true,
	"schedule": true, "timezone": true, "start_at": true, "end_at": true, "include": true, "exclude": true,
	"pre_commands": true, "post_commands": true, "command_timeout_seconds": true, "compression": true,
	"full_every": true, "keep_last": true, "keep_hourly": true, "keep_daily": true, "keep_weekly": true,
	"keep_monthly": true, "keep_yearly": true, "keep_within": true, "hold_days": true}

// rowsOf returns f's include or exclude rows.
func rowsOf(f *planForm, kind string) []listRow {
	if kind == "include" {
		return f.Include
	}
	return f.Exclude
}

// rowErrors reports whether a row of f has an error.
func rowErrors(f *planForm) bool {
	return slices.ContainsFunc(f.Include, func(r listRow) bool { return r.Error != "" }) ||
		slices.ContainsFunc(f.Exclude, func(r listRow) bool { return r.Error != "" })
}

// readPlanForm reads the posted form into what it shows and the spec it
// means, with the problems it can tell without the service. Commands come
// from the form only for admins, or when a forged form sends them (the
// service then refuses a change); otherwise they stay as old has them, so
// that an operator can edit a plan whose commands an admin set.
func readPlanForm(r *http.Request, old *coffer.Plan, admin bool) (*planForm, plans.Spec, map[string]string) {
	v := r.PostForm
	f := &planForm{Name: v.Get("name"), Group: v.Get("group"), ClientID: v.Get("client_id"),
		RepositoryID: v.Get("repository_id"), Schedule: v.Get("schedule"), Timezone: strings.TrimSpace(v.Get("timezone")),
		StartAt: v.Get("start_at"), EndAt: v.Get("end_at"), OneFileSystem: v.Get("one_file_system") != "",
		Enabled: v.Get("enabled") != "", FullEvery: v.Get("full_every"), Compression: v.Get("compression"),
		PreCommands: v.Get("pre_commands"), PostCommands: v.Get("post_commands"), CmdTimeout: v.Get("command_timeout"),
		Retention: map[string]string{}}
	errs := map[string]string{}
	spec := plans.Spec{Name: f.Name, Group: f.Group, ClientID: f.ClientID, RepositoryID: f.RepositoryID,
		Schedule: f.Schedule, Timezone: f.Timezone, OneFileSystem: f.OneFileSystem, Enabled: &f.Enabled,
		Compression: f.Compression}
	for _, p := range v["include"] {
		if strings.TrimSpace(p) != "" {
			f.Include = append(f.Include, includeRow(p))
			spec.Include = append(spec.Include, p)
		}
	}
	for _, p := range v["exclude"] {
		if p != "" {
			f.Exclude = append(f.Exclude, excludeRow(p))
			spec.Exclude = append(spec.Exclude, p)
		}
	}
	spec.FullEvery = formInt(f.FullEvery, "full_every", errs)
	readRetention(v, f, &spec, errs)
	loc, err := time.LoadLocation(f.Timezone)
	if err != nil || f.Timezone == "Local" {
		loc = time.UTC // the service names the bad zone
	}
	spec.StartAt = formTime(f.StartAt, loc, "start_at", errs)
	spec.EndAt = formTime(f.EndAt, loc, "end_at", errs)
	_, pre := v["pre_commands"]
	_, post := v["post_commands"]
	_, timeout := v["command_timeout"]
	switch {
	case admin || pre || post || timeout:
		spec.PreCommands, spec.PostCommands = lines(f.PreCommands), lines(f.PostCommands)
		spec.CommandTimeout = time.Duration(formInt(f.CmdTimeout, "command_timeout_seconds", errs)) * time.Second
	case old != nil:
		spec.PreCommands, spec.PostCommands, spec.CommandTimeout = old.PreCommands, old.PostCommands, old.CommandTimeout
	}
	return f, spec, errs
}

// readRetention reads the retention fields into f and spec.
func readRetention(v map[string][]string, f *planForm, spec *plans.Spec, errs map[string]string) {
	for _, rf := range retentionFields {
		if vs := v[rf.Key]; len(vs) > 0 {
			f.Retention[rf.Key] = vs[0]
		}
	}
	rt := &spec.Retention
	for key, dst := range map[string]*int{"keep_last": &rt.KeepLast, "keep_hourly": &rt.KeepHourly,
		"keep_daily": &rt.KeepDaily, "keep_weekly": &rt.KeepWeekly, "keep_monthly": &rt.KeepMonthly,
		"keep_yearly": &rt.KeepYearly, "hold_days": &rt.HoldDays} {
		*dst = formInt(f.Retention[key], key, errs)
	}
	if s := strings.TrimSpace(f.Retention["keep_within"]); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			errs["keep_within"] = "Enter a duration such as 720h (30 days) or 168h30m, or leave it empty."
		}
		rt.KeepWithin = d
	}
}

// formInt reads a whole number field; empty is 0.
func formInt(s, field string, errs map[string]string) int {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		errs[field] = "Enter a whole number such as 0 or 7."
	}
	return n
}

// formTime reads a datetime-local field in loc; empty is none.
func formTime(s string, loc *time.Location, field string, errs map[string]string) *time.Time {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	for _, layout := range []string{dateTimeLocal, dateTimeLocal + ":05"} {
		if t, err := time.ParseInLocation(layout, strings.TrimSpace(s), loc); err == nil {
			return &t
		}
	}
	errs[field] = "Enter a date and time such as 2026-01-31T02:00, or leave it empty."
	return nil
}

// lines splits a textarea into its non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}
