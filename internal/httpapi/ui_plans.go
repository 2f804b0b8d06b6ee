package httpapi

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
)

// The plans pages: a list, a detail page with the next fire times and the
// plan's recent backups, and one form to create and edit a plan. The form's
// helpers are htmx fragments: the schedule's next fire times as it is
// typed, preset schedules, and rows of the include and exclude editors.

const (
	plansPageSize   = 50
	planBackupsShow = 10 // recent backups on a plan's page
	planPreviewN    = 5  // fire times the form and the detail page show
)

// registerUIPlans mounts the plans pages and their fragments.
func (s *Server) registerUIPlans() {
	if s.opts.Plans == nil {
		return
	}
	s.mux.HandleFunc("GET /plans", s.uiPage(coffer.PermRead, s.uiPlans))
	s.mux.HandleFunc("GET /plans/new", s.uiPage(coffer.PermOperate, s.uiPlanNew))
	s.mux.HandleFunc("POST /plans", s.uiPage(coffer.PermOperate, s.uiPlanSave))
	s.mux.HandleFunc("GET /plans/{id}", s.uiPage(coffer.PermRead, s.uiPlan))
	s.mux.HandleFunc("GET /plans/{id}/edit", s.uiPage(coffer.PermOperate, s.uiPlanEdit))
	s.mux.HandleFunc("POST /plans/{id}", s.uiPage(coffer.PermOperate, s.uiPlanSave))
	s.mux.HandleFunc("POST /plans/{id}/run", s.uiPage(coffer.PermOperate, s.uiPlanRun))
	s.mux.HandleFunc("POST /plans/{id}/delete", s.uiPage(coffer.PermOperate, s.uiPlanDelete))
	s.mux.HandleFunc("GET /ui/plans/schedule-preview", s.uiPage(coffer.PermRead, s.uiSchedulePreview))
	s.mux.HandleFunc("GET /ui/plans/schedule-field", s.uiPage(coffer.PermOperate, s.uiScheduleField))
	s.mux.HandleFunc("GET /ui/plans/include-row", s.uiPage(coffer.PermOperate, s.uiIncludeRow))
	s.mux.HandleFunc("GET /ui/plans/exclude-row", s.uiPage(coffer.PermOperate, s.uiExcludeRow))
	s.mux.HandleFunc("GET /ui/plans/browse", s.uiPage(coffer.PermOperate, s.uiPlanBrowse))
}

// planRow is a plan as the list shows it.
type planRow struct {
	Plan
	ClientName, RepoName string
}

// plansData is the plan list's data.
type plansData struct {
	Plans   []planRow
	Clients []clientOption // for the filter
	Client  string         // the client filtered by ("" for all)
	Total   int
	Pager   *uiPager
}

// clientOption is a client in a select.
type clientOption struct{ ID, Name string }

// uiPlans lists plans by name with their scheduler state, optionally of
// one client (?client=), 50 a page (?offset=).
func (s *Server) uiPlans(w http.ResponseWriter, r *http.Request, c *uiContext) {
	ctx := r.Context()
	q := r.URL.Query()
	offset, _ := strconv.Atoi(q.Get("offset"))
	data := &plansData{Client: q.Get("client")}
	ps, total, err := s.opts.Plans.List(ctx, metadb.PlanFilter{ClientID: data.Client, Limit: plansPageSize, Offset: max(offset, 0)})
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	data.Total = total
	items := make([]Plan, len(ps))
	for i := range ps {
		items[i] = toPlan(&ps[i])
	}
	if err := s.addFirings(ctx, items); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	clients, err := s.clientOptions(ctx, nil)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	data.Clients = clients
	names := map[string]string{}
	for _, o := range clients {
		names[o.ID] = o.Name
	}
	repos, err := s.repoNames(ctx)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	for _, p := range items {
		data.Plans = append(data.Plans, planRow{Plan: p, ClientName: cmp.Or(names[p.ClientID], p.ClientID),
			RepoName: cmp.Or(repos[p.RepositoryID], p.RepositoryID)})
	}
	data.Pager = offsetPager(r.URL, offset, len(ps), total)
	s.render(w, r, http.StatusOK, "plans", c.view("Plans", "plans", data))
}

