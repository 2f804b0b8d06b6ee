package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// cleanEnv unsets every COFFER_* variable for the test.
func cleanEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "COFFER_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

// parse parses args as the binary would, with a clean COFFER_* environment.
func parse(t *testing.T, args ...string) (*cli, string, error) {
	t.Helper()
	cleanEnv(t)
	var c cli
	p, err := newParser(&c, kong.Exit(func(int) { t.Fatal("the parser exited") }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, err := p.Parse(args)
	if err != nil {
		return &c, "", err
	}
	return &c, ctx.Command(), nil
}

func TestServerCommands(t *testing.T) {
	c, cmd, err := parse(t, "server", "--listen", "0.0.0.0:9000", "--data-dir", "/srv/coffer", "--master-key-file", "/etc/coffer/key")
	if err != nil || cmd != "server serve" {
		t.Fatalf("coffer server --listen … = %q, %v: want the server", cmd, err)
	}
	if c.Server.Serve.Listen != "0.0.0.0:9000" || c.Server.DataDir != "/srv/coffer" || c.Server.MasterKeyFile != "/etc/coffer/key" {
		t.Errorf("flags not applied: %+v", c.Server)
	}
	if _, cmd, err := parse(t, "server"); err != nil || cmd != "server serve" {
		t.Errorf("coffer server = %q, %v: want the server", cmd, err)
	}
	c, cmd, err = parse(t, "server", "--data-dir", "/srv/coffer", "rebuild-index", "--json", "--repository-dir", "/mnt/repo")
	if err != nil || cmd != "server rebuild-index" {
		t.Fatalf("rebuild-index = %q, %v", cmd, err)
	}
	if !c.Server.RebuildIndex.JSON || c.Server.DataDir != "/srv/coffer" || c.Server.RepositoryDir != "/mnt/repo" {
		t.Errorf("flags not applied: %+v", c.Server)
	}
	if _, _, err := parse(t, "server", "--listen", "0.0.0.0:1", "rebuild-index"); err == nil {
		t.Error("a serving flag before rebuild-index was accepted (and would be ignored)")
	}
	if _, _, err := parse(t, "server", "rebuild-index", "--listen", "0.0.0.0:1"); err == nil {
		t.Error("rebuild-index accepted --listen")
	}
}

// TestServerConfigFile: keys under server: reach both the shared flags and
// the serving ones, whichever subcommand runs.
func TestServerConfigFile(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "coffer.yaml")
	writeFile(t, cfg, "log-level: debug\nserver:\n  listen: 0.0.0.0:7000\n  data-dir: /var/lib/coffer\n  master_key_file: /etc/coffer/key\n  session-ttl: 1h\n")
	c, cmd, err := parse(t, "server", "--config", cfg)
	if err != nil || cmd != "server serve" {
		t.Fatalf("parse = %q, %v", cmd, err)
	}
	if c.LogLevel != "debug" || c.Server.Serve.Listen != "0.0.0.0:7000" || c.Server.DataDir != "/var/lib/coffer" ||
		c.Server.MasterKeyFile != "/etc/coffer/key" || c.Server.Serve.SessionTTL.Hours() != 1 {
		t.Errorf("config not applied: %+v %+v", c, c.Server)
	}
	c, cmd, err = parse(t, "server", "rebuild-index", "--config", cfg)
	if err != nil || cmd != "server rebuild-index" {
		t.Fatalf("parse = %q, %v", cmd, err)
	}
	if c.Server.DataDir != "/var/lib/coffer" || c.Server.MasterKeyFile != "/etc/coffer/key" {
		t.Errorf("config not applied to rebuild-index: %+v", c.Server)
	}
	// A flag beats the file.
	if c, _, _ := parse(t, "server", "--config", cfg, "--listen", "127.0.0.1:1"); c.Server.Serve.Listen != "127.0.0.1:1" {
		t.Errorf("the file overrode a flag: %s", c.Server.Serve.Listen)
	}
	writeFile(t, cfg, "server:\n  master-key: /x\n")
	if _, _, err := parse(t, "server", "--config", cfg); err == nil || !strings.Contains(err.Error(), `unknown key "server.master-key"`) {
		t.Errorf("unknown key: %v", err)
	}
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestServerEnvironment(t *testing.T) {
	cleanEnv(t)
	for k, v := range map[string]string{"COFFER_MASTER_KEY_FILE": "/run/key", "COFFER_REPOSITORY_DIR": "/mnt/r", "COFFER_LISTEN": "0.0.0.0:1"} {
		t.Setenv(k, v)
	}
	var c cli
	p, err := newParser(&c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse([]string{"server"}); err != nil {
		t.Fatal(err)
	}
	if c.Server.MasterKeyFile != "/run/key" || c.Server.RepositoryDir != "/mnt/r" || c.Server.Serve.Listen != "0.0.0.0:1" {
		t.Errorf("environment not applied: %+v", c.Server)
	}
}

// TestServerHelp: "coffer server --help" shows the serving flags too.
func TestServerHelp(t *testing.T) {
	var out bytes.Buffer
	var c cli
	exited := false
	p, err := newParser(&c, kong.Writers(&out, &out), kong.Exit(func(int) { exited = true }))
	if err != nil {
		t.Fatal(err)
	}
	p.Parse([]string{"server", "--help"})
	if !exited {
		t.Fatal("--help did not exit")
	}
	for _, want := range []string{"--listen", "--admin-password", "--data-dir", "--master-key-file", "COFFER_REPOSITORY_DIR", "coffer server rebuild-index"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("server --help lacks %s:\n%s", want, out.String())
		}
	}
}
