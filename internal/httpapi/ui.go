package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/web"
)

// The web UI is server-rendered html/template pages under /, enhanced by
// htmx, on the same session cookie as the API. Every UI response carries a
// strict Content-Security-Policy: no inline scripts or styles exist, htmx
// is configured (meta htmx-config) not to inject styles or evaluate code.
// State-changing UI requests must be same-origin (the server's
// CrossOriginProtection) and carry the session's CSRF token.

// uiCSP is the Content-Security-Policy of every UI response.
const uiCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// uiServer renders the UI's pages; its templates are parsed once, in New.
type uiServer struct {
	pages     map[string]*template.Template // page name → layout + partials + page
	fragments *template.Template            // layout + partials, for fragments
	static    *staticFiles
}

// navItem is one entry of the main navigation.
type navItem struct {
	Key, Label, Href string
	perm             coffer.Permission
}

// uiNav is the main navigation; an entry shows only to those holding its
// permission.
var uiNav = []navItem{
	{Key: "dashboard", Label: "Dashboard", Href: "/", perm: coffer.PermRead},
	{Key: "clients", Label: "Clients", Href: "/clients", perm: coffer.PermRead},
	{Key: "plans", Label: "Plans", Href: "/plans", perm: coffer.PermRead},
	{Key: "backups", Label: "Backups", Href: "/backups", perm: coffer.PermRead},
	{Key: "restores", Label: "Restores", Href: "/restores", perm: coffer.PermRead},
	{Key: "storage", Label: "Storage", Href: "/storage", perm: coffer.PermRead},
	{Key: "events", Label: "Events", Href: "/events", perm: coffer.PermRead},
	{Key: "users", Label: "Users", Href: "/users", perm: coffer.PermManage},
}

// uiLink is a navigation entry as a page shows it.
type uiLink struct {
	Label, Href string
	Current     bool
}

// uiUser is the signed-in user as the layout shows them.
type uiUser struct {
	Name string
	Role coffer.Role
}

// uiView is what the layout renders: the page's own data is Data.
type uiView struct {
	Title string
	User  *uiUser
	Nav   []uiLink
	// CSRF is the session's token for hidden form fields; CSRFHeaders is
	// the same as the hx-headers JSON htmx sends with every request.
	CSRF        string
	CSRFHeaders string
	// Flash is the message of the action that led here ("Plan saved.").
	Flash string
	// Live, when set, is the URL of the UI event stream (uiLive) the page
	// listens to: elements with sse-swap="event" receive new events and
	// {{template "job_live"}} wrappers their job's progress.
	Live string
	Data any

	p *coffer.Principal
}

// Can reports whether the signed-in user holds a permission ("read",
// "operate", "manage"), so that pages show only the actions the user may
// take: {{if $.Can "manage"}}. The services check again on every action.
func (v *uiView) Can(perm string) bool { return v.p != nil && v.p.Can(coffer.Permission(perm)) }

// MayOperate reports whether the signed-in user may run jobs on client c
// (admins on every client, operators on those they own).
func (v *uiView) MayOperate(c *coffer.Client) bool {
	return v.p != nil && c != nil && v.p.MayOperate(c) == nil
}

// uiErrorData is the data of the error page and fragment.
type uiErrorData struct {
	Heading, Message, RequestID string
}

func newUIServer() (*uiServer, error) {
	static, err := loadStatic(web.Static())
	if err != nil {
		return nil, err
	}
	src := web.Templates()
	base, err := template.New("layout").Funcs(uiFuncs(static)).ParseFS(src, "layout.html", "partials/*.html")
	if err != nil {
		return nil, fmt.Errorf("parse ui layout: %w", err)
	}
	names, err := fs.Glob(src, "pages/*.html")
	if err != nil {
		return nil, err
	}
	u := &uiServer{pages: map[string]*template.Template{}, static: static}
	// A template that has run can no longer be cloned, so every page and
	// the fragments get their own copy of the base.
	for _, n := range names {
		name := strings.TrimSuffix(path.Base(n), ".html")
		t, err := base.Clone()
		if err == nil {
			t, err = t.ParseFS(src, n)
		}
		if err != nil {
			return nil, fmt.Errorf("parse ui page %s: %w", name, err)
		}
		u.pages[name] = t
	}
	if u.fragments, err = base.Clone(); err != nil {
		return nil, err
	}
	return u, nil
}

// registerUI mounts the web UI: the login and logout forms, the pages, the
// UI's event stream and the static files.
func (s *Server) registerUI() error {
	u, err := newUIServer()
	if err != nil {
		return err
	}
	s.ui = u
	s.mux.HandleFunc("GET /static/{path...}", s.serveStatic)
	s.mux.HandleFunc("GET /login", s.uiLoginForm)
	s.mux.HandleFunc("POST /login", s.uiLogin)
	s.mux.HandleFunc("POST /logout", s.uiLogout)
	s.mux.HandleFunc("GET /{$}", s.uiPage(coffer.PermRead, s.uiDashboard))
	s.mux.HandleFunc("GET /ui/events", s.uiEvents)
	s.registerUIBackups()
	s.registerUIRestores()
	s.registerUIEvents()
	s.registerUIStorage()
	s.registerUIUsers()
	s.registerUIClients()
	s.registerUIPlans()
	return nil
}

