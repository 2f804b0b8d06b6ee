package httpapi

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/protocol"
)

// The backups pages: the history with filters, one backup's detail with
// its cancel and forget actions, a browser of its tree with downloads
// through the API's file and archive routes, and a path's versions across
// the plan's backups.

// uiPageSize is how many rows a paged UI list shows unless ?page_size=
// asks for another number (1 to uiMaxPageSize).
const (
	uiPageSize    = 50
	uiMaxPageSize = 500
)

// uiChoiceLimit bounds the clients and plans a filter offers to choose
// from.
const uiChoiceLimit = 1000

// dateLayout is the value format of <input type="date">.
const dateLayout = "2006-01-02"

// backupStates are the states the history filters by, in the order offered.
var backupStates = []coffer.JobState{coffer.JobQueued, coffer.JobRunning, coffer.JobSucceeded,
	coffer.JobPartial, coffer.JobFailed, coffer.JobCanceled}

// backupTriggers are the ways a backup starts that the history filters by.
var backupTriggers = []coffer.BackupTrigger{coffer.TriggerSchedule, coffer.TriggerManual, coffer.TriggerAPI}

// registerUIBackups mounts the backups pages and their two actions, cancel
// (operate) and forget (manage); the services check the client again.
func (s *Server) registerUIBackups() {
	if s.opts.Backups == nil {
		return
	}
	s.mux.HandleFunc("GET /backups", s.uiPage(coffer.PermRead, s.uiBackups))
	s.mux.HandleFunc("GET /backups/{id}", s.uiPage(coffer.PermRead, s.uiBackup))
	s.mux.HandleFunc("GET /backups/{id}/browse", s.uiPage(coffer.PermRead, s.uiBackupBrowse))
	s.mux.HandleFunc("GET /backups/{id}/versions", s.uiPage(coffer.PermRead, s.uiBackupVersions))
	s.mux.HandleFunc("POST /backups/{id}/cancel", s.uiPage(coffer.PermOperate, s.uiBackupCancel))
	s.mux.HandleFunc("POST /backups/{id}/forget", s.uiPage(coffer.PermManage, s.uiBackupForget))
}

// backupLinks builds the addresses of one backup's pages and downloads.
// Paths go into the query encoded, so that no character of a file name
// (?, #, &, spaces) can change the address.
type backupLinks string