// offsetPager links the first and the next page of an offset-paged list.
func offsetPager(u *url.URL, offset, shown, total int) *uiPager {
	p := &uiPager{}
	base := u.RequestURI()
	if offset > 0 {
		p.First, _ = withQuery(base, "offset", "")
	}
	if offset+shown < total {
		p.Next, _ = withQuery(base, "offset", strconv.Itoa(offset+shown))
	}
	return p
}

// clientOptions lists clients by name: those p may operate, or every
// client when p is nil. A server without the agents service has none.
func (s *Server) clientOptions(ctx context.Context, p *coffer.Principal) ([]clientOption, error) {
	if s.opts.Agents == nil {
		return nil, nil
	}
	f := metadb.ClientFilter{}
	if p != nil && !p.Can(coffer.PermManage) {
		if !p.Can(coffer.PermOperate) {
			return nil, nil
		}
		f.OwnerID = p.UserID
	}
	cs, _, err := s.opts.Agents.ListClients(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([]clientOption, 0, len(cs))
	for i := range cs {
		if p == nil || p.MayOperate(&cs[i]) == nil {
			out = append(out, clientOption{ID: cs[i].ID, Name: cs[i].Name})
		}
	}
	return out, nil
}

// repoOption is a repository in a select.
type repoOption struct{ ID, Name string }

// repoOptions lists the repositories a plan may name; none without the
// storage service (then only the server's default exists).
func (s *Server) repoOptions(ctx context.Context) ([]repoOption, error) {
	if s.opts.Storage == nil {
		return nil, nil
	}
	rs, _, err := s.opts.Storage.ListRepositories(ctx, metadb.RepositoryFilter{})
	if err != nil {
		return nil, err
	}
	out := make([]repoOption, len(rs))
	for i := range rs {
		out[i] = repoOption{ID: rs[i].ID, Name: rs[i].Name}
	}
	return out, nil
}

// repoNames maps repository ids to names.
func (s *Server) repoNames(ctx context.Context) (map[string]string, error) {
	opts, err := s.repoOptions(ctx)
	names := map[string]string{}
	for _, o := range opts {
		names[o.ID] = o.Name
	}
	return names, err
}

// planDetail is a plan's page data.
type planDetail struct {
	Plan       Plan
	Client     *coffer.Client // nil when it was deleted
	RepoName   string
	Next       []time.Time
	Timezone   string
	Firing     *coffer.PlanFiring
	Backups    []planBackup
	MayOperate bool
	Alert      *planAlert
}

// planBackup is one of a plan's recent backups.
type planBackup struct {
	Job     *jobView
	Created time.Time
	Trigger coffer.BackupTrigger
}

// planAlert is a message at the top of a plan page, with an optional link.
type planAlert struct{ Message, Href, Link string }

// uiPlan shows a plan: its settings, next runs and recent backups.
func (s *Server) uiPlan(w http.ResponseWriter, r *http.Request, c *uiContext) {
	s.renderPlan(w, r, c, http.StatusOK, r.PathValue("id"), nil)
}

// renderPlan renders plan id's page with status and alert.
func (s *Server) renderPlan(w http.ResponseWriter, r *http.Request, c *uiContext, status int, id string, alert *planAlert) {
	ctx := r.Context()
	pl, err := s.opts.Plans.Get(ctx, id)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	d := &planDetail{Plan: toPlan(pl), Alert: alert}
	if d.Client, err = s.planClient(ctx, pl.ClientID); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	d.MayOperate = c.p.MayOperate(cmp.Or(d.Client, &coffer.Client{ID: pl.ClientID})) == nil
	repos, err := s.repoNames(ctx)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	d.RepoName = cmp.Or(repos[pl.RepositoryID], pl.RepositoryID)
	if d.Next, d.Timezone, err = s.opts.Plans.Preview(ctx, id, planPreviewN, s.opts.Now()); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	if s.opts.PlanFirings != nil {
		fs, err := s.opts.PlanFirings.PlanFirings(ctx, []string{id})
		if err != nil {
			s.uiFail(w, r, c, err)
			return
		}
		if f, ok := fs[id]; ok {
			d.Firing = &f
		}
	}
	if s.opts.Backups != nil {
		bs, err := s.opts.Backups.List(ctx, metadb.BackupFilter{PlanID: id, Limit: planBackupsShow})
		if err != nil {
			s.uiFail(w, r, c, err)
			return
		}
		for i := range bs {
			d.Backups = append(d.Backups, planBackup{Job: backupJob(&bs[i]), Created: bs[i].CreatedAt, Trigger: bs[i].Trigger})
		}
	}
	v := c.view(pl.Name, "plans", d)
	if v.Live, err = s.uiLive(ctx); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.render(w, r, status, "plan", v)
}

// planClient returns client id, or nil when it no longer exists.
func (s *Server) planClient(ctx context.Context, id string) (*coffer.Client, error) {
	if s.opts.Agents == nil {
		return nil, nil
	}
	cl, err := s.opts.Agents.GetClient(ctx, id)
	if coffer.IsKind(err, coffer.KindNotFound) {
		return nil, nil
	}
	return cl, err
}

// mayOperatePlan checks that c may act on pl's client; a deleted client's
// plans are for admins only, as the plans service has it.
func (s *Server) mayOperatePlan(ctx context.Context, c *uiContext, pl *coffer.Plan) error {
	cl, err := s.planClient(ctx, pl.ClientID)
	if err != nil {
		return err
	}
	return c.p.MayOperate(cmp.Or(cl, &coffer.Client{ID: pl.ClientID, Name: pl.ClientID}))
}

// uiPlanRun starts a backup of the plan now and goes to it. A plan runs
// one backup at a time: while one is active, the plan page says so.
func (s *Server) uiPlanRun(w http.ResponseWriter, r *http.Request, c *uiContext) {
	id := r.PathValue("id")
	b, err := s.opts.Plans.RunNow(r.Context(), c.p, id)
	var ce *coffer.Error
	if errors.As(err, &ce) && ce.Code == "plan_backup_active" {
		alert := &planAlert{Message: "This plan already has a backup queued or running, and a plan runs one backup at a time. " +
			"Wait for it to finish, or cancel it, then run the plan again."}
		if bid, ok := ce.Meta["backup_id"].(string); ok && bid != "" {
			alert.Href, alert.Link = "/backups/"+bid, "Open the running backup"
		}
		s.renderPlan(w, r, c, http.StatusConflict, id, alert)
		return
	}
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.uiDone(w, r, "/backups/"+b.ID, "Backup queued; it starts when the client's agent picks it up.")
}

// uiPlanDelete deletes the plan; its backups stay.
func (s *Server) uiPlanDelete(w http.ResponseWriter, r *http.Request, c *uiContext) {
	pl, err := s.opts.Plans.Delete(r.Context(), c.p, r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.uiDone(w, r, "/plans", "Plan “"+pl.Name+"” deleted; its backups are kept until they are forgotten.")
}

// schedulePreview is the next fire times of a schedule being typed, or
// why it is not valid.
type schedulePreview struct {
	Times    []time.Time
	Timezone string
	Manual   bool   // no schedule: the plan runs only by hand
	Error    string // for the schedule field
	TZError  string // for the timezone field
}

// previewSchedule computes the next fire times of a schedule as typed.
func (s *Server) previewSchedule(expr, tz string) *schedulePreview {
	times, zone, err := s.opts.Plans.PreviewSchedule(expr, tz, planPreviewN, s.opts.Now())
	p := &schedulePreview{Times: times, Timezone: zone, Manual: strings.TrimSpace(expr) == ""}
	var ce *coffer.Error
	switch {
	case err == nil:
	case errors.As(err, &ce) && ce.Code == "invalid_timezone":
		p.TZError = sentence(ce.Detail)
	case errors.As(err, &ce):
		p.Error = sentence(ce.Detail)
	default:
		p.Error = "The schedule could not be checked."
	}
	return p
}

// uiSchedulePreview is the inside of #schedule-preview for the schedule
// and time zone as typed (?schedule=, ?timezone=).
func (s *Server) uiSchedulePreview(w http.ResponseWriter, r *http.Request, c *uiContext) {
	q := r.URL.Query()
	s.renderFragment(w, r, http.StatusOK, "plan_schedule_preview", s.previewSchedule(q.Get("schedule"), q.Get("timezone")))
}

// scheduleField is the schedule and time zone inputs with the presets and
// the preview, which a preset re-renders as one.
type scheduleField struct {
	Value, Timezone string
	Presets         []schedulePreset
	Preview         *schedulePreview
}

// schedulePreset is a common schedule the form offers with one click.
type schedulePreset struct{ Label, Expr string }

var schedulePresets = []schedulePreset{
	{Label: "Every night at 02:00", Expr: "0 0 2 * * ?"},
	{Label: "Every hour", Expr: "0 0 * * * ?"},
	{Label: "Every 6 hours", Expr: "0 0 */6 * * ?"},
	{Label: "Weekly, Sunday at 03:00", Expr: "0 0 3 ? * SUN"},
}

// newScheduleField previews expr in tz; errs are the form's errors, whose
// schedule and timezone messages the preview shows when it has none.
func (s *Server) newScheduleField(expr, tz string, errs map[string]string) *scheduleField {
	f := &scheduleField{Value: expr, Timezone: tz, Presets: schedulePresets, Preview: s.previewSchedule(expr, tz)}
	f.Preview.Error = cmp.Or(f.Preview.Error, errs["schedule"])
	f.Preview.TZError = cmp.Or(f.Preview.TZError, errs["timezone"])
	return f
}

// uiScheduleField re-renders the schedule field with a preset
// (?schedule=) and its preview.
func (s *Server) uiScheduleField(w http.ResponseWriter, r *http.Request, c *uiContext) {
	q := r.URL.Query()
	s.renderFragment(w, r, http.StatusOK, "plan_schedule_field", s.newScheduleField(q.Get("schedule"), q.Get("timezone"), nil))
}

// listRow is one row of the include or exclude editor.
type listRow struct {
	Kind  string // "include" or "exclude": the input's name
	Value string
	Error string
	ErrID string // the error's element id, unique on the page
}

// newListRow is a row of kind with value and, when problem is not empty,
// that problem as its error.
func newListRow(kind, value, problem string) listRow {
	row := listRow{Kind: kind, Value: value}
	if problem != "" {
		row.Error = sentence(problem)
		row.ErrID = kind + "-error-" + strings.ToLower(rand.Text()[:10])
	}
	return row
}

// includeRow is an include editor row, checked as the plans service does.
func includeRow(p string) listRow {
	why := coffer.PathProblem(p)
	if why != "" {
		why = "this path " + why + "; use an absolute path such as /home or /etc"
	}
	return newListRow("include", p, why)
}

// excludeRow is an exclude editor row, checked as the plans service does.
func excludeRow(p string) listRow {
	why := coffer.ExcludeProblem(p)
	if why != "" {
		why = "this pattern " + why
	}
	return newListRow("exclude", p, why)
}

// uiIncludeRow is one include row for ?path=, with its problem if any.
func (s *Server) uiIncludeRow(w http.ResponseWriter, r *http.Request, c *uiContext) {
	s.renderFragment(w, r, http.StatusOK, "plan_list_row", includeRow(r.URL.Query().Get("path")))
}

// uiExcludeRow is one exclude row for ?pattern=, with its problem if any.
func (s *Server) uiExcludeRow(w http.ResponseWriter, r *http.Request, c *uiContext) {
	s.renderFragment(w, r, http.StatusOK, "plan_list_row", excludeRow(r.URL.Query().Get("pattern")))
}

// uiPlanBrowse sends the form's file browser to the live file listing of
// the client selected in the form (the clients pages serve it); htmx
// follows the redirect and swaps the listing in.
func (s *Server) uiPlanBrowse(w http.ResponseWriter, r *http.Request, c *uiContext) {
	id := r.URL.Query().Get("client_id")
	if id == "" || len(id) > 64 || strings.ContainsAny(id, "/?#%") {
		s.uiError(w, r, c, http.StatusBadRequest, "No client", "Choose the client whose files to browse first.")
		return
	}
	redirect(w, "/ui/clients/"+url.PathEscape(id)+"/files?pick=1&path=/")
}
