package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/cofferhq/coffer/internal/metadb"
)

// TestUIBackupFlow is the path an administrator takes in the web UI, in
// real Chromium against the real server and a real agent: enroll the agent
// with the command the enroll page shows, create a plan whose include path
// is picked in the live file browser, run it, watch its progress reach
// success over SSE, browse the backup, download a file and check its
// bytes, restore a folder to another directory and check it, and log out.
// A viewer then sees no action they could not take on any page. Every main
// page is screenshotted to test-output/ui/.
// It runs on SQLite and on PostgreSQL; the second run's screenshots
// replace the first's.
func TestUIBackupFlow(t *testing.T) {
	dialects(t, testUIBackupFlow)
}

func testUIBackupFlow(t *testing.T, d metadb.Dialect) {
	b := newBrowser(t)
	srv := startServer(t, d, startOptions{})
	admin := srv.login("admin", srv.Password)
	srv.call("POST", "/api/v1/users", admin, map[string]string{"username": "vera", "password": "vera-password-1", "role": "viewer"}).Want(201)

	src := filepath.Join(t.TempDir(), "src")
	files := map[string]string{
		"hello.txt":          "hello from the coffer web UI\n",
		"docs/report.txt":    strings.Repeat("quarterly numbers ", 2000),
		"docs/deep/note.md":  "# a note\n",
		"name with space.md": "spaces survive\n",
	}
	for name, body := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	uiSignIn(b, srv.URL, "admin", srv.Password)
	b.screenshot("10-dashboard")

	// Enroll: the page shows a command; run exactly that (with this test's
	// binary and a state directory of its own).
	b.do("open the enroll page", chromedp.Navigate(srv.URL+"/clients/enroll"), chromedp.WaitVisible(chromedp.CSS("#enroll-name")))
	b.do("create an enrollment token",
		chromedp.SendKeys(chromedp.CSS("#enroll-name"), "ui-box"),
		chromedp.Click(chromedp.CSS("#enroll-create")),
		chromedp.WaitVisible(chromedp.CSS("#enroll-command")))
	b.screenshot("11-enroll-command")
	command := strings.TrimSpace(browserRun(b, "read the command", chromedp.TextContent(chromedp.CSS("#enroll-command"))))
	stateDir := filepath.Join(t.TempDir(), "state")
	runShownCommand(t, command, srv.URL, stateDir)
	startAgent(t, stateDir)
	clientID := waitClientOnline(t, srv, admin, "ui-box")

	b.do("open the clients", chromedp.Navigate(srv.URL+"/clients"), chromedp.WaitVisible(chromedp.CSS(`a[href="/clients/`+clientID+`"]`)))
	b.screenshot("12-clients")
	b.do("open the client", chromedp.Navigate(srv.URL+"/clients/"+clientID), chromedp.WaitVisible(chromedp.CSS("#browse-files")))
	b.do("browse the machine", chromedp.Click(chromedp.CSS("#browse-files")), chromedp.WaitVisible(chromedp.CSS("#file-browser li[data-path]")))
	b.screenshot("13-client-detail")
	checkLabels(t, b)

	// A plan whose include path comes from the file browser.
	b.do("open the plan form", chromedp.Navigate(srv.URL+"/plans/new?client="+clientID), chromedp.WaitVisible(chromedp.CSS("#plan-name")))
	b.do("name the plan and type a schedule",
		chromedp.SendKeys(chromedp.CSS("#plan-name"), "ui-plan"),
		clearField("#plan-schedule"),
		chromedp.SendKeys(chromedp.CSS("#plan-schedule"), "0 30 2 * * ?"))
	waitFor(t, func() bool {
		return browserRun(b, "count fire times", chromedp.Evaluate[int](`document.querySelectorAll('#schedule-preview li').length`)) == 5
	})
	b.do("open the file browser", chromedp.Click(chromedp.CSS("#plan-browse")), chromedp.WaitVisible(chromedp.CSS("#plan-file-browser li[data-path]")))
	openDirIn(b, "#plan-file-browser", filepath.Dir(src))
	b.do("pick the folder",
		chromedp.Click(chromedp.CSS(`#plan-file-browser li[data-path="`+src+`"] .pick-path`)),
		chromedp.WaitVisible(chromedp.CSS(`#include-list input[value="`+src+`"]`)))
	b.screenshot("14-plan-form")
	checkLabels(t, b)
	b.do("save the plan", chromedp.Click(chromedp.CSS("#plan-save")), chromedp.WaitVisible(chromedp.CSS("#run-now")))
	planURL := b.location()
	b.screenshot("15-plan-detail")

	// Run now: the backup page follows its progress live to success.
	b.do("run the plan", chromedp.Click(chromedp.CSS("#run-now")), chromedp.WaitVisible(chromedp.CSS("#backup-progress")))
	backupURL := b.location()
	backupID := strings.TrimPrefix(backupURL, srv.URL+"/backups/")
	// The page follows the backup live and, when it ends, reloads with
	// what only a finished backup has: its browse link.
	b.waitJS("the backup to succeed", `document.readyState === "complete" && `+
		`!!document.querySelector('#backup-progress [data-state="succeeded"]') && !!document.querySelector('#browse')`, 3*time.Minute)
	b.screenshot("16-backup-detail")

	// Browse the backup and download a file with the browser's session.
	b.do("browse the backup", chromedp.Click(chromedp.CSS("#browse")), chromedp.WaitVisible(chromedp.CSS("li[data-path]")))
	b.do("open the source folder", chromedp.Navigate(srv.URL+"/backups/"+backupID+"/browse?path="+url.QueryEscape(src)),
		chromedp.WaitVisible(chromedp.CSS(`li[data-path="`+src+`/hello.txt"]`)))
	b.screenshot("17-backup-browse")
	for _, name := range []string{"hello.txt", "name with space.md"} {
		href := browserRun(b, "read the download link", chromedp.AttributeValue(chromedp.CSS(`li[data-path="`+src+`/`+name+`"] a.download`), "href"))
		if !href.Exists {
			t.Fatalf("%s has no download link", name)
		}
		got := browserRun(b, "download "+name, chromedp.Evaluate[string](
			fmt.Sprintf(`fetch(%q, {credentials: "same-origin"}).then(r => r.ok ? r.text() : "HTTP " + r.status)`, href.Value),
			chromedp.EvalAwaitPromise))
		if got != files[name] {
			t.Errorf("downloaded %s = %q, want %q", name, got, files[name])
		}
	}
	tarType := browserRun(b, "download the folder as tar", chromedp.Evaluate[string](
		`fetch(document.querySelector('li[data-path="`+src+`/docs"] a.download-tar').href).then(r => r.status + " " + r.headers.get("Content-Type"))`,
		chromedp.EvalAwaitPromise))
	if !strings.HasPrefix(tarType, "200 application/x-tar") {
		t.Errorf("folder tar download: %s", tarType)
	}
	b.do("open the versions of a file", chromedp.Click(chromedp.CSS(`li[data-path="`+src+`/hello.txt"] a.versions`)),
		chromedp.WaitVisible(chromedp.CSS("main table")))
	b.screenshot("18-versions")

	// Restore a folder from the browser to another directory.
	dst := filepath.Join(t.TempDir(), "restored")
	b.do("back to the source folder", chromedp.Navigate(srv.URL+"/backups/"+backupID+"/browse?path="+url.QueryEscape(src)),
		chromedp.WaitVisible(chromedp.CSS(`li[data-path="`+src+`/docs"] a.restore-here`)))
	b.do("restore from here", chromedp.Click(chromedp.CSS(`li[data-path="`+src+`/docs"] a.restore-here`)),
		chromedp.WaitVisible(chromedp.CSS("form[id^=restore-step-]")))
	for step := 0; ; step++ {
		if step > 8 {
			t.Fatalf("the restore wizard never reached its confirm step (at %s)", b.location())
		}
		if browserRun(b, "look for the confirm button", chromedp.Evaluate[bool](`!!document.querySelector('#restore-confirm')`)) {
			break
		}
		if browserRun(b, "look for the destination", chromedp.Evaluate[bool](`!!document.querySelector('#restore-destination')`)) {
			b.do("type the destination", clearField("#restore-destination"),
				chromedp.SendKeys(chromedp.CSS("#restore-destination"), dst))
		}
		b.screenshot(fmt.Sprintf("19-restore-step-%d", step))
		checkLabels(t, b)
		form := browserRun(b, "read the step", chromedp.Evaluate[string](`document.querySelector('form[id^=restore-step-]').id`))
		b.do("go on from "+form, chromedp.Click(chromedp.CSS("#restore-next")))
		b.waitJS("the step after "+form, fmt.Sprintf(`document.readyState === "complete" && `+
			`(document.querySelector('form[id^=restore-step-]') || {}).id !== %q`, form), 30*time.Second)
	}
	b.screenshot("20-restore-confirm")
	b.do("confirm the restore", chromedp.Click(chromedp.CSS("#restore-confirm")), chromedp.WaitVisible(chromedp.CSS("#restore-progress")))
	b.waitJS("the restore to succeed", `document.readyState === "complete" && `+
		`!!document.querySelector('#restore-progress [data-state="succeeded"]') && !document.querySelector('[data-reload-when-done]')`, 3*time.Minute)
	if !browserRun(b, "look for the delete button", chromedp.Evaluate[bool](`!!document.querySelector('#restore-delete') && !document.querySelector('#restore-cancel')`)) {
		t.Error("the finished restore's page did not reload to its final actions (delete, no cancel)")
	}
	b.screenshot("21-restore-detail")
	for name, body := range files {
		p := filepath.Join(dst, src, name)
		got, err := os.ReadFile(p)
		switch {
		case strings.HasPrefix(name, "docs/") && err != nil:
			t.Errorf("restored %s: %v", name, err)
		case strings.HasPrefix(name, "docs/") && string(got) != body:
			t.Errorf("restored %s = %q, want %q", name, got, body)
		case !strings.HasPrefix(name, "docs/") && err == nil:
			t.Errorf("%s was restored, but only the docs folder was asked for", name)
		}
	}

	// Every main page, as the administrator sees it.
	pages := []string{"/backups", "/restores", "/plans", "/storage", "/events", "/users", "/account"}
	for i, p := range pages {
		b.do("open "+p, chromedp.Navigate(srv.URL+p), chromedp.WaitVisible(chromedp.CSS("main h1")))
		if h := browserRun(b, "read the heading", chromedp.Text(chromedp.CSS("main h1"))); h == "Page not found" {
			t.Errorf("%s is missing", p)
		}
		checkLabels(t, b)
		b.screenshot(fmt.Sprintf("%02d-admin-%s", 30+i, strings.Trim(p, "/")))
	}

	// The label check above sees a control without one.
	b.do("add an unlabelled field", chromedp.Evaluate[chromedp.Void](
		`document.querySelector('main').insertAdjacentHTML('beforeend', '<input id="probe"><button id="probe-button"></button>')`))
	if bad := unlabelled(b); len(bad) != 2 {
		t.Errorf("the label check found %q, want the unlabelled field and button just added", bad)
	}

	// On a phone's width no page scrolls sideways (wide tables scroll
	// inside their own box).
	b.do("narrow the window", chromedp.EmulateViewport(375, 800))
	for _, p := range []string{"/", "/clients/" + clientID, strings.TrimPrefix(planURL, srv.URL) + "/edit", "/backups",
		"/backups/" + backupID, "/backups/" + backupID + "/browse?path=" + url.QueryEscape(src), "/restores", "/storage", "/events"} {
		b.do("open "+p+" narrow", chromedp.Navigate(srv.URL+p), chromedp.WaitVisible(chromedp.CSS("main h1")))
		if w := browserRun(b, "measure "+p, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 375 {
			wide := browserRun(b, "find what is too wide", chromedp.Evaluate[[]string](`[...document.querySelectorAll('body *')]
				.filter(e => e.getBoundingClientRect().right > 376 && !e.parentElement.closest('.table-wrap'))
				.slice(-6).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className + ': ' + (e.textContent || '').trim().slice(0, 40))`))
			t.Errorf("%s is %d px wide on a 375 px screen; too wide: %q", p, w, wide)
			b.screenshot("narrow-too-wide-" + strings.NewReplacer("/", "_", "?", "_").Replace(p))
		}
	}
	b.screenshot("40-narrow-last")
	b.do("widen the window", chromedp.EmulateReset())

	// The check below sees actions where there are some.
	b.do("open the plan as the admin", chromedp.Navigate(planURL), chromedp.WaitVisible(chromedp.CSS("#run-now")))
	if actions := pageActions(b); len(actions) < 3 {
		t.Errorf("the admin's plan page shows the actions %q, want run now, edit and delete", actions)
	}

	b.do("log out", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#sign-in")))
	if !strings.HasPrefix(b.location(), srv.URL+"/login") {
		t.Errorf("after logout the browser is at %s", b.location())
	}

	// A viewer: the same pages, and not one control that changes anything
	// besides their own session and account.
	uiSignIn(b, srv.URL, "vera", "vera-password-1")
	viewerPages := []string{"/", "/clients", "/clients/" + clientID, strings.TrimPrefix(planURL, srv.URL), "/plans",
		"/backups", "/backups/" + backupID, "/backups/" + backupID + "/browse?path=" + url.QueryEscape(src), "/restores", "/events"}
	for i, p := range viewerPages {
		b.do("open "+p+" as a viewer", chromedp.Navigate(srv.URL+p), chromedp.WaitVisible(chromedp.CSS("main")))
		if actions := pageActions(b); len(actions) > 0 {
			t.Errorf("a viewer sees actions on %s: %q", p, actions)
		}
		b.screenshot(fmt.Sprintf("%02d-viewer-%d", 50+i, i))
	}

	for _, m := range b.messages() {
		if strings.Contains(m, "Content Security Policy") || strings.Contains(strings.ToLower(m), "uncaught") {
			t.Errorf("console: %s", m)
		}
	}
}

// checkLabels fails t for every control of the current page that a
// screen reader could not name.
func checkLabels(t *testing.T, b *browser) {
	t.Helper()
	if bad := unlabelled(b); len(bad) > 0 {
		url := browserRun(b, "read the address", chromedp.Evaluate[string](`location.pathname + location.search`))
		t.Errorf("%s: controls without a label: %q", url, bad)
	}
}

// unlabelled lists the page's controls that a screen reader could not
// name: form fields without a label, buttons and links without text.
func unlabelled(b *browser) []string {
	b.t.Helper()
	return browserRun(b, "look for unlabelled controls", chromedp.Evaluate[[]string](`[
		...[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
			.filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby')),
		...[...document.querySelectorAll('button, a[href]')]
			.filter(e => !e.textContent.trim() && !e.getAttribute('aria-label') && !e.querySelector('img[alt]:not([alt=""])')),
	].map(e => location.pathname + ": " + e.outerHTML.slice(0, 120))`))
}

// pageActions lists the controls of the page's main content that change
// something: forms that post, htmx posts, and links to forms that do.
func pageActions(b *browser) []string {
	b.t.Helper()
	return browserRun(b, "list the actions", chromedp.Evaluate[[]string](`[...document.querySelectorAll(
		'main form[method=post], main [hx-post], main a[href$="/edit"], main a[href^="/plans/new"], main a[href^="/restores/new"], main a[href^="/clients/enroll"]')]
		.map(e => e.outerHTML.slice(0, 120))`))
}

// uiSignIn signs in through the login form.
func uiSignIn(b *browser, base, user, password string) {
	b.t.Helper()
	b.do("sign in as "+user, chromedp.Navigate(base+"/login"), chromedp.WaitVisible(chromedp.CSS("#username")),
		chromedp.SendKeys(chromedp.CSS("#username"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("#sign-in")),
		chromedp.WaitVisible(chromedp.CSS("#signed-in-user")))
}

// clearField empties a text field, as selecting its text and deleting it
// would.
func clearField(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%q).value = ""`, sel))
}

// waitJS waits until expr is true on the page shown, through page loads
// (while one navigates, the expression cannot run).
func (b *browser) waitJS(what, expr string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("waiting for %s: %q never held (last error %v)\npage:\n%s", what, expr, err, b.pageText())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// htmxSettled waits until htmx has no request in flight and has settled
// its last swap: a click on content still settling can be lost.
func htmxSettled() chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](`!document.querySelector('.htmx-request, .htmx-settling, .htmx-swapping, .htmx-added')`)
}

// openDirIn walks the file browser in container down to dir, one
// directory at a time, as a person would.
func openDirIn(b *browser, container, dir string) {
	b.t.Helper()
	b.do("let the file browser settle", htmxSettled())
	cur := "/"
	for _, part := range strings.Split(strings.Trim(dir, "/"), "/") {
		cur = filepath.Join(cur, part)
		b.do("open "+cur, chromedp.Click(chromedp.CSS(container+` li[data-path="`+cur+`"] .open-dir`)),
			chromedp.WaitVisible(chromedp.CSS(container+` .fs-browser[data-path="`+cur+`"]`)), htmxSettled())
	}
}

// runShownCommand runs the enroll command the UI showed, as a person
// pasting it into a shell would: the same variable, flags and values,
// with this test's binary for `coffer` and a state directory added.
func runShownCommand(t *testing.T, command, server, stateDir string) {
	t.Helper()
	words, err := shellWords(command)
	if err != nil {
		t.Fatalf("the enroll command %q: %v", command, err)
	}
	var env []string
	for len(words) > 0 && strings.Contains(words[0], "=") && !strings.HasPrefix(words[0], "-") {
		env, words = append(env, words[0]), words[1:]
	}
	if len(words) < 3 || words[0] != "coffer" || words[1] != "agent" || words[2] != "enroll" {
		t.Fatalf("the enroll command %q is not `coffer agent enroll …`", command)
	}
	if !slices.Contains(words, server) {
		t.Errorf("the enroll command %q does not name the server %s", command, server)
	}
	if len(env) != 1 || !strings.HasPrefix(env[0], "COFFER_ENROLL_TOKEN=cfr_e_") {
		t.Errorf("the enroll command passes the token as %q, want COFFER_ENROLL_TOKEN", env)
	}
	cmd := exec.Command(binary, append(words[1:], "--state-dir", stateDir)...)
	cmd.Env = append(cleanEnv(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the enroll command failed: %v\n%s", err, out)
	}
}

// shellWords splits a one-line POSIX shell command of plain and
// single-quoted words.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range s {
		switch {
		case quoted && r == '\'':
			quoted = false
		case quoted:
			cur.WriteRune(r)
		case r == '\'':
			quoted, inWord = true, true
		case r == ' ' || r == '\t':
			if inWord {
				words, inWord = append(words, cur.String()), false
				cur.Reset()
			}
		case strings.ContainsRune("\"\\$`;&|<>()\n", r):
			return nil, fmt.Errorf("unexpected %q: the command must be plain and single-quoted words", r)
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote")
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