// uiOwns reports whether an unrouted request is the UI's to answer (with
// its not-found page) rather than the API's (with a JSON envelope).
func uiOwns(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	p := r.URL.Path
	return p != "/api" && !strings.HasPrefix(p, "/api/")
}

// uiNotFound answers an unrouted UI path: the layout with a not-found
// message for a signed-in user, the login page otherwise, so that which
// pages exist is no secret either.
func (s *Server) uiNotFound(w http.ResponseWriter, r *http.Request) {
	s.uiPage(coffer.PermRead, func(w http.ResponseWriter, r *http.Request, c *uiContext) {
		s.uiError(w, r, c, http.StatusNotFound, "Page not found",
			"There is no page at this address (yet). Use the navigation to find what you are looking for.")
	})(w, r)
}

// setUIHeaders sets the security headers every UI response carries.
func setUIHeaders(h http.Header) {
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
}

// view builds the layout's data for a page of the signed-in user c.
func (c *uiContext) view(title, active string, data any) *uiView {
	v := &uiView{Title: title, Data: data}
	if c == nil || c.p == nil {
		return v
	}
	v.Flash = c.flash
	v.p = c.p
	v.User = &uiUser{Name: c.p.Username, Role: c.p.Role}
	for _, n := range uiNav {
		if c.p.Can(n.perm) {
			v.Nav = append(v.Nav, uiLink{Label: n.Label, Href: n.Href, Current: n.Key == active})
		}
	}
	v.CSRF = c.csrf
	h, _ := json.Marshal(map[string]string{csrfHeader: c.csrf})
	v.CSRFHeaders = string(h)
	return v
}

// render writes a full page. It renders into memory first, so a template
// error becomes a clean 500 rather than half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, page string, v *uiView) {
	t, ok := s.ui.pages[page]
	if !ok {
		s.uiInternal(w, r, fmt.Errorf("ui page %q does not exist", page))
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		s.uiInternal(w, r, fmt.Errorf("render %s: %w", page, err))
		return
	}
	s.writeHTML(w, status, buf.Bytes())
}

// renderFragment writes one named template of web/templates/partials.
func (s *Server) renderFragment(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	var buf bytes.Buffer
	if err := s.ui.fragments.ExecuteTemplate(&buf, name, data); err != nil {
		s.uiInternal(w, r, fmt.Errorf("render %s: %w", name, err))
		return
	}
	s.writeHTML(w, status, buf.Bytes())
}

func (s *Server) writeHTML(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	setUIHeaders(h)
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(body)
}

// uiError answers with the error page, or with just the message for an
// htmx request, which swaps it in place.
func (s *Server) uiError(w http.ResponseWriter, r *http.Request, c *uiContext, status int, heading, message string) {
	data := uiErrorData{Heading: heading, Message: message, RequestID: RequestID(r.Context())}
	if isHTMX(r) {
		s.renderFragment(w, r, status, "error_fragment", data)
		return
	}
	s.render(w, r, status, "error", c.view(heading, "", data))
}

// uiFail answers with what err means to the user: its status and
// sentence, never internal details (those go to the log).
func (s *Server) uiFail(w http.ResponseWriter, r *http.Request, c *uiContext, err error) {
	e := toAPIError(r.Context(), http.StatusInternalServerError, "", err)
	heading := http.StatusText(e.status)
	if heading == "" {
		heading = "Error"
	}
	s.uiError(w, r, c, e.status, heading, sentence(e.Detail))
}

// uiInternal answers a failure of the UI itself (a template that does not
// render) without going through templates again.
func (s *Server) uiInternal(w http.ResponseWriter, r *http.Request, err error) {
	if info := requestInfoFrom(r.Context()); info != nil {
		info.setErr(err)
	}
	body := "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Error · Coffer</title></head><body><main><h1>Internal error</h1><p>" +
		template.HTMLEscapeString(internalDetail+": "+RequestID(r.Context())) + "</p></main></body></html>"
	s.writeHTML(w, http.StatusInternalServerError, []byte(body))
}

// sentence turns an error detail ("wrong username or password") into text
// for a page ("Wrong username or password.").
func sentence(detail string) string {
	if detail == "" {
		return ""
	}
	first, n := utf8.DecodeRuneInString(detail)
	detail = string(unicode.ToUpper(first)) + detail[n:]
	if !strings.HasSuffix(detail, ".") {
		detail += "."
	}
	return detail
}

// isHTMX reports whether htmx sent the request (it then swaps the answer
// into the page instead of loading a new one).
func isHTMX(r *http.Request) bool { return r.Header.Get("HX-Request") == "true" }
