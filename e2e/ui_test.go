package e2e

import (
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/cofferhq/coffer/internal/metadb"
)

// TestUI drives the web UI in real Chromium against a real coffer server:
// a failed login shows its error in place, a good one lands on the page
// asked for, the dashboard receives an event live, logout ends the
// session, and a viewer sees no admin entries. Screenshots go to
// test-output/ui/.
func TestUI(t *testing.T) {
	b := newBrowser(t)
	srv := startServer(t, metadb.SQLite, startOptions{})
	admin := srv.login("admin", srv.Password)
	srv.call("POST", "/api/v1/users", admin, map[string]string{"username": "vera", "password": "vera-password-1", "role": "viewer"}).Want(201)

	// A page without a session goes to the login form, which remembers it.
	b.do("open the dashboard signed out", chromedp.Navigate(srv.URL+"/?view=recent"),
		chromedp.WaitVisible(chromedp.CSS("#sign-in")))
	if want := srv.URL + "/login?next=" + url.QueryEscape("/?view=recent"); b.location() != want {
		t.Errorf("signed out: at %s, want %s", b.location(), want)
	}
	b.screenshot("01-login")

	// A wrong password: the error shows in place, the username stays.
	b.do("sign in with a wrong password",
		chromedp.SendKeys(chromedp.CSS("#username"), "admin"),
		chromedp.SendKeys(chromedp.CSS("#password"), "not-the-password"),
		chromedp.Click(chromedp.CSS("#sign-in")),
		chromedp.WaitVisible(chromedp.CSS("#login-error")))
	if msg := browserRun(b, "read the error", chromedp.Text(chromedp.CSS("#login-error"))); !strings.Contains(msg, "Wrong username or password") {
		t.Errorf("login error = %q", msg)
	}
	if v := browserRun(b, "read the username", chromedp.Value(chromedp.CSS("#username"))); v != "admin" {
		t.Errorf("username after a failed login = %q", v)
	}
	b.screenshot("02-login-error")

	// The right one lands on the page first asked for.
	b.do("sign in",
		chromedp.SendKeys(chromedp.CSS("#password"), srv.Password),
		chromedp.Click(chromedp.CSS("#sign-in")),
		chromedp.WaitVisible(chromedp.CSS("#events")))
	if want := srv.URL + "/?view=recent"; b.location() != want {
		t.Errorf("after login: at %s, want %s", b.location(), want)
	}
	if user := browserRun(b, "read the user", chromedp.Text(chromedp.CSS("#signed-in-user"))); user != "admin" {
		t.Errorf("signed in as %q", user)
	}
	if !browserRun(b, "look for Users", chromedp.Evaluate[bool](`!!document.querySelector('nav a[href="/users"]')`)) {
		t.Error("the admin's navigation lacks Users")
	}
	b.screenshot("03-dashboard")

	// An event made elsewhere arrives live over SSE.
	srv.call("POST", "/api/v1/enrollment-tokens", admin, map[string]string{"name": "live-test"}).Want(201)
	b.do("see the event arrive", chromedp.WaitVisible(chromedp.CSS(`#events li[data-code="enrollment_token.created"]`)))
	if first := browserRun(b, "read the first event", chromedp.AttributeValue(chromedp.CSS("#events li"), "data-code")); first.Value != "enrollment_token.created" {
		t.Errorf("newest event = %q, want it first", first.Value)
	}
	b.screenshot("04-dashboard-live-event")

	// A page that does not exist: 404 inside the layout.
	b.do("open a missing page", chromedp.Navigate(srv.URL+"/no-such-page"), chromedp.WaitVisible(chromedp.CSS("#error-title")))
	if h := browserRun(b, "read the heading", chromedp.Text(chromedp.CSS("#error-title"))); h != "Page not found" {
		t.Errorf("missing page heading = %q", h)
	}
	b.screenshot("05-not-found")

	// Logout ends the session: the dashboard asks for a login again.
	b.do("log out", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#sign-in")))
	b.do("reopen the dashboard", chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#sign-in")))
	if !strings.HasPrefix(b.location(), srv.URL+"/login") {
		t.Errorf("after logout the dashboard is at %s", b.location())
	}
	b.screenshot("06-logged-out")

	// A viewer sees no admin entries and no operator events.
	b.do("sign in as a viewer",
		chromedp.SendKeys(chromedp.CSS("#username"), "vera"),
		chromedp.SendKeys(chromedp.CSS("#password"), "vera-password-1"),
		chromedp.Click(chromedp.CSS("#sign-in")),
		chromedp.WaitVisible(chromedp.CSS("#events")))
	nav := browserRun(b, "read the navigation", chromedp.Evaluate[[]string](
		`[...document.querySelectorAll('nav a')].map(a => a.getAttribute('href'))`))
	if strings.Join(nav, " ") != "/ /clients /plans /backups /restores /storage /events" {
		t.Errorf("viewer navigation = %v", nav)
	}
	if browserRun(b, "look for the operator event", chromedp.Evaluate[bool](`!!document.querySelector('#events li[data-code="enrollment_token.created"]')`)) {
		t.Error("a viewer sees an event meant for operators")
	}
	b.screenshot("07-viewer-dashboard")

	// Keyboard: the first Tab reaches the skip link.
	b.do("tab to the skip link", chromedp.KeyEvent("\t"))
	if id := browserRun(b, "read the focus", chromedp.Evaluate[string](`document.activeElement.className`)); id != "skip-link" {
		t.Errorf("first Tab focuses %q, want the skip link", id)
	}

	// htmx runs with the CSP-safe configuration of the htmx-config meta tag.
	if !browserRun(b, "read the htmx config", chromedp.Evaluate[bool](`typeof htmx === 'object' && htmx.config.allowEval === false `+
		`&& htmx.config.includeIndicatorStyles === false && htmx.config.allowScriptTags === false`)) {
		t.Error("htmx is not loaded with allowEval, includeIndicatorStyles and allowScriptTags off")
	}

	// No page broke its Content-Security-Policy or threw.
	for _, m := range b.messages() {
		if strings.Contains(m, "Content Security Policy") || strings.Contains(strings.ToLower(m), "uncaught") {
			t.Errorf("console: %s", m)
		}
	}
	// And the check above can see a violation: an inline style is refused.
	b.do("inject an inline style", chromedp.Evaluate[chromedp.Void](
		`document.head.insertAdjacentHTML('beforeend', '<style>body{color:red}</style>')`))
	deadline := time.Now().Add(5 * time.Second)
	for !slices.ContainsFunc(b.messages(), func(m string) bool { return strings.Contains(m, "Content Security Policy") }) {
		if time.Now().After(deadline) {
			t.Fatalf("an inline style caused no CSP report on the console: %q", b.messages())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
