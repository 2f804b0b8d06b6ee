// Package archtest keeps the dependency rules of the code base true (see
// docs/architecture.md). It runs `go list -deps` on the module's packages
// and fails when a package reaches one it must not.
package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/cofferhq/coffer"

type pkg struct {
	ImportPath string
	Standard   bool
	Deps       []string
}

// load lists the module's packages with their transitive dependencies.
func load(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps=false", "-json=ImportPath,Standard,Deps", module+"/...").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 5 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

func internalDeps(p pkg) []string {
	var out []string
	for _, d := range p.Deps {
		if strings.HasPrefix(d, module) {
			out = append(out, strings.TrimPrefix(strings.TrimPrefix(d, module), "/"))
		}
	}
	return out
}

func rel(p pkg) string { return strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/") }

func under(path string, prefixes ...string) bool {
	for _, pre := range prefixes {
		if path == pre || strings.HasPrefix(path, pre+"/") {
			return true
		}
	}
	return false
}

// isStd reports whether an import path is in the standard library.
func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

func TestDependencyRules(t *testing.T) {
	for _, p := range load(t) {
		name, deps := rel(p), internalDeps(p)
		switch {
		// 1. The root package imports only the standard library.
		case name == "":
			for _, d := range p.Deps {
				if !isStd(d) {
					t.Errorf("the root package depends on %s: it may import only the standard library", d)
				}
			}
		// 2. The engine never reaches the server, HTTP, agent, CLI or metadata store.
		case under(name, "internal/engine"):
			for _, d := range deps {
				if under(d, "internal/server", "internal/httpapi", "internal/agent", "internal/apiclient", "internal/metadb", "cmd") {
					t.Errorf("%s depends on %s: the engine imports only downward", name, d)
				}
			}
		// 4. The agent talks to the server only through apiclient.
		case under(name, "internal/agent"):
			for _, d := range deps {
				if under(d, "internal/metadb", "internal/httpapi", "internal/server") {
					t.Errorf("%s depends on %s: the agent reaches the server only through internal/apiclient", name, d)
				}
			}
		// 3. Services know nothing of HTTP.
		case under(name, "internal/server", "internal/metadb"):
			for _, d := range deps {
				if under(d, "internal/httpapi", "internal/agent", "cmd") {
					t.Errorf("%s depends on %s: services and the store know nothing of HTTP or the agent", name, d)
				}
			}
		}
		// 5. Nothing imports the composition root or the test-only packages.
		for _, d := range deps {
			if under(d, "cmd") {
				t.Errorf("%s depends on %s: nothing imports cmd/", name, d)
			}
			if strings.HasSuffix(d, "test") && !strings.HasSuffix(name, "test") && name != "e2e" {
				t.Errorf("%s (not a test helper) depends on the test helper %s", name, d)
			}
		}
	}
}

// TestNoInitFunctions: no init() registration (rule 5).
func TestNoInitFunctions(t *testing.T) {
	out, err := exec.Command("git", "grep", "-n", "-E", `^func init\(\)`, "--", "*.go").Output()
	if err != nil && len(out) == 0 {
		return // git grep exits 1 when nothing matches
	}
	if len(out) > 0 {
		t.Errorf("init functions found (wire things in cmd/ instead):\n%s", out)
	}
}