// page is the backup's page at suffix ("", "/browse", "/cancel"…) with
// query q.
func (id backupLinks) page(suffix string, q url.Values) string {
	u := "/backups/" + url.PathEscape(string(id)) + suffix
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// detail, browse and versions are the backup's page, its browser at
// directory p, and the versions of path p.
func (id backupLinks) detail() string           { return id.page("", nil) }
func (id backupLinks) browse(p string) string   { return id.page("/browse", url.Values{"path": {p}}) }
func (id backupLinks) versions(p string) string { return id.page("/versions", url.Values{"path": {p}}) }

// file is the API route that downloads the file at p (with the session
// cookie, like any API route).
func (id backupLinks) file(p string) string {
	return "/api/v1/backups/" + url.PathEscape(string(id)) + "/file?" + url.Values{"path": {p}}.Encode()
}

// archive is the API route that downloads the subtree at p as a tar or zip.
func (id backupLinks) archive(p, format string) string {
	return "/api/v1/backups/" + url.PathEscape(string(id)) + "/archive?" +
		url.Values{"path": {p}, "format": {format}}.Encode()
}

// restore is the restore wizard, starting from this backup (and path).
func (id backupLinks) restore(p string) string {
	q := url.Values{"backup": {string(id)}}
	if p != "" {
		q.Set("path", p)
	}
	return "/restores/new?" + q.Encode()
}

// badPageSize says what ?page_size= must be.
var badPageSize = fmt.Sprintf("The page size (page_size in the address) must be a number from 1 to %d.", uiMaxPageSize)

// uiPageSizeOf reads ?page_size=, uiPageSize without it; ok is false for
// anything but a number from 1 to uiMaxPageSize.
func uiPageSizeOf(r *http.Request) (n int, ok bool) {
	raw := r.URL.Query().Get("page_size")
	if raw == "" {
		return uiPageSize, true
	}
	n, err := strconv.Atoi(raw)
	return n, err == nil && n >= 1 && n <= uiMaxPageSize
}

// pagerOf is the pager of a keyset-paged list at request r: Newest when
// r is past the first page, Older when next continues it.
func pagerOf(r *http.Request, next *string) (*uiPager, error) {
	p := &uiPager{}
	var err error
	if r.URL.Query().Get("cursor") != "" {
		if p.First, err = withQuery(r.URL.RequestURI(), "cursor", ""); err != nil {
			return nil, err
		}
	}
	if next != nil {
		if p.Next, err = withQuery(r.URL.RequestURI(), "cursor", *next); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// backupsFilter is the history's filter form as the user filled it in.
type backupsFilter struct {
	Client, Plan, State, Trigger, Since, Until, PageSize string
}

// backupsData is the history page's data.
type backupsData struct {
	Filter   backupsFilter
	Errors   map[string]string // filter field → what is wrong with it
	Clients  []coffer.Client
	Plans    []coffer.Plan
	States   []coffer.JobState
	Triggers []coffer.BackupTrigger
	Rows     []backupRow
	Pager    *uiPager
}

// backupRow is one backup of a list, with the names of its client and plan.
type backupRow struct {
	*coffer.Backup
	ClientName, PlanName string
	Job                  *jobView
}

// Time is when the backup started, or was queued if it has not.
func (b backupRow) Time() time.Time { return cmp.Or(derefTime(b.StartedAt), b.CreatedAt) }

// DetailURL is the backup's page.
func (b backupRow) DetailURL() string { return backupLinks(b.ID).detail() }

// uiBackups is the backup history: filters, one page of backups and the
// pager.
func (s *Server) uiBackups(w http.ResponseWriter, r *http.Request, c *uiContext) {
	ctx := r.Context()
	q := r.URL.Query()
	data := &backupsData{States: backupStates, Triggers: backupTriggers, Errors: map[string]string{}, Filter: backupsFilter{Client: q.Get("client"),
		Plan: q.Get("plan"), State: q.Get("state"), Trigger: q.Get("trigger"), Since: q.Get("since"), Until: q.Get("until"), PageSize: q.Get("page_size")}}
	// The stream starts before the list is read, so that no progress falls
	// in between.
	live, err := s.uiLive(ctx)
	if err == nil {
		data.Clients, data.Plans, err = s.filterChoices(ctx)
	}
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	f, size := data.parse(r)
	if len(data.Errors) > 0 {
		s.render(w, r, http.StatusBadRequest, "backups", backupsView(c, data, live))
		return
	}
	bs, next, err := backupPage(ctx, CursorParams{Cursor: q.Get("cursor"), PageSize: size}, f, s.opts.Backups.List)
	if err == nil {
		data.Rows, err = s.backupRows(ctx, data.Clients, data.Plans, bs)
	}
	if err == nil {
		data.Pager, err = pagerOf(r, next)
	}
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.render(w, r, http.StatusOK, "backups", backupsView(c, data, live))
}

// backupsView is the history page's view, connected to the live stream so
// that running backups show their progress.
func backupsView(c *uiContext, data *backupsData, live string) *uiView {
	data.keepChoices()
	v := c.view("Backups", "backups", data)
	v.Live = live
	return v
}

// parse checks the filter and returns it as a store filter with the page
// size; problems are noted in d.Errors by field.
func (d *backupsData) parse(r *http.Request) (metadb.BackupFilter, int) {
	fl := d.Filter
	f := metadb.BackupFilter{ClientID: fl.Client, PlanID: fl.Plan}
	if len(fl.Client) > 64 {
		d.Errors["client"] = "Choose a client from the list."
	}
	if len(fl.Plan) > 64 {
		d.Errors["plan"] = "Choose a plan from the list."
	}
	if fl.State != "" {
		if !slices.Contains(backupStates, coffer.JobState(fl.State)) {
			d.Errors["state"] = "Choose a state from the list."
		}
		f.States = []coffer.JobState{coffer.JobState(fl.State)}
	}
	if fl.Trigger != "" {
		if !slices.Contains(backupTriggers, coffer.BackupTrigger(fl.Trigger)) {
			d.Errors["trigger"] = "Choose how the backups started from the list."
		}
		f.Trigger = coffer.BackupTrigger(fl.Trigger)
	}
	var err error
	if fl.Since != "" {
		if f.Since, err = time.Parse(dateLayout, fl.Since); err != nil {
			d.Errors["since"] = "Enter a date as YYYY-MM-DD, e.g. 2024-05-31."
		}
	}
	if fl.Until != "" {
		until, err := time.Parse(dateLayout, fl.Until)
		switch {
		case err != nil:
			d.Errors["until"] = "Enter a date as YYYY-MM-DD, e.g. 2024-05-31."
		case !f.Since.IsZero() && until.Before(f.Since):
			d.Errors["until"] = "Enter a date on or after the From date."
		default:
			f.Until = until.AddDate(0, 0, 1) // through the end of that day (UTC)
		}
	}
	size, ok := uiPageSizeOf(r)
	if !ok {
		d.Errors["page_size"] = badPageSize
	}
	return f, size
}

// keepChoices adds the filter's client and plan to the choices when the
// lists lack them (beyond their limit, or deleted since), so that the form
// still shows what it filters by.
func (d *backupsData) keepChoices() {
	if id := d.Filter.Client; id != "" && !slices.ContainsFunc(d.Clients, func(c coffer.Client) bool { return c.ID == id }) {
		d.Clients = append(d.Clients, coffer.Client{ID: id, Name: id})
	}
	if id := d.Filter.Plan; id != "" && !slices.ContainsFunc(d.Plans, func(p coffer.Plan) bool { return p.ID == id }) {
		d.Plans = append(d.Plans, coffer.Plan{ID: id, Name: id})
	}
}

// filterChoices lists the clients and plans the history may be filtered by.
func (s *Server) filterChoices(ctx context.Context) ([]coffer.Client, []coffer.Plan, error) {
	var clients []coffer.Client
	var plans []coffer.Plan
	var err error
	if s.opts.Agents != nil {
		if clients, _, err = s.opts.Agents.ListClients(ctx, metadb.ClientFilter{Limit: uiChoiceLimit}); err != nil {
			return nil, nil, err
		}
	}
	if s.opts.Plans != nil {
		if plans, _, err = s.opts.Plans.List(ctx, metadb.PlanFilter{Limit: uiChoiceLimit}); err != nil {
			return nil, nil, err
		}
	}
	return clients, plans, nil
}

// backupRows names the clients and plans of bs: from the lists already
// loaded, else looked up one by one (a client or plan beyond the lists'
// limit, or one deleted since).
func (s *Server) backupRows(ctx context.Context, clients []coffer.Client, plans []coffer.Plan, bs []coffer.Backup) ([]backupRow, error) {
	clientNames := map[string]string{}
	for _, cl := range clients {
		clientNames[cl.ID] = cl.Name
	}
	planNames := map[string]string{}
	for _, p := range plans {
		planNames[p.ID] = p.Name
	}
	rows := make([]backupRow, len(bs))
	for i := range bs {
		b := &bs[i]
		if _, ok := clientNames[b.ClientID]; !ok {
			cl, err := s.backupClient(ctx, b)
			if err != nil {
				return nil, err
			}
			clientNames[b.ClientID] = ""
			if cl != nil {
				clientNames[b.ClientID] = cl.Name
			}
		}
		name, err := s.planName(ctx, planNames, b)
		if err != nil {
			return nil, err
		}
		rows[i] = backupRow{Backup: b, ClientName: clientNames[b.ClientID], PlanName: name, Job: backupJob(b)}
	}
	return rows, nil
}

// planName is the name of b's plan: from names, else looked up (and then
// kept in names), else the name the backup recorded when it ended; "" for
// an ad-hoc backup.
func (s *Server) planName(ctx context.Context, names map[string]string, b *coffer.Backup) (string, error) {
	if b.PlanID == "" {
		return "", nil
	}
	if n, ok := names[b.PlanID]; ok {
		return cmp.Or(n, b.Meta.Name), nil
	}
	names[b.PlanID] = ""
	if s.opts.Plans != nil {
		p, err := s.opts.Plans.Get(ctx, b.PlanID)
		switch {
		case err == nil:
			names[b.PlanID] = p.Name
		case !coffer.IsKind(err, coffer.KindNotFound):
			return "", err
		}
	}
	return cmp.Or(names[b.PlanID], b.Meta.Name), nil
}

// backupClient is b's client, nil when it no longer exists.
func (s *Server) backupClient(ctx context.Context, b *coffer.Backup) (*coffer.Client, error) {
	if s.opts.Agents == nil {
		return nil, nil
	}
	cl, err := s.opts.Agents.GetClient(ctx, b.ClientID)
	if coffer.IsKind(err, coffer.KindNotFound) {
		return nil, nil
	}
	return cl, err
}

// backupDetailData is a backup's page's data.
type backupDetailData struct {
	B          Backup // as the API shows it, with its expiry
	Errors     []coffer.PathError
	Job        *jobView
	Client     *coffer.Client // nil once deleted
	ClientName string
	PlanName   string
	Repository string // the repository's name, when known
	CreatedBy  string // the username of who asked for it
	Links      struct{ Detail, Browse, Restore, Cancel, Forget string }
}

// Active reports whether the backup is queued or running (it may be canceled).
func (d *backupDetailData) Active() bool { return d.Job.Active() }

// Level is the backup's level in its chain of incremental backups.
func (d *backupDetailData) Level() string {
	switch {
	case d.B.Level == nil:
		return "— (not committed)"
	case *d.B.Level == 0:
		return "0 (full)"
	}
	return strconv.Itoa(*d.B.Level) + " (incremental)"
}

// Committed reports whether the backup has a snapshot to browse and restore.
func (d *backupDetailData) Committed() bool { return d.B.SnapshotID != "" }

// uiBackup is one backup: all it recorded, its errors, its live progress
// and the actions the user may take on it.
func (s *Server) uiBackup(w http.ResponseWriter, r *http.Request, c *uiContext) {
	ctx := r.Context()
	live, err := s.uiLive(ctx)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	b, err := s.opts.Backups.Get(ctx, r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	data, err := s.backupDetail(ctx, b)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	v := c.view("Backup "+b.ID, "backups", data)
	v.Live = live
	s.render(w, r, http.StatusOK, "backup", v)
}

// backupDetail gathers what b's page shows beyond its record: expiry,
// client, plan, repository and creator names, and links.
func (s *Server) backupDetail(ctx context.Context, b *coffer.Backup) (*backupDetailData, error) {
	d := &backupDetailData{B: toBackup(b, false), Errors: b.Errors, Job: backupJob(b)}
	d.Job.ReloadWhenDone = true
	exp, err := s.opts.Backups.ExpiresAt(ctx, b)
	if err != nil {
		return nil, err
	}
	d.B.ExpiresAt = exp[0]
	if d.Client, err = s.backupClient(ctx, b); err != nil {
		return nil, err
	}
	if d.Client != nil {
		d.ClientName = d.Client.Name
	}
	if d.PlanName, err = s.planName(ctx, map[string]string{}, b); err != nil {
		return nil, err
	}
	if s.opts.Storage != nil && b.RepositoryID != "" {
		repo, err := s.opts.Storage.GetRepository(ctx, b.RepositoryID)
		switch {
		case err == nil:
			d.Repository = repo.Name
		case !coffer.IsKind(err, coffer.KindNotFound):
			return nil, err
		}
	}
	if b.CreatedBy != "" {
		u, err := s.opts.Auth.GetUser(ctx, b.CreatedBy)
		switch {
		case err == nil:
			d.CreatedBy = u.Username
		case !coffer.IsKind(err, coffer.KindNotFound):
			return nil, err
		}
	}
	l := backupLinks(b.ID)
	d.Links.Detail, d.Links.Browse, d.Links.Restore = l.detail(), l.browse("/"), l.restore("")
	d.Links.Cancel, d.Links.Forget = l.page("/cancel", nil), l.page("/forget", nil)
	return d, nil
}

// uiBackupCancel cancels a queued or running backup.
func (s *Server) uiBackupCancel(w http.ResponseWriter, r *http.Request, c *uiContext) {
	b, err := s.opts.Backups.Cancel(r.Context(), c.p, r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	msg := "Backup canceled."
	if b.State == coffer.JobRunning {
		msg = "Cancel requested: the agent is told to stop the backup."
	}
	s.uiDone(w, r, backupLinks(b.ID).detail(), msg)
}

// uiBackupForget forgets a finished backup and returns to the history.
func (s *Server) uiBackupForget(w http.ResponseWriter, r *http.Request, c *uiContext) {
	b, err := s.opts.Backups.Forget(r.Context(), c.p, r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.uiDone(w, r, "/backups", fmt.Sprintf("Backup %s forgotten; its data is freed at the next garbage collection.", b.ID))
}

// browseData is the tree browser's data.
type browseData struct {
	Backup  backupRow
	Client  *coffer.Client // nil once deleted
	Path    string         // the directory shown, absolute ("/" for the root)
	Crumbs  []crumb
	Entries []browseEntry
	Links   struct{ Detail, Tar, Zip, Versions, Restore string }
}

// crumb is one step of the path to the directory shown.
type crumb struct{ Name, URL string }

// browseEntry is one entry of the directory shown, with its links.
type browseEntry struct {
	protocol.TreeEntry
	Path                                    string // absolute
	Open, File, Tar, Zip, Versions, Restore string
}

// ModeString shows the entry's type and permission bits as ls does.
func (e browseEntry) ModeString() string { return modeString(e.Type, e.Mode) }

// cleanBackupPath makes a path in a backup absolute and clean: "/" for the
// root.
func cleanBackupPath(p string) string { return path.Clean("/" + p) }

// uiBackupBrowse lists a directory of a committed backup.
func (s *Server) uiBackupBrowse(w http.ResponseWriter, r *http.Request, c *uiContext) {
	ctx := r.Context()
	b, err := s.opts.Backups.Get(ctx, r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	p := cleanBackupPath(r.URL.Query().Get("path"))
	entries, err := s.opts.Backups.TreeOf(ctx, b.ID, p)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	if isFile, err := s.listsFile(ctx, b.ID, p, entries); err != nil {
		s.uiFail(w, r, c, err)
		return
	} else if isFile {
		// A file's path shows the directory that holds it.
		redirect(w, backupLinks(b.ID).browse(path.Dir(p)))
		return
	}
	data := &browseData{Path: p, Crumbs: crumbsOf(b.ID, p)}
	rows, err := s.backupRows(ctx, nil, nil, []coffer.Backup{*b})
	if err == nil {
		data.Client, err = s.backupClient(ctx, b)
	}
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	data.Backup = rows[0]
	l := backupLinks(b.ID)
	data.Links.Detail, data.Links.Tar, data.Links.Zip = l.detail(), l.archive(p, "tar"), l.archive(p, "zip")
	data.Links.Versions, data.Links.Restore = l.versions(p), l.restore(p)
	data.Entries = browseEntries(b.ID, p, entries)
	s.render(w, r, http.StatusOK, "backup_browse", c.view("Browse backup "+b.ID, "backups", data))
}

// listsFile reports whether entries, the listing of path p, are a file's:
// the tree lists a file's path as that file alone. Only a directory that
// holds one non-directory of its own name looks the same, so that case is
// told apart by looking p up in its parent.
func (s *Server) listsFile(ctx context.Context, id, p string, entries []protocol.TreeEntry) (bool, error) {
	if p == "/" || len(entries) != 1 || entries[0].Type == "dir" || entries[0].Name != path.Base(p) {
		return false, nil
	}
	parent, err := s.opts.Backups.TreeOf(ctx, id, path.Dir(p))
	if err != nil {
		return false, err
	}
	for _, e := range parent {
		if e.Name == path.Base(p) {
			return e.Type != "dir", nil
		}
	}
	return false, nil
}

// crumbsOf are the links from the backup's root to directory p.
func crumbsOf(id, p string) []crumb {
	l := backupLinks(id)
	out := []crumb{{Name: "Backup root", URL: l.browse("/")}}
	if p == "/" {
		return out
	}
	at := ""
	for _, name := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		at += "/" + name
		out = append(out, crumb{Name: name, URL: l.browse(at)})
	}
	return out
}

// browseEntries are the entries of directory dir, directories first, then
// by name, with their links.
func browseEntries(id, dir string, entries []protocol.TreeEntry) []browseEntry {
	l := backupLinks(id)
	out := make([]browseEntry, len(entries))
	for i, e := range entries {
		p := path.Join(dir, e.Name)
		be := browseEntry{TreeEntry: e, Path: p, Versions: l.versions(p), Restore: l.restore(p)}
		switch e.Type {
		case "dir":
			be.Open, be.Tar, be.Zip = l.browse(p), l.archive(p, "tar"), l.archive(p, "zip")
		case "file":
			be.File = l.file(p)
		}
		out[i] = be
	}
	slices.SortStableFunc(out, func(a, b browseEntry) int {
		if ad, bd := a.Type == "dir", b.Type == "dir"; ad != bd {
			if ad {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// modeTypes are ls's letters for the entry types.
var modeTypes = map[string]byte{"dir": 'd', "symlink": 'l', "dev": 'b', "chardev": 'c', "fifo": 'p', "socket": 's'}

// modeString formats permission bits (with setuid, setgid and sticky) as
// ls does: "drwxr-xr-x", "-rwsr-xr-x", "drwxrwxrwt".
func modeString(typ string, mode uint32) string {
	b := []byte{cmp.Or(modeTypes[typ], '-')}
	const rwx = "rwxrwxrwx"
	for i := range 9 {
		if mode&(1<<(8-i)) != 0 {
			b = append(b, rwx[i])
		} else {
			b = append(b, '-')
		}
	}
	special := func(bit uint32, at int, set, unset byte) {
		if mode&bit == 0 {
			return
		}
		if b[at] == '-' {
			b[at] = unset
		} else {
			b[at] = set
		}
	}
	special(0o4000, 3, 's', 'S')
	special(0o2000, 6, 's', 'S')
	special(0o1000, 9, 't', 'T')
	return string(b)
}

// versionsData is the versions page's data.
type versionsData struct {
	Backup backupRow
	Client *coffer.Client // nil once deleted
	Path   string
	Rows   []versionRow
	Pager  *uiPager
	Links  struct{ Detail, Browse string }
}

// versionRow is one backup's version of the path, with its links.
type versionRow struct {
	Version
	JobState                     coffer.JobState
	BackupURL, Browse, File, Tar string
}

// uiBackupVersions lists a path's versions in the backups of the plan (or,
// for an ad-hoc backup, the client's ad-hoc backups).
func (s *Server) uiBackupVersions(w http.ResponseWriter, r *http.Request, c *uiContext) {
	ctx := r.Context()
	b, err := s.opts.Backups.Get(ctx, r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	raw := r.URL.Query().Get("path")
	if raw == "" {
		s.uiError(w, r, c, http.StatusBadRequest, "Choose a path",
			"Which path's versions? Open the backup's browser and follow an entry's Versions link.")
		return
	}
	p := cleanBackupPath(raw)
	size, ok := uiPageSizeOf(r)
	if !ok {
		s.uiError(w, r, c, http.StatusBadRequest, "Bad page size", badPageSize)
		return
	}
	after, err := decodeKeyset(r.URL.Query().Get("cursor"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	vs, next, err := s.opts.Backups.Versions(ctx, b.ID, p, after, size)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	data := &versionsData{Path: p}
	rows, err := s.backupRows(ctx, nil, nil, []coffer.Backup{*b})
	if err == nil {
		data.Client, err = s.backupClient(ctx, b)
	}
	if err == nil {
		var cursor *string
		if next != nil {
			cursor = encodeKeyset(*next)
		}
		data.Pager, err = pagerOf(r, cursor)
	}
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	data.Backup = rows[0]
	data.Links.Detail, data.Links.Browse = backupLinks(b.ID).detail(), backupLinks(b.ID).browse(path.Dir(p))
	for i := range vs {
		data.Rows = append(data.Rows, versionRowOf(toVersion(&vs[i]), p))
		data.Rows[i].JobState = vs[i].Backup.State
	}
	s.render(w, r, http.StatusOK, "backup_versions", c.view("Versions of "+p, "backups", data))
}

// versionRowOf links version v of path p: the backup, its directory (or
// the directory itself) in the browser, and its download.
func versionRowOf(v Version, p string) versionRow {
	l := backupLinks(v.BackupID)
	row := versionRow{Version: v, BackupURL: l.detail(), Browse: l.browse(path.Dir(p))}
	switch {
	case !v.Present:
	case v.Type == "dir":
		row.Browse, row.Tar = l.browse(p), l.archive(p, "tar")
	case v.Type == "file":
		row.File = l.file(p)
	}
	return row
}
