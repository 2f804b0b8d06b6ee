package httpapi

import (
	"cmp"
	"context"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/restores"
)

// The restores pages: the history, one restore, and the wizard that asks
// for a new one. The wizard is one page whose steps the server renders
// from the query: every step is a GET form carrying the choices made so
// far as hidden fields, so that Back and Next never lose one; only the
// final confirmation POSTs, to create the restore.

// restoresPageSize is how many restores a page of the history shows.
const restoresPageSize = 50

// wizardBackups is how many recent backups the wizard's first step offers.
const wizardBackups = 50

// registerUIRestores mounts the restores pages. The wizard needs the
// backups and clients services too.
func (s *Server) registerUIRestores() {
	if s.opts.Restores == nil {
		return
	}
	s.mux.HandleFunc("GET /restores", s.uiPage(coffer.PermRead, s.uiRestores))
	s.mux.HandleFunc("GET /restores/{id}", s.uiPage(coffer.PermRead, s.uiRestore))
	s.mux.HandleFunc("POST /restores/{id}/cancel", s.uiPage(coffer.PermOperate, s.uiRestoreCancel))
	s.mux.HandleFunc("POST /restores/{id}/delete", s.uiPage(coffer.PermOperate, s.uiRestoreDelete))
	if s.opts.Backups == nil || s.opts.Agents == nil {
		return
	}
	s.mux.HandleFunc("GET /restores/new", s.uiPage(coffer.PermOperate, s.uiRestoreNew))
	s.mux.HandleFunc("POST /restores", s.uiPage(coffer.PermOperate, s.uiRestoreCreate))
}

// restoreRow is a restore as the history and the detail page show it.
type restoreRow struct {
	*coffer.Restore
	Job                    *jobView
	SourceName, TargetName string // the clients' names (their ids once deleted)
	SourceGone, TargetGone bool   // the client was deleted since
	// TargetClient decides who may cancel or delete the restore: a
	// deleted client is a stand-in owned by no one (admins only).
	TargetClient *coffer.Client
}

// restoresData is the history page's data.
type restoresData struct {
	Rows    []restoreRow
	Clients []coffer.Client // for the client filter
	States  []coffer.JobState
	Client  string // the filters in force
	State   string
	Pager   *uiPager
	Error   string // a filter that is not valid
}

// restoreStates are the states the history filters by.
var restoreStates = []coffer.JobState{coffer.JobQueued, coffer.JobRunning, coffer.JobSucceeded, coffer.JobPartial,
	coffer.JobFailed, coffer.JobCanceled}

func (s *Server) uiRestores(w http.ResponseWriter, r *http.Request, c *uiContext) {
	ctx := r.Context()
	q := r.URL.Query()
	d := &restoresData{States: restoreStates, Client: q.Get("client"), State: q.Get("state")}
	f := metadb.RestoreFilter{ClientID: d.Client, Limit: restoresPageSize + 1}
	status := http.StatusOK
	if d.State != "" {
		if !slices.Contains(restoreStates, coffer.JobState(d.State)) {
			d.Error = "Choose a state from the list."
			status = http.StatusBadRequest
			d.State = ""
		} else {
			f.States = []coffer.JobState{coffer.JobState(d.State)}
		}
	}
	after, err := decodeKeyset(q.Get("cursor"))
	if err != nil {
		// A mangled cursor starts over at the newest page.
		after = nil
	}
	f.After = after
	list, err := s.opts.Restores.List(ctx, f)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	list, next := keysetPage(list, restoresPageSize, func(r *coffer.Restore) metadb.Keyset {
		return metadb.Keyset{CreatedAt: r.CreatedAt, ID: r.ID}
	})
	names, err := s.clientIndex(ctx)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	for i := range list {
		d.Rows = append(d.Rows, restoreRowOf(&list[i], names))
	}
	for _, cl := range names {
		d.Clients = append(d.Clients, *cl)
	}
	slices.SortFunc(d.Clients, func(a, b coffer.Client) int {
		return cmp.Or(strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)), strings.Compare(a.ID, b.ID))
	})
	if d.Pager, err = pagerOf(r, next); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	v := c.view("Restores", "restores", d)
	if v.Live, err = s.uiLive(ctx); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.render(w, r, status, "restores", v)
}

