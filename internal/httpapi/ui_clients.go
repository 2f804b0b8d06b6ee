package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/server/agents"
)

// The Clients area of the UI: the list of enrolled machines, enrolling a
// new one, a client's page (its machine, plans, recent backups and log with
// a live tail), renaming, assigning the owner and deleting, and the live
// file browser of the machine (ui_clients_files.go).

const (
	clientsPageSize    = 50
	clientPlansShown   = 100 // plans on a client's page; the rest are a link away
	clientBackupsShown = 10  // the newest backups on a client's page
)

// registerUIClients mounts the Clients pages and their fragments (none
// on a server without the agents service).
func (s *Server) registerUIClients() {
	if s.opts.Agents == nil {
		return
	}
	s.mux.HandleFunc("GET /clients", s.uiPage(coffer.PermRead, s.uiClients))
	s.mux.HandleFunc("GET /clients/enroll", s.uiPage(coffer.PermOperate, s.uiEnrollForm))
	s.mux.HandleFunc("POST /clients/enroll", s.uiPage(coffer.PermOperate, s.uiEnroll))
	s.mux.HandleFunc("GET /clients/{id}", s.uiPage(coffer.PermRead, s.uiClient))
	s.mux.HandleFunc("POST /clients/{id}", s.uiPage(coffer.PermOperate, s.uiClientUpdate))
	s.mux.HandleFunc("POST /clients/{id}/delete", s.uiPage(coffer.PermManage, s.uiClientDelete))
	s.mux.HandleFunc("GET /ui/clients/{id}/logs", s.uiPage(coffer.PermRead, s.uiClientLogTail))
	s.mux.HandleFunc("GET /ui/clients/{id}/files", s.uiPage(coffer.PermOperate, s.uiClientFiles))
	s.mux.HandleFunc("POST /clients/{id}/files/include", s.uiPage(coffer.PermOperate, s.uiClientAddInclude))
}

// clientListData is the clients page's data: the filter as given, one page
// of clients and the links to the pages around it.
type clientListData struct {
	Status, Name string
	Rows         []clientRow
	Total        int
	Page, Pages  int
	Prev, Next   string
}

// clientRow is a client with its owner's username ("" for none).
type clientRow struct {
	*coffer.Client
	Owner string
}

// uiClients lists the clients, filtered by status and name, a page at a
// time.
func (s *Server) uiClients(w http.ResponseWriter, r *http.Request, c *uiContext) {
	ctx := r.Context()
	q := r.URL.Query()
	data := &clientListData{Name: strings.TrimSpace(q.Get("name")), Page: 1}
	if st := q.Get("status"); st == string(coffer.ClientOnline) || st == string(coffer.ClientOffline) {
		data.Status = st
	}
	if len([]rune(data.Name)) > 100 {
		data.Name = string([]rune(data.Name)[:100])
	}
	if n, err := strconv.Atoi(q.Get("page")); err == nil && n > 1 {
		data.Page = n
	}
	cs, total, err := s.opts.Agents.ListClients(ctx, metadb.ClientFilter{Status: coffer.ClientStatus(data.Status),
		Name: data.Name, Limit: clientsPageSize, Offset: (data.Page - 1) * clientsPageSize})
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	data.Total, data.Pages = total, (total+clientsPageSize-1)/clientsPageSize
	owners := map[string]string{}
	for i := range cs {
		cl := &cs[i]
		if _, ok := owners[cl.OwnerID]; !ok {
			owners[cl.OwnerID] = s.opts.Agents.OwnerName(ctx, cl)
		}
		data.Rows = append(data.Rows, clientRow{Client: cl, Owner: owners[cl.OwnerID]})
	}
	page := func(n int) string {
		u, _ := withQuery(r.URL.RequestURI(), "page", strconv.Itoa(n))
		return u
	}
	if data.Page > 1 {
		data.Prev = page(data.Page - 1)
	}
	if data.Page < data.Pages {
		data.Next = page(data.Page + 1)
	}
	s.render(w, r, http.StatusOK, "clients", c.view("Clients", "clients", data))
}

