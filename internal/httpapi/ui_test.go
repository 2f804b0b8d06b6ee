package httpapi

import (
	"bufio"
	"context"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/web"
)

// uiReply is a UI response, read whole.
type uiReply struct {
	*http.Response
	Body string
}

// cookie returns the Set-Cookie of the response named name, or nil.
func (r *uiReply) cookie(name string) *http.Cookie {
	for _, c := range r.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// uiDo sends a browser-like request without following redirects. cookies
// are name=value pairs; form, when not nil, is the urlencoded body.
func (f *fixture) uiDo(method, path string, cookies []*http.Cookie, form url.Values, headers ...string) *uiReply {
	f.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, f.ts.URL+path, body)
	if err != nil {
		f.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return &uiReply{Response: resp, Body: string(b)}
}

var hiddenToken = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

// uiLoginForm opens the login form and returns its token cookie and field.
func (f *fixture) uiLoginForm() (*http.Cookie, string) {
	f.t.Helper()
	r := f.uiDo("GET", "/login", nil, nil)
	ck := r.cookie(loginCSRFCookie)
	m := hiddenToken.FindStringSubmatch(r.Body)
	if r.StatusCode != 200 || ck == nil || m == nil {
		f.t.Fatalf("login form: %d %v\n%s", r.StatusCode, r.Header, r.Body)
	}
	return ck, m[1]
}

// uiSignIn logs in through the form and returns the session cookie.
func (f *fixture) uiSignIn(user, password string) *http.Cookie {
	f.t.Helper()
	ck, tok := f.uiLoginForm()
	r := f.uiDo("POST", "/login", []*http.Cookie{ck},
		url.Values{"username": {user}, "password": {password}, "csrf_token": {tok}})
	sess := r.cookie(SessionCookie)
	if r.StatusCode != http.StatusSeeOther || sess == nil {
		f.t.Fatalf("login: %d %v\n%s", r.StatusCode, r.Header, r.Body)
	}
	return sess
}

func TestUIRedirectsToLogin(t *testing.T) {
	t.Parallel()
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	for path, want := range map[string]string{
		"/":                     "/login",
		"/clients?state=failed": "/login?next=" + url.QueryEscape("/clients?state=failed"),
		"/backups/x":            "/login?next=" + url.QueryEscape("/backups/x"),
	} {
		r := f.uiDo("GET", path, nil, nil)
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != want {
			t.Errorf("GET %s: %d Location %q, want 303 %q", path, r.StatusCode, r.Header.Get("Location"), want)
		}
	}
	// A stale cookie is cleared on the way.
	r := f.uiDo("GET", "/", []*http.Cookie{{Name: SessionCookie, Value: "cfr_s_gone"}}, nil)
	if c := r.cookie(SessionCookie); r.StatusCode != http.StatusSeeOther || c == nil || c.MaxAge >= 0 {
		t.Errorf("stale cookie: %d %v", r.StatusCode, r.Header)
	}
	// htmx gets HX-Redirect back to the page it was on.
	r = f.uiDo("GET", "/ui/nothing", nil, nil, "HX-Request", "true", "HX-Current-URL", f.ts.URL+"/plans?x=1")
	if r.StatusCode != http.StatusUnauthorized || r.Header.Get("HX-Redirect") != "/login?next="+url.QueryEscape("/plans?x=1") {
		t.Errorf("htmx: %d HX-Redirect %q", r.StatusCode, r.Header.Get("HX-Redirect"))
	}
	// The event stream refuses rather than redirecting; the API keeps its JSON 401.
	if r := f.uiDo("GET", "/ui/events", nil, nil); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("/ui/events without session: %d", r.StatusCode)
	}
	f.do("GET", "/api/v1/auth/me", "", nil).WantError(401, "authentication_required")
	f.do("GET", "/api/v1/nope", "", nil).WantError(404, "route_not_found")
	// Signed in, /login sends the user on to next.
	sess := f.uiSignIn("viewer", "viewer-password")
	r = f.uiDo("GET", "/login?next=%2Fplans", []*http.Cookie{sess}, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/plans" {
		t.Errorf("signed-in /login: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
}

func TestUISafeNext(t *testing.T) {
	t.Parallel()
	for next, want := range map[string]string{
		"/clients":                      "/clients",
		"/backups?state=x&a=b":          "/backups?state=x&a=b",
		"/%2F%2Fevil.example":           "/%2F%2Fevil.example", // a path on this server
		"":                              "",
		"//evil.example":                "",
		"///evil.example":               "",
		"/\\evil.example":               "",
		"\\\\evil.example":              "",
		"https://evil.example":          "",
		"http:/evil.example":            "",
		"javascript:alert(1)":           "",
		"evil.example":                  "",
		"/\t/evil.example":              "",
		"/\n/evil.example":              "",
		"/login":                        "",
		"/logout":                       "",
		"/" + strings.Repeat("a", 3000): "",
	} {
		if got := safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", next, got, want)
		}
	}

	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	for next, want := range map[string]string{"//evil.example/x": "/", "https://evil.example": "/", "/plans?a=1": "/plans?a=1"} {
		ck, tok := f.uiLoginForm()
		r := f.uiDo("POST", "/login", []*http.Cookie{ck},
			url.Values{"username": {"admin"}, "password": {"admin-password"}, "csrf_token": {tok}, "next": {next}})
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != want {
			t.Errorf("login with next %q: %d Location %q, want %q", next, r.StatusCode, r.Header.Get("Location"), want)
		}
	}
	// The form does not even carry an unsafe next.
	r := f.uiDo("GET", "/login?next="+url.QueryEscape("//evil.example"), nil, nil)
	if strings.Contains(r.Body, "evil.example") {
		t.Errorf("login form keeps an unsafe next:\n%s", r.Body)
	}
}

func TestUILoginErrorInPlace(t *testing.T) {
	t.Parallel()
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	ck, tok := f.uiLoginForm()
	form := url.Values{"username": {"operator"}, "password": {"wrong"}, "csrf_token": {tok}, "next": {"/plans"}}
	r := f.uiDo("POST", "/login", []*http.Cookie{ck}, form)
	if r.StatusCode != http.StatusUnauthorized || r.cookie(SessionCookie) != nil {
		t.Fatalf("wrong password: %d %v", r.StatusCode, r.Header)
	}
	for _, want := range []string{`role="alert"`, "Wrong username or password.", `value="operator"`,
		`name="next" value="/plans"`, `aria-invalid="true"`, `<form method="post" action="/login">`} {
		if !strings.Contains(r.Body, want) {
			t.Errorf("failed login page lacks %q:\n%s", want, r.Body)
		}
	}
	if strings.Contains(r.Body, "wrong\"") {
		t.Error("the page echoes the password")
	}
	// Throttling applies as on the API: the 6th failure in a row is 429.
	for range 4 {
		f.uiDo("POST", "/login", []*http.Cookie{ck}, form)
	}
	r = f.uiDo("POST", "/login", []*http.Cookie{ck}, form)
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" || !strings.Contains(r.Body, "Too many failed logins") {
		t.Errorf("throttled login: %d %v\n%s", r.StatusCode, r.Header, r.Body)
	}
	// Empty fields, and a form without its token.
	r = f.uiDo("POST", "/login", []*http.Cookie{ck}, url.Values{"username": {"admin"}, "csrf_token": {tok}})
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(r.Body, "Enter your username and password.") {
		t.Errorf("empty password: %d\n%s", r.StatusCode, r.Body)
	}
	r = f.uiDo("POST", "/login", nil, url.Values{"username": {"admin"}, "password": {"admin-password"}, "csrf_token": {tok}})
	if r.StatusCode != http.StatusForbidden || r.cookie(SessionCookie) != nil || !strings.Contains(r.Body, "expired") ||
		r.cookie(loginCSRFCookie) == nil {
		t.Errorf("login without the token cookie: %d %v\n%s", r.StatusCode, r.Header, r.Body)
	}
}