// clientIndex returns every enrolled client by id (none without the
// agents service), to name the clients of restores.
func (s *Server) clientIndex(ctx context.Context) (map[string]*coffer.Client, error) {
	if s.opts.Agents == nil {
		return map[string]*coffer.Client{}, nil
	}
	list, _, err := s.opts.Agents.ListClients(ctx, metadb.ClientFilter{})
	if err != nil {
		return nil, err
	}
	return coffer.IndexBy(list, func(c *coffer.Client) string { return c.ID }), nil
}

func restoreRowOf(r *coffer.Restore, clients map[string]*coffer.Client) restoreRow {
	row := restoreRow{Restore: r, Job: restoreJob(r), SourceName: r.SourceClientID, TargetName: r.TargetClientID,
		SourceGone: true, TargetGone: true, TargetClient: &coffer.Client{ID: r.TargetClientID, Name: r.TargetClientID}}
	if cl := clients[r.SourceClientID]; cl != nil {
		row.SourceName, row.SourceGone = cl.Name, false
	}
	if cl := clients[r.TargetClientID]; cl != nil {
		row.TargetName, row.TargetClient, row.TargetGone = cl.Name, cl, false
	}
	return row
}

// restoreData is the detail page's data.
type restoreData struct {
	restoreRow
	CreatedBy string // the user's name
	Overwrite overwriteOption
	Again     string // the wizard prefilled with this restore's choices
}

