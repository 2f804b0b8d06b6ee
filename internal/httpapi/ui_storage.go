package httpapi

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/server/storage"
)

// The storage pages show endpoints and repositories to everyone who may
// read (as the API's storage routes do) and their forms, verifies and
// garbage collections to admins. Credentials never appear on any of them:
// a repository shows only whether it has some, and its form takes new ones
// in write-only fields.

// storageData is the storage page's data.
type storageData struct {
	Endpoints    []endpointRow
	Repositories []repositoryRow
	// Unsampled is set when some repository has no usage sample yet.
	Unsampled bool
}

// endpointRow is an endpoint with the number of repositories on it.
type endpointRow struct {
	coffer.Endpoint
	Repositories int
}

// Address is the endpoint's URL with its scheme.
func (e *endpointRow) Address() string { return endpointAddress(&e.Endpoint) }

func endpointAddress(e *coffer.Endpoint) string {
	if e.HTTPS {
		return "https://" + e.URL
	}
	return "http://" + e.URL
}

// repositoryRow is a repository as the storage page lists it. Its stored
// bytes are live (one aggregate of the index for all repositories); its
// logical bytes and deduplication ratio come from its newest hourly usage
// sample, since computing them reads every blob and snapshot of the
// repository: the repository's own page does that.
type repositoryRow struct {
	Repo     *coffer.Repository
	Location string
	Stored   int64
	// Sample is the newest usage sample, nil before the first; AsOf says
	// when it was taken, for people.
	Sample  *metadb.UsageSample
	AsOf    string
	Running int // verifies and GCs running now
}

// Quota is the repository's quota against its stored bytes; nil without
// a quota.
func (r *repositoryRow) Quota() *quotaView { return newQuota(r.Stored, r.Repo.QuotaBytes) }

// DedupRatio is the sample's logical bytes per byte of its blobs, as
// repository.Usage has it (0 without a sample or blobs).
func (r *repositoryRow) DedupRatio() float64 {
	if r.Sample == nil || r.Sample.BlobBytes <= 0 {
		return 0
	}
	return float64(r.Sample.LogicalBytes) / float64(r.Sample.BlobBytes)
}

// asOf says when a sample taken at t was, in UTC: the time of day when it
// was today, with the date otherwise.
func asOf(t, now time.Time) string {
	t, now = t.UTC(), now.UTC()
	if t.YearDay() == now.YearDay() && t.Year() == now.Year() {
		return t.Format("15:04 UTC")
	}
	return t.Format("2006-01-02 15:04 UTC")
}

// quotaView is a repository's stored bytes against its quota, for a
// <meter> whose low and high marks are the quota warning levels.
type quotaView struct {
	Used, Quota int64
	Low, High   int
}

func newQuota(used, quota int64) *quotaView {
	if quota <= 0 {
		return nil
	}
	return &quotaView{Used: used, Quota: quota, Low: coffer.QuotaWarnLow, High: coffer.QuotaWarnHigh}
}

// Percent is how much of the quota is used, possibly over 100.
func (q *quotaView) Percent() float64 { return float64(q.Used) * 100 / float64(q.Quota) }

// Meter is the meter's value: the percentage, at most 100.
func (q *quotaView) Meter() string {
	return strconv.FormatFloat(math.Min(100, q.Percent()), 'f', 1, 64)
}

// Text says it in words: "1.2 GiB of 10.0 GiB (12.0 %)".
func (q *quotaView) Text() string {
	return fmt.Sprintf("%s of %s (%.1f %%)", humanBytes(q.Used), humanBytes(q.Quota), q.Percent())
}

