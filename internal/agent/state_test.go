package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cofferhq/coffer/internal/protocol"
)

func enrollServer(t *testing.T) (*httptest.Server, *atomic.Int32, *protocol.EnrollRequest) {
	var calls atomic.Int32
	var got protocol.EnrollRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.URL.Path != "/api/v1/agent/enroll" || r.Header.Get("Authorization") != "" {
			t.Errorf("request %s %v", r.URL, r.Header)
		}
		if err := decode(r, &got); err != nil {
			t.Errorf("body: %v", err)
		}
		if got.Token != "cfr_e_good" {
			writeJSON(w, 401, map[string]any{"code": "enrollment_token_used", "detail": "this enrollment token was already used: create a new one"})
			return
		}
		writeJSON(w, 201, protocol.EnrollResponse{Client: protocol.AgentClient{ID: "c1", Name: got.Name, Hostname: got.Hostname},
			Credential: "cfr_a_secret", HeartbeatSeconds: 15})
	}))
	t.Cleanup(srv.Close)
	return srv, &calls, &got
}

func TestEnroll(t *testing.T) {
	srv, calls, got := enrollServer(t)
	dir := filepath.Join(t.TempDir(), "a", "state")
	ctx := context.Background()
	st, err := Enroll(ctx, EnrollOptions{Server: srv.URL, Token: "cfr_e_good", Name: "web1", StateDir: dir, Version: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	want := State{Server: srv.URL, ClientID: "c1", Name: "web1", Credential: "cfr_a_secret"}
	if *st != want {
		t.Errorf("state %+v, want %+v", *st, want)
	}
	host, _ := os.Hostname()
	if got.Hostname != host || got.OS != runtime.GOOS || got.Arch != runtime.GOARCH || got.AgentVersion != "1.2.3" ||
		got.IPv4 == nil || got.IPv6 == nil || got.Name != "web1" {
		t.Errorf("enroll request %+v", *got)
	}
	for _, ip := range append(got.IPv4, got.IPv6...) {
		if strings.HasPrefix(ip, "127.") || ip == "::1" {
			t.Errorf("loopback address %s reported", ip)
		}
	}

	// state.json is 0600 in a 0700 directory, and nothing else is left there.
	fi, err := os.Stat(filepath.Join(dir, "state.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state.json: %v %v", fi.Mode(), err)
	}
	if di, err := os.Stat(dir); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("state dir: %v %v", di.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state dir holds %v", entries)
	}
	loaded, err := LoadState(dir)
	if err != nil || *loaded != want {
		t.Errorf("LoadState: %+v %v", loaded, err)
	}

	// A second enrollment is refused without asking the server.
	_, err = Enroll(ctx, EnrollOptions{Server: srv.URL, Token: "cfr_e_good", StateDir: dir})
	if err == nil || !strings.Contains(err.Error(), "already enrolled") || !strings.Contains(err.Error(), "remove "+filepath.Join(dir, "state.json")) {
		t.Errorf("second enrollment: %v", err)
	}
	if calls.Load() != 1 {
		t.Errorf("%d calls to the server", calls.Load())
	}
}

func TestEnrollRefused(t *testing.T) {
	srv, calls, _ := enrollServer(t)
	ctx := context.Background()
	dir := t.TempDir()
	// The server's refusal reaches the caller; no state is written.
	_, err := Enroll(ctx, EnrollOptions{Server: srv.URL, Token: "cfr_e_used", StateDir: dir})
	if err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("used token: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state written after a refusal: %v", err)
	}
	// Neither a malformed token nor an unusable state directory spends the token.
	if _, err := Enroll(ctx, EnrollOptions{Server: srv.URL, Token: "cfr_a_wrongkind", StateDir: dir}); err == nil || !strings.Contains(err.Error(), "cfr_e_") {
		t.Errorf("malformed token: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Enroll(ctx, EnrollOptions{Server: srv.URL, Token: "cfr_e_good", StateDir: filepath.Join(file, "state")}); err == nil {
		t.Error("enrolled into a state directory under a file")
	}
	if calls.Load() != 1 {
		t.Errorf("%d calls to the server, want 1", calls.Load())
	}
}

func TestLoadState(t *testing.T) {
	dir := t.TempDir()
	_, err := LoadState(dir)
	if !errors.Is(err, ErrNotEnrolled) || !strings.Contains(err.Error(), "coffer agent enroll --server URL --token T") {
		t.Errorf("not enrolled: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "state.json"), []byte("{nope"), 0o600)
	if _, err := LoadState(dir); err == nil || errors.Is(err, ErrNotEnrolled) || !strings.Contains(err.Error(), "enroll again") {
		t.Errorf("damaged: %v", err)
	}
	b, _ := json.Marshal(State{Server: "http://x"})
	os.WriteFile(filepath.Join(dir, "state.json"), b, 0o600)
	if _, err := LoadState(dir); err == nil || !strings.Contains(err.Error(), "lacks") {
		t.Errorf("incomplete: %v", err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "f")
	if err := os.WriteFile(name, []byte("old content"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(name, []byte("new")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(name)
	fi, _ := os.Stat(name)
	if string(b) != "new" || fi.Mode().Perm() != 0o600 {
		t.Errorf("content %q, mode %v", b, fi.Mode())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	// A failed write leaves the old file alone and no temporary file.
	if err := writeFileAtomic(filepath.Join(dir, "missing", "f"), []byte("x")); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}

func TestDefaultStateDir(t *testing.T) {
	t.Setenv(EnvStateDir, "/srv/coffer-state")
	if d := DefaultStateDir(); d != "/srv/coffer-state" {
		t.Errorf("with %s: %s", EnvStateDir, d)
	}
	t.Setenv(EnvStateDir, "")
	t.Setenv("XDG_STATE_HOME", "/home/u/.state")
	want := "/home/u/.state/coffer-agent"
	if os.Geteuid() == 0 {
		want = "/var/lib/coffer-agent"
	}
	if d := DefaultStateDir(); d != want {
		t.Errorf("default: %s, want %s", d, want)
	}
}

func TestMachineInfo(t *testing.T) {
	mi := machineInfo("v9")
	if mi.OS != runtime.GOOS || mi.Arch != runtime.GOARCH || mi.AgentVersion != "v9" || mi.IPv4 == nil || mi.IPv6 == nil {
		t.Errorf("%+v", mi)
	}
}