// enrollTTL is a lifetime the enrollment form offers.
type enrollTTL struct {
	Seconds int
	Label   string
}

// enrollTTLs are the token lifetimes the form offers; the default is the
// service's (Options.EnrollTTL), which the form leaves empty.
var enrollTTLs = []enrollTTL{
	{Seconds: int((15 * time.Minute).Seconds()), Label: "15 minutes"},
	{Seconds: int(time.Hour.Seconds()), Label: "1 hour"},
	{Seconds: int((24 * time.Hour).Seconds()), Label: "1 day"},
	{Seconds: int(agents.MaxEnrollTTL.Seconds()), Label: "7 days"},
}

// enrollData is the enrollment page's data: the form, or (Command set) the
// one-time display of the command with the new token.
type enrollData struct {
	Name   string
	TTL    string // seconds, as the form sent it; "" = the server's default
	TTLs   []enrollTTL
	Errors map[string]string // field → what to fix

	Command   string // the command to run on the machine, token included
	ClientFor string // the name the client gets ("" = its hostname)
	ExpiresAt time.Time
	Lifetime  time.Duration
}

// uiEnrollForm shows the form that creates an enrollment token.
func (s *Server) uiEnrollForm(w http.ResponseWriter, r *http.Request, c *uiContext) {
	s.render(w, r, http.StatusOK, "enroll", c.view("Enroll a client", "clients", &enrollData{TTLs: enrollTTLs}))
}

// uiEnroll creates an enrollment token and answers with the page that shows
// it, once, inside the command to run on the machine. The answer is the
// POST's own response (no redirect), so the token never is in a URL, a
// flash cookie or the browser's history; writeHTML marks it no-store.
func (s *Server) uiEnroll(w http.ResponseWriter, r *http.Request, c *uiContext) {
	data := &enrollData{Name: r.PostFormValue("name"), TTL: r.PostFormValue("ttl"), TTLs: enrollTTLs,
		Errors: map[string]string{}}
	var ttl time.Duration
	if data.TTL != "" {
		n, err := strconv.Atoi(data.TTL)
		if err != nil || n < int(agents.MinEnrollTTL/time.Second) || n > int(agents.MaxEnrollTTL/time.Second) {
			data.Errors["ttl"] = "Choose one of the offered lifetimes."
			s.render(w, r, http.StatusBadRequest, "enroll", c.view("Enroll a client", "clients", data))
			return
		}
		ttl = time.Duration(n) * time.Second
	}
	secret, t, err := s.opts.Agents.CreateEnrollmentToken(r.Context(), c.p, data.Name, ttl)
	if err != nil {
		switch ff := failureOf(r.Context(), err); {
		case ff.field == "name":
			data.Errors["name"] = ff.message
		case ff.field == "expires_in_seconds":
			data.Errors["ttl"] = ff.message
		default:
			s.uiFail(w, r, c, err)
			return
		}
		s.render(w, r, http.StatusBadRequest, "enroll", c.view("Enroll a client", "clients", data))
		return
	}
	data.Command = enrollCommand(secret, serverURL(r), t.Name)
	data.ClientFor, data.ExpiresAt = t.Name, t.ExpiresAt
	data.Lifetime = t.ExpiresAt.Sub(t.CreatedAt).Round(time.Minute)
	s.render(w, r, http.StatusOK, "enroll", c.view("Enroll a client", "clients", data))
}

// enrollCommand is the one line to run on the machine: the token travels
// in COFFER_ENROLL_TOKEN, which keeps it out of the process list, and each
// value is single-quoted so that the line survives any shell's word
// splitting (the end-to-end test parses it that way). Without a name the
// client takes the machine's hostname.
func enrollCommand(token, server, name string) string {
	cmd := "COFFER_ENROLL_TOKEN=" + shellSingleQuote(token) + " coffer agent enroll --server " + shellSingleQuote(server)
	if name != "" {
		cmd += " --name " + shellSingleQuote(name)
	}
	return cmd
}