// registerUIStorage mounts the storage pages; without a storage service
// (tests of other areas) there are none.
func (s *Server) registerUIStorage() {
	if s.opts.Storage == nil {
		return
	}
	read := func(h uiHandler) http.HandlerFunc { return s.uiPage(coffer.PermRead, h) }
	manage := func(h uiHandler) http.HandlerFunc { return s.uiPage(coffer.PermManage, h) }
	s.mux.HandleFunc("GET /storage", read(s.uiStorage))
	s.mux.HandleFunc("GET /storage/repositories/new", manage(s.uiRepositoryNew))
	s.mux.HandleFunc("POST /storage/repositories", manage(s.uiRepositoryCreate))
	s.mux.HandleFunc("GET /storage/repositories/{id}", read(s.uiRepository))
	s.mux.HandleFunc("GET /storage/repositories/{id}/edit", manage(s.uiRepositoryEdit))
	s.mux.HandleFunc("POST /storage/repositories/{id}", manage(s.uiRepositoryUpdate))
	s.mux.HandleFunc("POST /storage/repositories/{id}/delete", manage(s.uiRepositoryDelete))
	s.mux.HandleFunc("POST /storage/repositories/{id}/verify", manage(s.uiRepositoryVerify))
	s.mux.HandleFunc("POST /storage/repositories/{id}/gc", manage(s.uiRepositoryGC))
	s.mux.HandleFunc("GET /ui/storage/repositories/{id}/jobs", read(s.uiRepositoryJobs))
	s.mux.HandleFunc("GET /storage/endpoints/new", manage(s.uiEndpointNew))
	s.mux.HandleFunc("POST /storage/endpoints", manage(s.uiEndpointCreate))
	s.mux.HandleFunc("GET /storage/endpoints/{id}/edit", manage(s.uiEndpointEdit))
	s.mux.HandleFunc("POST /storage/endpoints/{id}", manage(s.uiEndpointUpdate))
	s.mux.HandleFunc("POST /storage/endpoints/{id}/delete", manage(s.uiEndpointDelete))
}

func (s *Server) uiStorage(w http.ResponseWriter, r *http.Request, c *uiContext) {
	ctx := r.Context()
	svc := s.opts.Storage
	eps, _, err := svc.ListEndpoints(ctx, metadb.EndpointFilter{})
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	repos, _, err := svc.ListRepositories(ctx, metadb.RepositoryFilter{})
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	running, err := svc.RunningJobs(ctx, "")
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	stored, err := svc.StoredBytes(ctx)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	samples, err := svc.LatestUsage(ctx)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	byID := coffer.IndexBy(eps, func(e *coffer.Endpoint) string { return e.ID })
	data := &storageData{}
	now := s.opts.Now()
	for i := range repos {
		id := repos[i].ID
		row := repositoryRow{Repo: &repos[i], Location: repositoryLocation(&repos[i], byID[repos[i].EndpointID]), Stored: stored[id]}
		if u, ok := samples[id]; ok {
			row.Sample, row.AsOf = &u, asOf(u.TakenAt, now)
		} else {
			data.Unsampled = true
		}
		for _, j := range running {
			if j.RepositoryID == repos[i].ID {
				row.Running++
			}
		}
		data.Repositories = append(data.Repositories, row)
	}
	for i := range eps {
		row := endpointRow{Endpoint: eps[i]}
		for _, repo := range repos {
			if repo.EndpointID == eps[i].ID {
				row.Repositories++
			}
		}
		data.Endpoints = append(data.Endpoints, row)
	}
	s.render(w, r, http.StatusOK, "storage", c.view("Storage", "storage", data))
}

// repositoryLocation says where a repository lives, for people.
func repositoryLocation(r *coffer.Repository, ep *coffer.Endpoint) string {
	if r.Kind == coffer.RepositoryLocal {
		return r.Path
	}
	loc := "s3://" + r.Bucket
	if r.Prefix != "" {
		loc += "/" + r.Prefix
	}
	if ep != nil {
		loc += " on " + ep.DisplayName + " (" + endpointAddress(ep) + ")"
	}
	return loc
}