func (s *Server) uiRestore(w http.ResponseWriter, r *http.Request, c *uiContext) {
	ctx := r.Context()
	rs, err := s.opts.Restores.Get(ctx, r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	names, err := s.clientIndex(ctx)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	d := &restoreData{restoreRow: restoreRowOf(rs, names), Overwrite: overwriteOptionOf(rs.Overwrite)}
	d.Job.ReloadWhenDone = true
	if rs.CreatedBy != "" {
		d.CreatedBy = rs.CreatedBy
		if u, err := s.opts.Auth.GetUser(ctx, rs.CreatedBy); err == nil {
			d.CreatedBy = u.Username
		}
	}
	if s.opts.Backups != nil && s.opts.Agents != nil {
		wz := &restoreWizard{BackupID: rs.BackupID, Target: rs.TargetClientID, Destination: rs.Destination,
			Overwrite: string(rs.Overwrite)}
		for _, p := range rs.Paths {
			wz.Paths = append(wz.Paths, "/"+p)
		}
		d.Again = wz.url("confirm")
	}
	v := c.view("Restore "+rs.ID, "restores", d)
	if v.Live, err = s.uiLive(ctx); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.render(w, r, http.StatusOK, "restore", v)
}

func (s *Server) uiRestoreCancel(w http.ResponseWriter, r *http.Request, c *uiContext) {
	rs, err := s.opts.Restores.Cancel(r.Context(), c.p, r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	msg := "Restore canceled."
	if rs.State == coffer.JobRunning {
		msg = "Cancel requested: the agent is told to stop the restore."
	}
	s.uiDone(w, r, "/restores/"+rs.ID, msg)
}

func (s *Server) uiRestoreDelete(w http.ResponseWriter, r *http.Request, c *uiContext) {
	if _, err := s.opts.Restores.Delete(r.Context(), c.p, r.PathValue("id")); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.uiDone(w, r, "/restores", "Restore record deleted; the files it wrote stay where they are.")
}

// overwriteOption is an overwrite policy as the pages explain it.
type overwriteOption struct {
	Value       coffer.Overwrite
	Label, Hint string
}

// overwriteOptions explains every policy, in coffer.Overwrites' order.
var overwriteOptions = []overwriteOption{
	{coffer.OverwriteAlways, "Overwrite",
		"Replace what exists at the destination with the backup's copy."},
	{coffer.OverwriteSkip, "Skip existing",
		"Keep what exists and do not write the backup's copy of it; only missing entries are restored. Nothing is destroyed."},
	{coffer.OverwriteIfNewer, "Overwrite if newer",
		"Replace what exists only when the backup's copy was modified later; keep newer files."},
	{coffer.OverwriteRename, "Keep both",
		"Keep what exists and write the backup's copy beside it, as NAME.restored-1 (-2, …)."},
}

func overwriteOptionOf(o coffer.Overwrite) overwriteOption {
	for _, opt := range overwriteOptions {
		if opt.Value == o {
			return opt
		}
	}
	return overwriteOption{Value: o, Label: string(o)}
}

// The wizard's steps, in order.
const (
	stepBackup = iota
	stepPaths
	stepTarget
	stepDestination
	stepOverwrite
	stepConfirm
)

// wizardStep is one step of the wizard.
type wizardStep struct {
	Name, Label string
	// fields are the query fields the step's own form edits; the other
	// choices travel as hidden fields.
	fields []string
}

var wizardSteps = []wizardStep{
	{"backup", "Backup", []string{"client", "backup"}},
	{"paths", "Paths", []string{"path", "browse"}},
	{"target", "Target client", []string{"target"}},
	{"destination", "Destination", []string{"destination"}},
	{"overwrite", "Overwrite policy", []string{"overwrite"}},
	{"confirm", "Confirm", nil},
}

func stepIndex(name string) int {
	return slices.IndexFunc(wizardSteps, func(s wizardStep) bool { return s.Name == name })
}

// restoreWizard holds every choice of the wizard so far, as typed.
type restoreWizard struct {
	Client      string // whose backups the first step lists
	BackupID    string
	Paths       []string // chosen paths, as absolute paths ("/home/u"); none: everything
	Browse      string   // the directory of the backup the paths step lists
	Target      string
	Destination string
	Overwrite   string
}

// parseWizard reads the wizard's choices from a query or form.
func parseWizard(q url.Values) *restoreWizard {
	w := &restoreWizard{Client: q.Get("client"), BackupID: strings.TrimSpace(q.Get("backup")), Browse: q.Get("browse"),
		Target: q.Get("target"), Destination: q.Get("destination"), Overwrite: q.Get("overwrite")}
	for _, p := range q["path"] {
		if strings.TrimSpace(p) == "" {
			continue
		}
		// Leading and trailing slashes are a matter of taste.
		if p = "/" + strings.Trim(p, "/"); !slices.Contains(w.Paths, p) {
			w.Paths = append(w.Paths, p)
		}
	}
	if slices.Contains(w.Paths, "/") {
		w.Paths = nil // the root is everything
	}
	return w
}

// values returns the choices as query values, leaving out the fields
// named in except.
func (w *restoreWizard) values(except ...string) url.Values {
	v := url.Values{}
	set := func(k, val string) {
		if val != "" && !slices.Contains(except, k) {
			v.Set(k, val)
		}
	}
	set("backup", w.BackupID)
	set("browse", w.Browse)
	set("target", w.Target)
	set("destination", w.Destination)
	set("overwrite", w.Overwrite)
	if !slices.Contains(except, "path") {
		for _, p := range w.Paths {
			v.Add("path", p)
		}
	}
	return v
}

// url is the wizard at step with every choice.
func (w *restoreWizard) url(step string) string {
	v := w.values()
	v.Set("step", step)
	return "/restores/new?" + v.Encode()
}

// hiddenField is a choice a step's form carries along.
type hiddenField struct{ Name, Value string }

// wizardData is the wizard page's data.
type wizardData struct {
	W      *restoreWizard
	Step   string
	Steps  []wizardLink
	Hidden []hiddenField // the other steps' choices, for this step's form
	Back   string        // the previous step, with every choice
	Errors map[string]string
	Alert  string // why the restore could not be created

	Backup  *coffer.Backup
	Source  *coffer.Client
	Clients []coffer.Client // the clients the user may operate
	Target  *coffer.Client

	Backups []coffer.Backup // step backup: the chosen client's restorable backups

	Tree   []protocol.TreeEntry // step paths: the directory Browse
	Crumbs []wizardCrumb

	Overwrites []overwriteOption
	Overwrite  overwriteOption
	Dest       string // the destination, cleaned
	// ExampleFrom is a path of the backup (a chosen one, or one the backup
	// was made of) and Example where the restore writes it; both "" when
	// there is no telling example.
	ExampleFrom, Example string
}

// wizardLink is a step in the wizard's step list: earlier steps link back.
type wizardLink struct {
	Label, Href string
	Current     bool
}

// wizardCrumb is an ancestor of the directory the paths step lists.
type wizardCrumb struct{ Name, Path string }

// Has reports whether path p is chosen.
func (d *wizardData) Has(p string) bool { return slices.Contains(d.W.Paths, p) }

// Join is the backup path of entry name in the listed directory.
func (d *wizardData) Join(name string) string { return path.Join(d.W.Browse, name) }

func (s *Server) uiRestoreNew(w http.ResponseWriter, r *http.Request, c *uiContext) {
	q := r.URL.Query()
	wz := parseWizard(q)
	want := stepIndex(q.Get("step"))
	if want < 0 {
		want = stepBackup
		if wz.BackupID != "" {
			want = stepPaths
		}
	}
	s.renderWizard(w, r, c, wz, want, http.StatusOK, "")
}

// renderWizard shows step want of the wizard, or the first earlier step
// whose choice is not valid, with the problem next to its field.
func (s *Server) renderWizard(w http.ResponseWriter, r *http.Request, c *uiContext, wz *restoreWizard, want, status int, alert string) {
	d := &wizardData{W: wz, Errors: map[string]string{}, Alert: alert}
	at, err := s.checkWizard(r.Context(), c.p, d, want)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	if at < want && status == http.StatusOK {
		status = http.StatusBadRequest
	}
	if err := s.loadStep(r.Context(), c.p, d, at); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	st := wizardSteps[at]
	d.Step = st.Name
	for i, ws := range wizardSteps {
		l := wizardLink{Label: ws.Label, Current: i == at}
		if i < at {
			l.Href = wz.url(ws.Name)
		}
		d.Steps = append(d.Steps, l)
	}
	if at > 0 {
		d.Back = wz.url(wizardSteps[at-1].Name)
	}
	vals := wz.values(st.fields...)
	for _, k := range []string{"backup", "path", "browse", "target", "destination", "overwrite"} {
		for _, val := range vals[k] {
			d.Hidden = append(d.Hidden, hiddenField{k, val})
		}
	}
	s.render(w, r, status, "restore_new", c.view("New restore", "restores", d))
}

// checkWizard checks the choices of the steps before want, in order, and
// returns the step to show: want, or the first step with a problem (in
// d.Errors). Only failures of the server are errors.
func (s *Server) checkWizard(ctx context.Context, p *coffer.Principal, d *wizardData, want int) (int, error) {
	checks := []func(context.Context, *coffer.Principal, *wizardData) error{
		s.checkWizardBackup, s.checkWizardPaths, s.checkWizardTarget, checkWizardDestination, checkWizardOverwrite,
	}
	for i, check := range checks {
		if i >= want {
			break
		}
		if err := check(ctx, p, d); err != nil {
			return 0, err
		}
		if len(d.Errors) > 0 {
			return i, nil
		}
	}
	return want, nil
}

func (s *Server) checkWizardBackup(ctx context.Context, p *coffer.Principal, d *wizardData) error {
	if d.W.BackupID == "" {
		d.Errors["backup"] = "Choose the backup to restore."
		return nil
	}
	b, err := s.opts.Backups.Get(ctx, d.W.BackupID)
	if coffer.IsKind(err, coffer.KindNotFound) {
		d.Errors["backup"] = "There is no backup with id " + d.W.BackupID + ": choose one from the list."
		return nil
	} else if err != nil {
		return err
	}
	if (b.State != coffer.JobSucceeded && b.State != coffer.JobPartial) || b.RootTree == "" {
		d.Errors["backup"] = "Backup " + b.ID + " is " + string(b.State) +
			": only a backup that finished succeeded or partial can be restored. Choose another one."
		return nil
	}
	src, err := s.clientOrGone(ctx, b.ClientID)
	if err != nil {
		return err
	}
	d.Backup, d.Source = b, src
	if err := p.MayOperate(src); err != nil {
		if ff := failureOf(ctx, err); ff.status < http.StatusInternalServerError {
			d.Errors["backup"] = ff.message
			return nil
		}
		return err
	}
	return nil
}

// clientOrGone returns client id, or a stand-in owned by no one when it was
// deleted (its backups and restores stay; only admins act on them).
func (s *Server) clientOrGone(ctx context.Context, id string) (*coffer.Client, error) {
	cl, err := s.opts.Agents.GetClient(ctx, id)
	if coffer.IsKind(err, coffer.KindNotFound) {
		return &coffer.Client{ID: id, Name: id}, nil
	}
	return cl, err
}

func (s *Server) checkWizardPaths(ctx context.Context, _ *coffer.Principal, d *wizardData) error {
	if len(d.W.Paths) > restores.MaxPaths {
		d.Errors["paths"] = "A restore takes at most 1000 paths: choose a common parent directory instead."
		return nil
	}
	for _, p := range d.W.Paths {
		if problem := coffer.PathProblem(p); problem != "" {
			d.Errors["paths"] = "Path " + p + " " + problem + "."
			return nil
		}
		if slices.Contains(strings.Split(p, "/"), "..") {
			d.Errors["paths"] = "Path " + p + " contains \"..\": paths must stay inside the backup."
			return nil
		}
		_, err := s.opts.Backups.TreeOf(ctx, d.Backup.ID, p)
		if coffer.IsKind(err, coffer.KindNotFound) {
			d.Errors["paths"] = "The backup has nothing at " + p + ": uncheck it, or browse the backup for the right path."
			return nil
		} else if err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) checkWizardTarget(ctx context.Context, p *coffer.Principal, d *wizardData) error {
	if d.W.Target == "" {
		d.W.Target = d.Backup.ClientID
	}
	cl, err := s.opts.Agents.GetClient(ctx, d.W.Target)
	if coffer.IsKind(err, coffer.KindNotFound) {
		d.Errors["target"] = "There is no client with id " + d.W.Target + ": choose one from the list."
		return nil
	} else if err != nil {
		return err
	}
	d.Target = cl
	if err := p.MayOperate(cl); err != nil {
		if ff := failureOf(ctx, err); ff.status < http.StatusInternalServerError {
			d.Errors["target"] = ff.message
			return nil
		}
		return err
	}
	return nil
}

func checkWizardDestination(_ context.Context, _ *coffer.Principal, d *wizardData) error {
	dest := d.W.Destination
	switch {
	case strings.TrimSpace(dest) == "":
		d.Errors["destination"] = "Enter the directory on the target machine to restore into, starting with /."
		return nil
	case !strings.HasPrefix(dest, "/"):
		d.Errors["destination"] = "The destination is not an absolute path: give the full path of a directory on the target machine, starting with /."
		return nil
	}
	clean := path.Clean(dest)
	if problem := coffer.PathProblem(clean); problem != "" {
		d.Errors["destination"] = "The destination " + problem + "."
		return nil
	}
	d.Dest = clean
	return nil
}

func checkWizardOverwrite(_ context.Context, _ *coffer.Principal, d *wizardData) error {
	if d.W.Overwrite == "" {
		d.W.Overwrite = string(coffer.OverwriteSkip)
	}
	if !slices.Contains(coffer.Overwrites, coffer.Overwrite(d.W.Overwrite)) {
		d.Errors["overwrite"] = "Choose one of the policies below."
		return nil
	}
	d.Overwrite = overwriteOptionOf(coffer.Overwrite(d.W.Overwrite))
	return nil
}

// loadStep reads what step at shows besides the choices.
func (s *Server) loadStep(ctx context.Context, p *coffer.Principal, d *wizardData, at int) error {
	switch at {
	case stepBackup:
		return s.loadWizardBackups(ctx, p, d)
	case stepPaths:
		return s.loadWizardTree(ctx, d)
	case stepTarget:
		if d.W.Target == "" {
			d.W.Target = d.Backup.ClientID
		}
		if err := s.loadOperable(ctx, p, d); err != nil {
			return err
		}
		for i := range d.Clients {
			if d.Clients[i].ID == d.W.Target {
				d.Target = &d.Clients[i]
			}
		}
	case stepOverwrite:
		if d.W.Overwrite == "" {
			d.W.Overwrite = string(coffer.OverwriteSkip)
		}
		d.Overwrites = overwriteOptions
	}
	if d.Dest != "" {
		if len(d.W.Paths) > 0 {
			d.ExampleFrom = d.W.Paths[0]
		} else if len(d.Backup.Paths) > 0 && d.Backup.Paths[0] != "/" {
			d.ExampleFrom = d.Backup.Paths[0]
		}
		if d.ExampleFrom != "" {
			d.Example = path.Join(d.Dest, d.ExampleFrom)
		}
	}
	return nil
}

// loadOperable lists the clients p may operate, by name.
func (s *Server) loadOperable(ctx context.Context, p *coffer.Principal, d *wizardData) error {
	list, _, err := s.opts.Agents.ListClients(ctx, metadb.ClientFilter{})
	if err != nil {
		return err
	}
	for _, cl := range list {
		if p.MayOperate(&cl) == nil {
			d.Clients = append(d.Clients, cl)
		}
	}
	return nil
}

// loadWizardBackups lists the restorable backups of the chosen client
// (the chosen backup's, or the first the user may operate).
func (s *Server) loadWizardBackups(ctx context.Context, p *coffer.Principal, d *wizardData) error {
	if err := s.loadOperable(ctx, p, d); err != nil {
		return err
	}
	if d.W.Client == "" && d.Backup != nil {
		d.W.Client = d.Backup.ClientID
	}
	if !slices.ContainsFunc(d.Clients, func(cl coffer.Client) bool { return cl.ID == d.W.Client }) {
		d.W.Client = ""
		if len(d.Clients) > 0 {
			d.W.Client = d.Clients[0].ID
		}
	}
	if d.W.Client == "" {
		return nil
	}
	bs, err := s.opts.Backups.List(ctx, metadb.BackupFilter{ClientID: d.W.Client,
		States: []coffer.JobState{coffer.JobSucceeded, coffer.JobPartial}, Limit: wizardBackups})
	if err != nil {
		return err
	}
	for _, b := range bs {
		if b.RootTree != "" {
			d.Backups = append(d.Backups, b)
		}
	}
	return nil
}

// loadWizardTree lists the directory Browse of the backup; a path that is
// not a directory of it lists its parent (or the root) instead.
func (s *Server) loadWizardTree(ctx context.Context, d *wizardData) error {
	dir := "/" + strings.Trim(d.W.Browse, "/")
	if d.W.Browse == "" && len(d.W.Paths) > 0 {
		dir = path.Dir(d.W.Paths[0])
	}
	if coffer.PathProblem(dir) != "" {
		dir = "/"
	}
	for {
		entries, err := s.opts.Backups.TreeOf(ctx, d.Backup.ID, dir)
		isDir := err == nil && !(len(entries) == 1 && entries[0].Type != "dir" && path.Base(dir) == entries[0].Name)
		if err != nil && !coffer.IsKind(err, coffer.KindNotFound) {
			return err
		}
		if isDir || dir == "/" {
			if isDir {
				d.Tree = entries
			}
			break
		}
		dir = path.Dir(dir)
	}
	d.W.Browse = dir
	d.Crumbs = []wizardCrumb{{Name: "root", Path: "/"}}
	for i, part := range strings.Split(strings.Trim(dir, "/"), "/") {
		if part == "" {
			continue
		}
		d.Crumbs = append(d.Crumbs, wizardCrumb{Name: part, Path: path.Join(d.Crumbs[i].Path, part)})
	}
	return nil
}

// uiRestoreCreate checks every choice of the wizard again and asks the
// restores service for the restore; a problem shows its step again.
func (s *Server) uiRestoreCreate(w http.ResponseWriter, r *http.Request, c *uiContext) {
	if r.PostForm == nil {
		r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	}
	if err := r.ParseForm(); err != nil {
		s.uiError(w, r, c, http.StatusBadRequest, "Form not readable",
			"The form could not be read. Go back to the wizard and try again.")
		return
	}
	wz := parseWizard(r.PostForm)
	d := &wizardData{W: wz, Errors: map[string]string{}}
	at, err := s.checkWizard(r.Context(), c.p, d, stepConfirm)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	if at < stepConfirm {
		s.renderWizard(w, r, c, wz, stepConfirm, http.StatusBadRequest, "")
		return
	}
	var paths []string
	for _, p := range wz.Paths {
		paths = append(paths, strings.TrimPrefix(p, "/"))
	}
	rs, err := s.opts.Restores.Create(r.Context(), c.p, restores.Request{BackupID: wz.BackupID, TargetClientID: wz.Target,
		Paths: paths, Destination: d.Dest, Overwrite: coffer.Overwrite(wz.Overwrite)})
	if err != nil {
		e := toAPIError(r.Context(), http.StatusInternalServerError, "", err)
		if e.status >= http.StatusInternalServerError {
			s.uiFail(w, r, c, err)
			return
		}
		s.renderWizard(w, r, c, wz, stepConfirm, e.status, sentence(e.Detail))
		return
	}
	msg := "Restore queued: the agent of " + d.Target.Name + " starts it shortly."
	if d.Target.Status != coffer.ClientOnline {
		msg = "Restore queued: " + d.Target.Name + " is offline, so it starts when its agent connects."
	}
	s.uiDone(w, r, "/restores/"+rs.ID, msg)
}
