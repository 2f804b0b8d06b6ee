package httpapi

import (
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/server/auth"
)

// The UI's CSRF token travels as a hidden form field or, from htmx, as a
// header (hx-headers on <body>).
const (
	csrfField  = "csrf_token"
	csrfHeader = "X-CSRF-Token"
	// loginCSRFCookie holds the login form's token: before login there is
	// no session to derive one from, so the form's token is double-submitted.
	loginCSRFCookie = "coffer_login_csrf"
	// csrfPurpose separates the CSRF token from anything else ever derived
	// from a session secret.
	csrfPurpose = "coffer ui csrf v1"
)

// uiContext is the signed-in user of a UI request.
type uiContext struct {
	p     *coffer.Principal
	csrf  string // the session's CSRF token
	flash string // the message of the action that led to this page
}

// uiHandler serves a UI request of a signed-in user.
type uiHandler func(w http.ResponseWriter, r *http.Request, c *uiContext)

// uiPage wraps a UI handler: without a valid session the browser goes to
// the login page (and comes back after), without perm the user gets a 403
// page, and a state-changing request without the session's CSRF token is
// refused.
func (s *Server) uiPage(perm coffer.Permission, h uiHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		setUIHeaders(w.Header())
		c, err := s.uiSession(r)
		if err != nil {
			if coffer.IsKind(err, coffer.KindUnauthenticated) {
				s.toLogin(w, r)
				return
			}
			s.uiFail(w, r, nil, err)
			return
		}
		if !c.p.Can(perm) {
			s.uiError(w, r, c, http.StatusForbidden, "Not allowed",
				fmt.Sprintf("This needs the %s permission, which your account (role %s) does not hold. "+
					"Ask an administrator to give your account the %s role if you need it.", perm, c.p.Role, roleFor[perm]))
			return
		}
		if !safeMethod(r.Method) && !s.checkCSRF(w, r, c) {
			s.refuseCSRF(w, r, c)
			return
		}
		if r.Method == http.MethodGet && !isHTMX(r) {
			c.flash = takeFlash(w, r)
		}
		h(w, r, c)
	}
}

// roleFor is the least role holding each permission, for refusals that say
// what to ask for.
var roleFor = map[coffer.Permission]coffer.Role{coffer.PermRead: coffer.RoleViewer,
	coffer.PermOperate: coffer.RoleOperator, coffer.PermManage: coffer.RoleAdmin}

// uiSession authenticates a UI request by its session cookie. Only a
// login session counts: API tokens and agent credentials are for API
// clients, not browsers.
func (s *Server) uiSession(r *http.Request) (*uiContext, error) {
	ck, err := r.Cookie(SessionCookie)
	if err != nil || ck.Value == "" || !strings.HasPrefix(ck.Value, auth.PrefixSession) {
		return nil, coffer.Errorf(coffer.KindUnauthenticated, "authentication_required", "sign in first")
	}
	p, err := s.opts.Auth.Authenticate(r.Context(), ck.Value)
	if err != nil {
		return nil, err
	}
	if p.Kind != coffer.PrincipalSession {
		return nil, coffer.Errorf(coffer.KindUnauthenticated, "authentication_required", "sign in first")
	}
	if info := requestInfoFrom(r.Context()); info != nil {
		info.setUser(p.Username)
	}
	return &uiContext{p: p, csrf: csrfToken(ck.Value)}, nil
}