func TestUICSRF(t *testing.T) {
	t.Parallel()
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	sess := f.uiSignIn("operator", "operator-password")
	page := f.uiDo("GET", "/", []*http.Cookie{sess}, nil)
	m := hiddenToken.FindStringSubmatch(page.Body)
	if page.StatusCode != 200 || m == nil || !strings.Contains(page.Body, `hx-headers="{&#34;X-CSRF-Token&#34;:&#34;`+m[1]) {
		t.Fatalf("dashboard lacks the CSRF token in a form and hx-headers: %d\n%s", page.StatusCode, page.Body)
	}
	token := m[1]
	// Another session's token does not fit this one.
	other := hiddenToken.FindStringSubmatch(f.uiDo("GET", "/", []*http.Cookie{f.uiSignIn("admin", "admin-password")}, nil).Body)[1]
	if other == token {
		t.Fatal("two sessions share a CSRF token")
	}
	for name, tc := range map[string]struct {
		form    url.Values
		headers []string
	}{
		"none":          {form: url.Values{}},
		"wrong field":   {form: url.Values{"csrf_token": {other}}},
		"wrong header":  {form: url.Values{}, headers: []string{csrfHeader, other}},
		"htmx no token": {form: url.Values{}, headers: []string{"HX-Request", "true"}},
	} {
		r := f.uiDo("POST", "/logout", []*http.Cookie{sess}, tc.form, tc.headers...)
		if r.StatusCode != http.StatusForbidden || !strings.Contains(r.Body, "security token") || r.cookie(SessionCookie) != nil {
			t.Errorf("%s: %d %v\n%s", name, r.StatusCode, r.Header, r.Body)
		}
		if htmx := len(tc.headers) > 0 && tc.headers[0] == "HX-Request"; htmx == strings.Contains(r.Body, "<html") {
			t.Errorf("%s: htmx %v but full page %v", name, htmx, !htmx)
		}
	}
	f.do("GET", "/api/v1/auth/me", "", nil, "Cookie", SessionCookie+"="+sess.Value).Want(200) // still signed in
	// The header form of the token (htmx) is accepted.
	r := f.uiDo("POST", "/logout", []*http.Cookie{sess}, nil, csrfHeader, token)
	if r.StatusCode != http.StatusSeeOther {
		t.Errorf("logout with the header token: %d\n%s", r.StatusCode, r.Body)
	}
}