// shellSingleQuote quotes s for a POSIX shell: in single quotes, each '
// written as '\”.
func shellSingleQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// serverURL is the server's address as the browser reached it, which the
// machine to enroll should reach too (the server has no configured public
// URL): the scheme it used (through a trusted proxy too) and its Host.
func serverURL(r *http.Request) string {
	scheme := "http"
	if isHTTPS(r) {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// clientPageData is a client's page.
type clientPageData struct {
	Client     *coffer.Client
	Owner      string
	Plans      []clientPlanRow // nil without the plans service
	PlansTotal int
	HasPlans   bool // the plans service is there
	Backups    []clientBackupRow
	HasBackups bool          // the backups service is there
	Owners     []ownerOption // for admins: who may own the client
	Form       clientForm
	Logs       *clientLogsData
}

// clientPlanRow is one of a client's plans with when it fires next.
type clientPlanRow struct {
	*coffer.Plan
	NextFireAt *time.Time
}

// clientBackupRow is one of a client's recent backups.
type clientBackupRow struct {
	*coffer.Backup
	PlanName string
	Job      *jobView
}

// ownerOption is a user an admin may make a client's owner.
type ownerOption struct {
	ID, Label string
}

// clientForm is the settings form as sent (or as the client is), with
// the errors to show next to its fields.
type clientForm struct {
	Name, OwnerID string
	Errors        map[string]string
}

// uiClient shows a client's page.
func (s *Server) uiClient(w http.ResponseWriter, r *http.Request, c *uiContext) {
	s.renderClient(w, r, c, http.StatusOK, nil)
}

// renderClient renders client {id}'s page; form, when not nil, is a
// settings form sent back with its errors.
func (s *Server) renderClient(w http.ResponseWriter, r *http.Request, c *uiContext, status int, form *clientForm) {
	ctx := r.Context()
	cl, err := s.opts.Agents.GetClient(ctx, r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	data := &clientPageData{Client: cl, Owner: s.opts.Agents.OwnerName(ctx, cl),
		Form: clientForm{Name: cl.Name, OwnerID: cl.OwnerID}}
	if form != nil {
		data.Form = *form
	}
	if err := s.loadClientPage(ctx, c, data); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	if data.Logs, err = s.loadClientLogs(ctx, r, cl.ID); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	v := c.view(cl.Name, "clients", data)
	if len(data.Backups) > 0 {
		if v.Live, err = s.uiLive(ctx); err != nil {
			s.uiFail(w, r, c, err)
			return
		}
	}
	s.render(w, r, status, "client", v)
}

// loadClientPage fills in a client's plans, recent backups and, for
// admins, the users who may own it.
func (s *Server) loadClientPage(ctx context.Context, c *uiContext, data *clientPageData) error {
	id := data.Client.ID
	planNames := map[string]string{}
	if s.opts.Plans != nil {
		data.HasPlans = true
		ps, total, err := s.opts.Plans.List(ctx, metadb.PlanFilter{ClientID: id, Limit: clientPlansShown})
		if err != nil {
			return err
		}
		data.PlansTotal = total
		ids := make([]string, len(ps))
		for i := range ps {
			ids[i], planNames[ps[i].ID] = ps[i].ID, ps[i].Name
		}
		var firings map[string]coffer.PlanFiring
		if s.opts.PlanFirings != nil && len(ids) > 0 {
			if firings, err = s.opts.PlanFirings.PlanFirings(ctx, ids); err != nil {
				return err
			}
		}
		for i := range ps {
			data.Plans = append(data.Plans, clientPlanRow{Plan: &ps[i], NextFireAt: firings[ps[i].ID].NextFireAt})
		}
	}
	if s.opts.Backups != nil {
		data.HasBackups = true
		bs, err := s.opts.Backups.List(ctx, metadb.BackupFilter{ClientID: id, Limit: clientBackupsShown})
		if err != nil {
			return err
		}
		for i := range bs {
			b := &bs[i]
			data.Backups = append(data.Backups, clientBackupRow{Backup: b, PlanName: planNames[b.PlanID], Job: backupJob(b)})
		}
	}
	if c.p.Can(coffer.PermManage) {
		return s.loadOwners(ctx, data)
	}
	return nil
}

// loadOwners lists the users an admin may make the client's owner: the
// operators (admins act on every client anyway, viewers on none), and the
// current owner whoever they are.
func (s *Server) loadOwners(ctx context.Context, data *clientPageData) error {
	us, _, err := s.opts.Auth.ListUsers(ctx, metadb.UserFilter{Role: coffer.RoleOperator, Limit: 1000})
	if err != nil {
		return err
	}
	current := data.Client.OwnerID == ""
	for _, u := range us {
		current = current || u.ID == data.Client.OwnerID
		data.Owners = append(data.Owners, ownerOption{ID: u.ID, Label: ownerLabel(&u)})
	}
	if !current {
		data.Owners = append(data.Owners, ownerOption{ID: data.Client.OwnerID, Label: data.Owner})
	}
	return nil
}

// ownerLabel names a user in the owner select: "dora (operator)".
func ownerLabel(u *coffer.User) string {
	label := u.Username + " (" + string(u.Role)
	if u.Disabled {
		label += ", disabled"
	}
	return label + ")"
}

// uiClientUpdate renames a client and, for admins, assigns its owner: the
// fields the form sends that differ from the client are changed (PATCH
// semantics), so an operator's form, which has no owner field, never
// touches the owner.
func (s *Server) uiClientUpdate(w http.ResponseWriter, r *http.Request, c *uiContext) {
	ctx := r.Context()
	id := r.PathValue("id")
	cl, err := s.opts.Agents.GetClient(ctx, id)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	form := &clientForm{Name: r.PostFormValue("name"), OwnerID: cl.OwnerID, Errors: map[string]string{}}
	var patch agents.ClientPatch
	if _, ok := r.PostForm["name"]; ok && strings.TrimSpace(form.Name) != cl.Name {
		patch.Name = &form.Name
	}
	if owner, ok := r.PostForm["owner"]; ok && owner[0] != cl.OwnerID {
		form.OwnerID = owner[0]
		patch.OwnerID = &form.OwnerID
	}
	if patch.Name == nil && patch.OwnerID == nil {
		s.uiDone(w, r, "/clients/"+url.PathEscape(id), "Nothing to change.")
		return
	}
	if _, err := s.opts.Agents.UpdateClient(ctx, c.p, id, patch); err != nil {
		ff := failureOf(ctx, err)
		field, msg := ff.field, ff.message
		if field == "owner_id" {
			field, msg = "owner", "That user does not exist (any more): choose another owner."
		}
		if ff.status >= http.StatusInternalServerError || (field != "name" && field != "owner") {
			s.uiFail(w, r, c, err)
			return
		}
		form.Errors[field] = msg
		s.renderClient(w, r, c, http.StatusBadRequest, form)
		return
	}
	s.uiDone(w, r, "/clients/"+url.PathEscape(id), "Client saved.")
}

// uiClientDelete deletes a client; its backups and restores stay.
func (s *Server) uiClientDelete(w http.ResponseWriter, r *http.Request, c *uiContext) {
	cl, err := s.opts.Agents.DeleteClient(r.Context(), c.p, r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.uiDone(w, r, "/clients", fmt.Sprintf("Client %q deleted. Its backups stay in the history; "+
		"its agent must enroll again to back up this machine.", cl.Name))
}