// csrfToken derives a session's CSRF token from its secret, which only the
// browser holding the HttpOnly cookie and the server know. The token
// reveals nothing of the secret, lives as long as the session, and needs no
// server-side state or key.
func csrfToken(sessionSecret string) string {
	m := hmac.New(sha256.New, []byte(sessionSecret))
	m.Write([]byte(csrfPurpose))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF reports whether a state-changing request carries the session's
// CSRF token, in the X-CSRF-Token header (htmx) or the csrf_token field.
func (s *Server) checkCSRF(w http.ResponseWriter, r *http.Request, c *uiContext) bool {
	got := r.Header.Get(csrfHeader)
	if got == "" {
		r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
		got = r.PostFormValue(csrfField)
	}
	return got != "" && hmac.Equal([]byte(got), []byte(c.csrf))
}

func (s *Server) refuseCSRF(w http.ResponseWriter, r *http.Request, c *uiContext) {
	s.uiError(w, r, c, http.StatusForbidden, "Form expired",
		"This request did not carry the form's security token, so nothing was changed. "+
			"Reload the page and try again; if it keeps happening, sign out and in again.")
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// toLogin sends a browser without a valid session to the login page; a
// GET comes back to where it was going after login. A stale session
// cookie is cleared on the way.
func (s *Server) toLogin(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(SessionCookie); err == nil && ck.Value != "" {
		http.SetCookie(w, clearSessionCookie(r))
	}
	target := "/login"
	next := ""
	switch {
	case isHTMX(r):
		// htmx follows HX-Redirect with a full page load; come back to the
		// page the request was made from.
		if u, err := url.Parse(r.Header.Get("HX-Current-URL")); err == nil {
			next = safeNext(u.RequestURI())
		}
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		next = safeNext(r.URL.RequestURI())
	}
	if next != "" && next != "/" {
		target += "?next=" + url.QueryEscape(next)
	}
	if isHTMX(r) {
		w.Header().Set("HX-Redirect", target)
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	redirect(w, target)
}

// uiDone ends a successful form action: the browser goes to target (a
// local path) and target shows flash once. An htmx request is told with
// HX-Redirect, which htmx follows with a full page load.
func (s *Server) uiDone(w http.ResponseWriter, r *http.Request, target, flash string) {
	if flash != "" {
		http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: url.QueryEscape(flash), Path: "/", MaxAge: 60,
			HttpOnly: true, Secure: isHTTPS(r), SameSite: http.SameSiteLaxMode})
	}
	if isHTMX(r) {
		w.Header().Set("HX-Redirect", target)
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	redirect(w, target)
}

// flashCookie carries a flash message across the redirect after a form.
const flashCookie = "coffer_flash"

// takeFlash returns the flash message the request carries and clears it,
// so that it shows once.
func takeFlash(w http.ResponseWriter, r *http.Request) string {
	ck, err := r.Cookie(flashCookie)
	if err != nil || ck.Value == "" {
		return ""
	}
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: isHTTPS(r), SameSite: http.SameSiteLaxMode})
	msg, err := url.QueryUnescape(ck.Value)
	if err != nil || len(msg) > 500 {
		return ""
	}
	return msg
}

// redirect answers 303 See Other to a local path.
func redirect(w http.ResponseWriter, target string) {
	w.Header().Set("Location", target)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusSeeOther)
}

// safeNext returns next when it is a path on this server, and "" for
// anything that could lead elsewhere: absolute and scheme-relative URLs,
// backslashes (which browsers read as slashes), control characters (which
// they strip), and the login and logout routes themselves.
func safeNext(next string) string {
	if next == "" || len(next) > 2048 || next[0] != '/' || strings.HasPrefix(next, "//") {
		return ""
	}
	for _, c := range next {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return ""
		}
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
		return ""
	}
	if u.Path == "/login" || u.Path == "/logout" {
		return ""
	}
	return next
}

// loginData is the login page's data.
type loginData struct {
	CSRF     string
	Next     string
	Username string
	Error    string
}

// uiLoginForm serves the login page, or sends a signed-in user on.
func (s *Server) uiLoginForm(w http.ResponseWriter, r *http.Request) {
	setUIHeaders(w.Header())
	next := safeNext(r.URL.Query().Get("next"))
	if _, err := s.uiSession(r); err == nil {
		redirect(w, cmp.Or(next, "/"))
		return
	}
	s.renderLogin(w, r, http.StatusOK, loginData{CSRF: s.loginToken(w, r), Next: next})
}