func TestUILogoutClearsCookie(t *testing.T) {
	t.Parallel()
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	sess := f.uiSignIn("admin", "admin-password")
	token := hiddenToken.FindStringSubmatch(f.uiDo("GET", "/", []*http.Cookie{sess}, nil).Body)[1]
	r := f.uiDo("POST", "/logout", []*http.Cookie{sess}, url.Values{"csrf_token": {token}})
	c := r.cookie(SessionCookie)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/login" || c == nil || c.Value != "" || c.MaxAge >= 0 || !c.HttpOnly {
		t.Fatalf("logout: %d %v", r.StatusCode, r.Header)
	}
	// The session is over on the server too.
	f.do("GET", "/api/v1/auth/me", "", nil, "Cookie", SessionCookie+"="+sess.Value).WantError(401, "invalid_token")
	if r := f.uiDo("GET", "/", []*http.Cookie{sess}, nil); r.StatusCode != http.StatusSeeOther {
		t.Errorf("dashboard after logout: %d", r.StatusCode)
	}
	// Logging out without a session just lands on the login page.
	if r := f.uiDo("POST", "/logout", nil, url.Values{}); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/login" {
		t.Errorf("logout without session: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
}

func TestUISecurityHeaders(t *testing.T) {
	t.Parallel()
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	sess := f.uiSignIn("viewer", "viewer-password")
	for _, path := range []string{"/login", "/", "/clients", "/static/css/coffer.css", "/static/nope.css"} {
		for _, cookies := range [][]*http.Cookie{nil, {sess}} {
			r := f.uiDo("GET", path, cookies, nil)
			if got := r.Header.Get("Content-Security-Policy"); got != uiCSP {
				t.Errorf("GET %s: CSP %q", path, got)
			}
			for h, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
				"X-Frame-Options": "DENY"} {
				if got := r.Header.Get(h); got != want {
					t.Errorf("GET %s: %s = %q, want %q", path, h, got, want)
				}
			}
			if strings.Contains(r.Body, "style=") || strings.Contains(r.Body, "<style") || regexp.MustCompile(`<script>|<script [^>]*>[^<]`).MatchString(r.Body) {
				t.Errorf("GET %s has inline styles or scripts:\n%s", path, r.Body)
			}
		}
	}
	// Nav pages not built yet are 404 with the layout; the viewer sees no Users entry.
	r := f.uiDo("GET", "/clients", []*http.Cookie{sess}, nil)
	if r.StatusCode != http.StatusNotFound || !strings.Contains(r.Body, "Page not found") || !strings.Contains(r.Body, `aria-label="Main"`) {
		t.Errorf("/clients: %d\n%s", r.StatusCode, r.Body)
	}
	if strings.Contains(r.Body, `href="/users"`) {
		t.Error("a viewer's navigation links to Users")
	}
	admin := f.uiDo("GET", "/", []*http.Cookie{f.uiSignIn("admin", "admin-password")}, nil)
	if !strings.Contains(admin.Body, `href="/users"`) || !strings.Contains(admin.Body, `<html lang="en">`) ||
		!strings.Contains(admin.Body, `href="#main"`) {
		t.Errorf("admin dashboard lacks Users, lang or the skip link:\n%s", admin.Body)
	}
}