// repositoryData is the repository page's data.
type repositoryData struct {
	Repo       *coffer.Repository
	Endpoint   *coffer.Endpoint // s3 repositories
	Location   string
	Usage      *storage.Usage
	UsageError string
	Quota      *quotaView
	Clients    []usageRow
	Plans      []usageRow
	Jobs       *repositoryJobs
	Verify     *formState
	GC         *formState
	// DeleteError is why deleting the repository was refused.
	DeleteError string
}

// usageRow is one client's or plan's share of a repository.
type usageRow struct {
	Name, Href string
	storage.GroupUsage
}

// repositoryJobs is a repository's running verifies and GCs and their
// last results: the part of the repository page that refreshes itself
// while a job runs.
type repositoryJobs struct {
	RepositoryID       string
	Running            []coffer.RepositoryJob
	LastVerify, LastGC *coffer.MaintenanceResult
}

// PollURL is where the jobs fragment reloads from.
func (j *repositoryJobs) PollURL() string {
	return "/ui/storage/repositories/" + url.PathEscape(j.RepositoryID) + "/jobs"
}

func (s *Server) uiRepository(w http.ResponseWriter, r *http.Request, c *uiContext) {
	data, err := s.repositoryPage(r, r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.renderRepository(w, r, c, http.StatusOK, data)
}

func (s *Server) renderRepository(w http.ResponseWriter, r *http.Request, c *uiContext, status int, data *repositoryData) {
	s.render(w, r, status, "repository", c.view("Repository "+data.Repo.Name, "storage", data))
}

// repositoryPage gathers the repository page: the record, its usage split
// by client and plan, and its jobs. Storage that cannot be reached leaves
// the usage out, saying why, rather than the whole page.
func (s *Server) repositoryPage(r *http.Request, id string) (*repositoryData, error) {
	ctx := r.Context()
	svc := s.opts.Storage
	jobs, repo, err := s.repositoryJobs(ctx, id)
	if err != nil {
		return nil, err
	}
	data := &repositoryData{Repo: repo, Jobs: jobs, Verify: newFormState(url.Values{"mode": {"structure"}}), GC: newFormState(nil)}
	if repo.EndpointID != "" {
		if data.Endpoint, err = svc.GetEndpoint(ctx, repo.EndpointID); err != nil && !coffer.IsKind(err, coffer.KindNotFound) {
			return nil, err
		}
	}
	data.Location = repositoryLocation(repo, data.Endpoint)
	u, err := svc.Usage(ctx, id)
	if err != nil {
		data.UsageError = failureOf(r.Context(), err).message
		return data, nil
	}
	data.Usage, data.Quota = u, newQuota(u.StoredBytes, u.QuotaBytes)
	clients, err := s.clientIndex(ctx)
	if err != nil {
		return nil, err
	}
	plans, err := s.planIndex(ctx)
	if err != nil {
		return nil, err
	}
	for _, g := range u.Clients {
		row := usageRow{Name: g.ID, GroupUsage: g}
		if cl := clients[g.ID]; cl != nil {
			row.Name, row.Href = cl.Name, "/clients/"+url.PathEscape(cl.ID)
		}
		data.Clients = append(data.Clients, row)
	}
	for _, g := range u.Plans {
		row := usageRow{Name: g.ID, GroupUsage: g}
		if g.ID == "" {
			row.Name = "Ad-hoc backups (no plan)"
		} else if pl := plans[g.ID]; pl != nil {
			row.Name, row.Href = pl.Name, "/plans/"+url.PathEscape(pl.ID)
		}
		data.Plans = append(data.Plans, row)
	}
	return data, nil
}

// planIndex returns every plan by id (none without the plans service), to
// name the plans of a repository's usage in one query.
func (s *Server) planIndex(ctx context.Context) (map[string]*coffer.Plan, error) {
	if s.opts.Plans == nil {
		return map[string]*coffer.Plan{}, nil
	}
	list, _, err := s.opts.Plans.List(ctx, metadb.PlanFilter{})
	if err != nil {
		return nil, err
	}
	return coffer.IndexBy(list, func(p *coffer.Plan) string { return p.ID }), nil
}

// repositoryJobs reads repository id and its running jobs, for the page and
// for the jobs fragment that polls while one runs.
func (s *Server) repositoryJobs(ctx context.Context, id string) (*repositoryJobs, *coffer.Repository, error) {
	// The running jobs first: a job that ends in between has then already
	// recorded its result on the repository (one transaction), so the
	// fragment never shows a job gone and its result missing — which would
	// also stop the poller before the result shows.
	running, err := s.opts.Storage.RunningJobs(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	repo, err := s.opts.Storage.GetRepository(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	return &repositoryJobs{RepositoryID: repo.ID, Running: running, LastVerify: repo.LastVerify, LastGC: repo.LastGC}, repo, nil
}

// uiRepositoryJobs is the jobs fragment the repository page polls while a
// job runs; once none does, it answers without the polling trigger.
func (s *Server) uiRepositoryJobs(w http.ResponseWriter, r *http.Request, c *uiContext) {
	jobs, _, err := s.repositoryJobs(r.Context(), r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.renderFragment(w, r, http.StatusOK, "storage_jobs", jobs)
}

func (s *Server) uiRepositoryVerify(w http.ResponseWriter, r *http.Request, c *uiContext) {
	vals, ok := s.parseForm(w, r, c)
	if !ok {
		return
	}
	form := newFormState(vals)
	data := form.Value("mode") == "data"
	sample := 0.0
	if v := form.Value("sample_percent"); v != "" && data {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) {
			form.set("sample_percent", "Enter a number from 0 to 100 (0 reads every pack).")
		}
		sample = f
	}
	id := r.PathValue("id")
	if !form.Invalid() {
		if _, err := s.opts.Storage.Verify(r.Context(), c.p, id, data, sample); err != nil {
			s.failRepository(w, r, c, id, err, func(d *repositoryData, ff formFailure) { d.Verify = form; form.fail(ff, nil) })
			return
		}
		s.uiDone(w, r, "/storage/repositories/"+url.PathEscape(id), "Verify started. Its result shows here when it ends.")
		return
	}
	s.failRepository(w, r, c, id, nil, func(d *repositoryData, _ formFailure) { d.Verify = form })
}

func (s *Server) uiRepositoryGC(w http.ResponseWriter, r *http.Request, c *uiContext) {
	vals, ok := s.parseForm(w, r, c)
	if !ok {
		return
	}
	form := newFormState(vals)
	id := r.PathValue("id")
	dry := form.Checked("dry_run")
	if _, err := s.opts.Storage.GC(r.Context(), c.p, id, dry); err != nil {
		s.failRepository(w, r, c, id, err, func(d *repositoryData, ff formFailure) { d.GC = form; form.fail(ff, nil) })
		return
	}
	msg := "Garbage collection started. Its result shows here when it ends."
	if dry {
		msg = "Garbage collection dry run started: it only reports what it would reclaim. Its report shows here when it ends."
	}
	s.uiDone(w, r, "/storage/repositories/"+url.PathEscape(id), msg)
}

func (s *Server) uiRepositoryDelete(w http.ResponseWriter, r *http.Request, c *uiContext) {
	id := r.PathValue("id")
	repo, err := s.opts.Storage.DeleteRepository(r.Context(), c.p, id)
	if err != nil {
		s.failRepository(w, r, c, id, err, func(d *repositoryData, ff formFailure) { d.DeleteError = ff.message })
		return
	}
	s.uiDone(w, r, "/storage", "Repository "+repo.Name+" deleted. Its data was kept where it is: creating a repository "+
		"at the same location attaches it again.")
}

// failRepository shows the repository page again with what went wrong
// where show puts it (err nil: the form's own checks failed, 400). A
// repository that does not exist gets the error page.
func (s *Server) failRepository(w http.ResponseWriter, r *http.Request, c *uiContext, id string, err error,
	show func(*repositoryData, formFailure)) {
	ff := formFailure{status: http.StatusBadRequest}
	if err != nil {
		ff = failureOf(r.Context(), err)
	}
	data, perr := s.repositoryPage(r, id)
	if perr != nil {
		s.uiFail(w, r, c, perr)
		return
	}
	show(data, ff)
	s.renderRepository(w, r, c, ff.status, data)
}

// repositoryFormData is the data of the new and edit repository pages.
type repositoryFormData struct {
	Repo      *coffer.Repository // nil when creating
	Location  string
	Endpoints []coffer.Endpoint
	Units     []string
	Form      *formState
}

// quotaUnits are the units the quota field takes, by name.
var quotaUnits = []struct {
	Name string
	Size int64
}{{"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}}

// repositoryFields maps the storage service's field names to the form's
// where they differ (and names the write-only ones, which a form shown
// again does not hold).
var repositoryFields = map[string]string{"quota_bytes": "quota", "access_key": "access_key", "secret_key": "secret_key",
	"name": "name", "kind": "kind", "path": "path", "endpoint_id": "endpoint_id", "bucket": "bucket", "prefix": "prefix"}

// endpointFields are the endpoint form's fields, named as the storage
// service names them.
var endpointFields = map[string]string{"display_name": "display_name", "url": "url", "type": "type", "region": "region",
	"addressing": "addressing"}

func (s *Server) uiRepositoryNew(w http.ResponseWriter, r *http.Request, c *uiContext) {
	form := newFormState(url.Values{"kind": {string(coffer.RepositoryLocal)}, "encrypted": {"on"}, "quota_unit": {"GiB"}})
	s.renderRepositoryForm(w, r, c, http.StatusOK, &repositoryFormData{Form: form})
}

func (s *Server) uiRepositoryCreate(w http.ResponseWriter, r *http.Request, c *uiContext) {
	vals, ok := s.parseForm(w, r, c)
	if !ok {
		return
	}
	form := newFormState(vals)
	data := &repositoryFormData{Form: form}
	in := repositoryInput(form, vals)
	enc := form.Checked("encrypted")
	in.Encrypted = &enc
	if form.Invalid() {
		s.renderRepositoryForm(w, r, c, http.StatusBadRequest, data)
		return
	}
	repo, err := s.opts.Storage.CreateRepository(r.Context(), c.p, in.spec())
	if err != nil {
		ff := failureOf(r.Context(), err)
		form.fail(ff, repositoryFields)
		s.renderRepositoryForm(w, r, c, ff.status, data)
		return
	}
	s.uiDone(w, r, "/storage/repositories/"+url.PathEscape(repo.ID), "Repository "+repo.Name+" created.")
}

// repositoryInput reads the repository form into the API's input, so that
// both go through the same conversion. Empty credential fields are left
// out: no credentials on create, the stored ones kept on update.
func repositoryInput(form *formState, vals url.Values) *RepositoryInput {
	in := &RepositoryInput{Name: form.Value("name"), Kind: form.Value("kind"), Path: form.Value("path"),
		EndpointID: form.Value("endpoint_id"), Bucket: form.Value("bucket"), Prefix: form.Value("prefix")}
	if in.Kind == string(coffer.RepositoryS3) {
		in.Path = ""
	} else {
		in.EndpointID, in.Bucket, in.Prefix = "", "", ""
	}
	if ak, sk := vals.Get("access_key"), vals.Get("secret_key"); ak != "" || sk != "" {
		in.AccessKey, in.SecretKey = &ak, &sk
	}
	q, ok := parseQuota(form.Value("quota"), form.Value("quota_unit"))
	if !ok {
		form.set("quota", "Enter the quota as a number of MiB, GiB or TiB (0 or empty: no quota).")
	}
	in.QuotaBytes = q
	return in
}

// parseQuota reads the quota field: a number of unit, empty or 0 for none.
func parseQuota(v, unit string) (int64, bool) {
	if v == "" {
		return 0, true
	}
	size := int64(0)
	for _, u := range quotaUnits {
		if u.Name == unit {
			size = u.Size
		}
	}
	f, err := strconv.ParseFloat(strings.ReplaceAll(v, ",", "."), 64)
	if size == 0 || err != nil || math.IsNaN(f) || f < 0 || f*float64(size) > math.MaxInt64/2 {
		return 0, false
	}
	return int64(math.Round(f * float64(size))), true
}

// quotaValue writes bytes in the largest unit that keeps it short.
func quotaValue(bytes int64) (string, string) {
	if bytes <= 0 {
		return "", "GiB"
	}
	u := quotaUnits[0]
	for _, c := range quotaUnits {
		if bytes >= c.Size {
			u = c
		}
	}
	return strconv.FormatFloat(float64(bytes)/float64(u.Size), 'f', -1, 64), u.Name
}

func (s *Server) uiRepositoryEdit(w http.ResponseWriter, r *http.Request, c *uiContext) {
	repo, err := s.opts.Storage.GetRepository(r.Context(), r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	q, unit := quotaValue(repo.QuotaBytes)
	form := newFormState(url.Values{"name": {repo.Name}, "quota": {q}, "quota_unit": {unit}})
	s.renderRepositoryForm(w, r, c, http.StatusOK, &repositoryFormData{Repo: repo, Form: form})
}

func (s *Server) uiRepositoryUpdate(w http.ResponseWriter, r *http.Request, c *uiContext) {
	vals, ok := s.parseForm(w, r, c)
	if !ok {
		return
	}
	repo, err := s.opts.Storage.GetRepository(r.Context(), r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	form := newFormState(vals)
	data := &repositoryFormData{Repo: repo, Form: form}
	// Only the name, the quota and an S3 repository's credentials change;
	// the location is the record's.
	in := repositoryInput(form, vals)
	in.Kind, in.Path, in.EndpointID, in.Bucket, in.Prefix = "", "", "", "", ""
	if form.Invalid() {
		s.renderRepositoryForm(w, r, c, http.StatusBadRequest, data)
		return
	}
	updated, err := s.opts.Storage.UpdateRepository(r.Context(), c.p, repo.ID, in.spec())
	if err != nil {
		ff := failureOf(r.Context(), err)
		form.fail(ff, repositoryFields)
		s.renderRepositoryForm(w, r, c, ff.status, data)
		return
	}
	s.uiDone(w, r, "/storage/repositories/"+url.PathEscape(repo.ID), "Repository "+updated.Name+" saved.")
}

func (s *Server) renderRepositoryForm(w http.ResponseWriter, r *http.Request, c *uiContext, status int, data *repositoryFormData) {
	eps, _, err := s.opts.Storage.ListEndpoints(r.Context(), metadb.EndpointFilter{})
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	data.Endpoints = eps
	for _, u := range quotaUnits {
		data.Units = append(data.Units, u.Name)
	}
	title := "New repository"
	if data.Repo != nil {
		title = "Edit repository " + data.Repo.Name
		var ep *coffer.Endpoint
		for i := range eps {
			if eps[i].ID == data.Repo.EndpointID {
				ep = &eps[i]
			}
		}
		data.Location = repositoryLocation(data.Repo, ep)
	}
	s.render(w, r, status, "repository_form", c.view(title, "storage", data))
}

// endpointFormData is the data of the new and edit endpoint pages.
type endpointFormData struct {
	Endpoint *coffer.Endpoint // nil when creating
	Types    []coffer.EndpointType
	Form     *formState
	// DeleteError is why deleting the endpoint was refused.
	DeleteError string
}

func (s *Server) uiEndpointNew(w http.ResponseWriter, r *http.Request, c *uiContext) {
	form := newFormState(url.Values{"https": {"on"}, "type": {string(coffer.EndpointS3)}})
	s.renderEndpointForm(w, r, c, http.StatusOK, &endpointFormData{Form: form})
}

// endpointInput reads the endpoint form into the API's input.
func endpointInput(form *formState) *EndpointInput {
	https := form.Checked("https")
	return &EndpointInput{DisplayName: form.Value("display_name"), URL: form.Value("url"), HTTPS: &https,
		Type: form.Value("type"), Region: form.Value("region"), Addressing: form.Value("addressing")}
}

func (s *Server) uiEndpointCreate(w http.ResponseWriter, r *http.Request, c *uiContext) {
	vals, ok := s.parseForm(w, r, c)
	if !ok {
		return
	}
	form := newFormState(vals)
	e, err := s.opts.Storage.CreateEndpoint(r.Context(), c.p, endpointInput(form).spec())
	if err != nil {
		ff := failureOf(r.Context(), err)
		form.fail(ff, endpointFields)
		s.renderEndpointForm(w, r, c, ff.status, &endpointFormData{Form: form})
		return
	}
	s.uiDone(w, r, "/storage", "Endpoint "+e.DisplayName+" created.")
}

func (s *Server) uiEndpointEdit(w http.ResponseWriter, r *http.Request, c *uiContext) {
	e, err := s.opts.Storage.GetEndpoint(r.Context(), r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.renderEndpointForm(w, r, c, http.StatusOK, &endpointFormData{Endpoint: e, Form: endpointValues(e)})
}

// endpointValues fills the endpoint form with e's settings.
func endpointValues(e *coffer.Endpoint) *formState {
	v := url.Values{"display_name": {e.DisplayName}, "url": {e.URL}, "type": {string(e.Type)}, "region": {e.Region},
		"addressing": {string(e.Addressing)}}
	if e.HTTPS {
		v.Set("https", "on")
	}
	return newFormState(v)
}

func (s *Server) uiEndpointUpdate(w http.ResponseWriter, r *http.Request, c *uiContext) {
	vals, ok := s.parseForm(w, r, c)
	if !ok {
		return
	}
	e, err := s.opts.Storage.GetEndpoint(r.Context(), r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	form := newFormState(vals)
	updated, err := s.opts.Storage.UpdateEndpoint(r.Context(), c.p, e.ID, endpointInput(form).spec())
	if err != nil {
		ff := failureOf(r.Context(), err)
		form.fail(ff, endpointFields)
		s.renderEndpointForm(w, r, c, ff.status, &endpointFormData{Endpoint: e, Form: form})
		return
	}
	s.uiDone(w, r, "/storage", "Endpoint "+updated.DisplayName+" saved.")
}

func (s *Server) uiEndpointDelete(w http.ResponseWriter, r *http.Request, c *uiContext) {
	e, err := s.opts.Storage.GetEndpoint(r.Context(), r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	if _, err := s.opts.Storage.DeleteEndpoint(r.Context(), c.p, e.ID); err != nil {
		ff := failureOf(r.Context(), err)
		s.renderEndpointForm(w, r, c, ff.status, &endpointFormData{Endpoint: e, Form: endpointValues(e), DeleteError: ff.message})
		return
	}
	s.uiDone(w, r, "/storage", "Endpoint "+e.DisplayName+" deleted.")
}

func (s *Server) renderEndpointForm(w http.ResponseWriter, r *http.Request, c *uiContext, status int, data *endpointFormData) {
	data.Types = coffer.EndpointTypes
	title := "New endpoint"
	if data.Endpoint != nil {
		title = "Edit endpoint " + data.Endpoint.DisplayName
	}
	s.render(w, r, status, "endpoint_form", c.view(title, "storage", data))
}