// uiLogin checks the login form with the auth service, exactly as
// POST /api/v1/auth/login does (same throttling, same session), and sets
// the session cookie. Failures show on the form, in place.
func (s *Server) uiLogin(w http.ResponseWriter, r *http.Request) {
	setUIHeaders(w.Header())
	r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	if err := r.ParseForm(); err != nil {
		s.renderLogin(w, r, http.StatusBadRequest, loginData{CSRF: s.loginToken(w, r),
			Error: "The form could not be read. Reload the page and try again."})
		return
	}
	data := loginData{Username: r.PostFormValue("username"), Next: safeNext(r.PostFormValue("next"))}
	password := r.PostFormValue("password")
	if ck, err := r.Cookie(loginCSRFCookie); err != nil || ck.Value == "" ||
		!hmac.Equal([]byte(ck.Value), []byte(r.PostFormValue(csrfField))) {
		data.CSRF = s.newLoginToken(w, r)
		data.Error = "This sign-in form has expired. Enter your password again."
		s.renderLogin(w, r, http.StatusForbidden, data)
		return
	}
	data.CSRF = r.PostFormValue(csrfField)
	switch {
	case data.Username == "" || password == "":
		data.Error = "Enter your username and password."
		s.renderLogin(w, r, http.StatusBadRequest, data)
		return
	case len(data.Username) > 64 || len(password) > 1024:
		data.Error = "Wrong username or password."
		s.renderLogin(w, r, http.StatusUnauthorized, data)
		return
	}

	info := requestInfoFrom(r.Context())
	res, err := s.opts.Auth.Login(r.Context(), auth.LoginRequest{Username: data.Username, Password: password,
		RemoteIP: info.clientIP, UserAgent: r.UserAgent()})
	if err != nil {
		e := toAPIError(r.Context(), http.StatusInternalServerError, "", err)
		data.Error = sentence(e.Detail)
		if e.status >= 500 {
			data.Error = "Signing in failed because of an error on the server. Try again later; quote request id " +
				e.CorrelationID + " when reporting it."
		}
		if secs, ok := e.Metadata["retry_after_seconds"].(int); ok {
			w.Header().Set("Retry-After", strconv.Itoa(secs))
		}
		s.renderLogin(w, r, e.status, data)
		return
	}
	info.setUser(res.User.Username)
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: res.Token, Path: "/", Expires: res.Session.ExpiresAt,
		HttpOnly: true, Secure: info.https, SameSite: http.SameSiteLaxMode})
	http.SetCookie(w, &http.Cookie{Name: loginCSRFCookie, Value: "", Path: "/login", MaxAge: -1,
		HttpOnly: true, Secure: info.https, SameSite: http.SameSiteStrictMode})
	redirect(w, cmp.Or(data.Next, "/"))
}

// uiLogout ends the session and clears its cookie. Without a valid
// session there is nothing to end, and the browser just goes to login.
func (s *Server) uiLogout(w http.ResponseWriter, r *http.Request) {
	setUIHeaders(w.Header())
	c, err := s.uiSession(r)
	switch {
	case coffer.IsKind(err, coffer.KindUnauthenticated):
	case err != nil:
		s.uiFail(w, r, nil, err)
		return
	case !s.checkCSRF(w, r, c):
		s.refuseCSRF(w, r, c)
		return
	default:
		if err := s.opts.Auth.Logout(r.Context(), c.p); err != nil {
			s.uiFail(w, r, c, err)
			return
		}
	}
	http.SetCookie(w, clearSessionCookie(r))
	redirect(w, "/login")
}

func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, status int, data loginData) {
	s.render(w, r, status, "login", (*uiContext)(nil).view("Sign in", "", data))
}

// loginToken returns the login form's CSRF token, reusing the browser's
// cookie when it has one so that two open login tabs both work.
func (s *Server) loginToken(w http.ResponseWriter, r *http.Request) string {
	if ck, err := r.Cookie(loginCSRFCookie); err == nil && len(ck.Value) >= 26 && len(ck.Value) <= 64 {
		return ck.Value
	}
	return s.newLoginToken(w, r)
}

func (s *Server) newLoginToken(w http.ResponseWriter, r *http.Request) string {
	tok := rand.Text()
	http.SetCookie(w, &http.Cookie{Name: loginCSRFCookie, Value: tok, Path: "/login",
		HttpOnly: true, Secure: isHTTPS(r), SameSite: http.SameSiteStrictMode})
	return tok
}

func clearSessionCookie(r *http.Request) *http.Cookie {
	return &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: isHTTPS(r), SameSite: http.SameSiteLaxMode}
}

// isHTTPS reports whether the browser reached us over HTTPS (directly or
// through a trusted proxy), which decides the cookies' Secure flag.
func isHTTPS(r *http.Request) bool {
	if info := requestInfoFrom(r.Context()); info != nil {
		return info.https
	}
	return r.TLS != nil
}