func TestUIStatic(t *testing.T) {
	t.Parallel()
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	page := f.uiDo("GET", "/login", nil, nil).Body
	for file, ctype := range map[string]string{
		"css/coffer.css":             "text/css; charset=utf-8",
		"vendor/htmx.min.js":         "text/javascript; charset=utf-8",
		"vendor/htmx-ext-sse.min.js": "text/javascript; charset=utf-8",
		"img/favicon.svg":            "image/svg+xml",
	} {
		m := regexp.MustCompile(`"(/static/` + regexp.QuoteMeta(file) + `\?v=[0-9a-f]{16})"`).FindStringSubmatch(page)
		if m == nil {
			t.Errorf("the login page does not link %s with its hash", file)
			continue
		}
		r := f.uiDo("GET", m[1], nil, nil)
		if r.StatusCode != 200 || r.Header.Get("Content-Type") != ctype || len(r.Body) == 0 ||
			r.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
			t.Errorf("GET %s: %d %v", m[1], r.StatusCode, r.Header)
		}
		// Without the current hash: revalidate, by ETag.
		r = f.uiDo("GET", "/static/"+file, nil, nil)
		if r.Header.Get("Cache-Control") != "no-cache" || r.Header.Get("ETag") == "" {
			t.Errorf("GET /static/%s: %v", file, r.Header)
		}
		if r := f.uiDo("GET", "/static/"+file, nil, nil, "If-None-Match", r.Header.Get("ETag")); r.StatusCode != http.StatusNotModified {
			t.Errorf("revalidate %s: %d", file, r.StatusCode)
		}
	}
	for _, p := range []string{"/static/vendor/README", "/static/nope.js", "/static/", "/static/vendor/"} {
		if r := f.uiDo("GET", p, nil, nil); r.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d", p, r.StatusCode)
		}
	}
}

