package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// screenshotDir is where browser tests leave their screenshots for a
// person to look at (kept out of git).
const screenshotDir = "../test-output/ui"

// chromiumPath finds Debian's Chromium (COFFER_TEST_CHROMIUM overrides).
// Without it the test skips on a laptop and fails under CI: make test
// installs it (scripts/test-chromium.sh).
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("COFFER_TEST_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed: under CI the browser tests must run (make test installs it with scripts/test-chromium.sh)")
	}
	t.Skip("browser test skipped: chromium is not installed (apt-get install -y chromium, or run make test)")
	return ""
}

// browser is one headless Chromium with a fresh profile, and what its
// pages wrote to the console.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu      sync.Mutex
	console []string
}

// newBrowser starts Chromium with the flags it needs on this closed
// network (STACK.md) and a profile of its own; it is closed when the test
// ends.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	for _, flag := range []string{"headless", "no-sandbox", "disable-gpu", "disable-dev-shm-usage",
		"disable-background-networking", "disable-component-update", "disable-sync", "disable-quic", "no-first-run"} {
		opts = append(opts, chromedp.Flag(flag, true))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	b := &browser{t: t, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil { // starts the browser and opens the tab
		t.Fatalf("start chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m.String())
			b.mu.Unlock()
		}
	}()
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	return b
}

// do runs actions, failing the test with what it was doing.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v\npage:\n%s\nconsole:\n%s", what, err, b.pageText(), strings.Join(b.messages(), "\n"))
	}
}

// pageText is the address and visible text of the page shown, for failure
// messages.
func (b *browser) pageText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText.slice(0, 3000)`))
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	return text
}

// run runs one action that returns a value.
func browserRun[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// location is the URL of the page shown.
func (b *browser) location() string {
	b.t.Helper()
	return browserRun(b, "read the location", chromedp.Location())
}

// screenshot saves the whole page as test-output/ui/<name>.png.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	png := browserRun(b, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(screenshotDir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) messages() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.console...)
}