func TestUIEventStream(t *testing.T) {
	t.Parallel()
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	sess := f.uiSignIn("admin", "admin-password")
	viewer := f.uiSignIn("viewer", "viewer-password")
	open := func(c *http.Cookie) chan string {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, "GET", f.ts.URL+"/ui/events", nil)
		req.AddCookie(c)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" ||
			resp.Header.Get("Content-Security-Policy") != uiCSP {
			t.Fatalf("open /ui/events: %v %v", resp, err)
		}
		lines := make(chan string, 100)
		go func() {
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				select {
				case lines <- sc.Text():
				case <-ctx.Done():
					return
				}
			}
		}()
		return lines
	}
	adminLines, viewerLines := open(sess), open(viewer)
	f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "dora", "password": "dora-password", "role": "viewer"}).Want(201)
	var frame []string
	timeout := time.After(15 * time.Second)
	for len(frame) == 0 || frame[len(frame)-1] != "" {
		select {
		case l := <-adminLines:
			if strings.HasPrefix(l, "id: ") || len(frame) > 0 {
				frame = append(frame, l)
			}
		case <-timeout:
			t.Fatalf("no event frame; got %q", frame)
		}
	}
	if len(frame) != 4 || frame[1] != "event: event" || !strings.HasPrefix(frame[2], `data: <li class="event"`) ||
		!strings.Contains(frame[2], `data-code="user.created"`) || !strings.Contains(frame[2], "dora") {
		t.Errorf("frame = %q", frame)
	}
	// user.created is for admins: the viewer's stream shows no such thing.
	quiet := time.After(500 * time.Millisecond)
	for done := false; !done; {
		select {
		case l := <-viewerLines:
			if strings.Contains(l, "user.created") {
				t.Errorf("viewer got %q", l)
			}
		case <-quiet:
			done = true
		}
	}

	// User text is escaped, and a multi-line fragment stays one SSE event.
	b, err := f.api.eventFrame(context.Background(), &coffer.Event{ID: 7, Title: "<script>x</script>", Message: "one\r\ntwo\rthree"})
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	if strings.Contains(got, "<script>") || !strings.Contains(got, "&lt;script&gt;") || !strings.HasSuffix(got, "\n\n") ||
		strings.Count(got, "\n\n") != 1 || strings.Contains(got, "\r") || !strings.Contains(got, "\ndata: two\ndata: three") {
		t.Errorf("frame = %q", got)
	}
}

// wantIn fails unless body holds every one of want.
func wantIn(t *testing.T, what, body string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, body)
		}
	}
}

// wantNotIn fails if body holds any of unwanted.
func wantNotIn(t *testing.T, what, body string, unwanted ...string) {
	t.Helper()
	for _, w := range unwanted {
		if strings.Contains(body, w) {
			t.Errorf("%s has %q", what, w)
		}
	}
}

// TestUITemplatesHaveNoInlineCode guards the Content-Security-Policy at the
// source: no template has an inline script or style, a style attribute or
// an event-handler attribute, which the policy would block in the browser.
func TestUITemplatesHaveNoInlineCode(t *testing.T) {
	inline := regexp.MustCompile(`(?i)<script(\s[^>]*)?>\s*[^<\s]|<style[\s>]|\sstyle\s*=|\son[a-z]+\s*=|javascript:`)
	src := web.Templates()
	n := 0
	err := fs.WalkDir(src, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(src, p)
		if err != nil {
			return err
		}
		n++
		if m := inline.FindString(string(b)); m != "" {
			t.Errorf("%s has inline code the CSP forbids: %q", p, m)
		}
		return nil
	})
	if err != nil || n < 20 {
		t.Fatalf("read %d templates: %v", n, err)
	}
	for _, bad := range []string{`<div style="x">`, `<a onclick="x()">`, `<script>alert(1)</script>`, `<style>p{}</style>`} {
		if !inline.MatchString(bad) {
			t.Errorf("the check misses %q", bad)
		}
	}
	if inline.MatchString(`<script src="/static/x.js" defer></script>`) {
		t.Error("the check refuses a script file")
	}
}

// TestUIRefusalSaysWhatToAsk: a page the account may not see says which
// role would open it.
func TestUIRefusalSaysWhatToAsk(t *testing.T) {
	t.Parallel()
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	viewer := f.uiSignIn("viewer", "viewer-password")
	r := f.uiDo("GET", "/users", []*http.Cookie{viewer}, nil)
	if r.StatusCode != http.StatusForbidden || !strings.Contains(r.Body, "needs the manage permission") ||
		!strings.Contains(r.Body, "give your account the admin role") {
		t.Errorf("/users as a viewer: %d\n%s", r.StatusCode, r.Body)
	}
}
