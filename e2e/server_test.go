package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// TestAcceptance walks the acceptance path on a fresh server.
func TestAcceptance(t *testing.T) {
	dialects(t, func(t *testing.T, d metadb.Dialect) {
		s := startServer(t, d, startOptions{})
		if len(s.Password) < 16 {
			t.Fatalf("no generated admin password printed:\n%s", s.Stdout())
		}
		if strings.Contains(s.Stderr(), s.Password) {
			t.Fatal("the generated password appears in the log")
		}
		admin := s.login("admin", s.Password)

		for _, u := range []struct{ name, role string }{{"olivia", "operator"}, {"victor", "viewer"}} {
			s.call("POST", "/api/v1/users", admin, map[string]string{"username": u.name, "password": u.name + "-pass-1", "role": u.role}).Want(201)
		}
		op, viewer := s.login("olivia", "olivia-pass-1"), s.login("victor", "victor-pass-1")
		newUser := map[string]string{"username": "mallory", "password": "mallory-pass", "role": "admin"}
		s.call("POST", "/api/v1/users", viewer, newUser).WantError(403, "forbidden")
		s.call("POST", "/api/v1/users", op, newUser).WantError(403, "forbidden")

		bad := map[string]string{"username": "victor", "password": "wrong-password"}
		for range 5 {
			s.call("POST", "/api/v1/auth/login", "", bad).WantError(401, "invalid_credentials")
		}
		r := s.call("POST", "/api/v1/auth/login", "", bad).WantError(429, "too_many_login_attempts")
		if _, ok := r.JSON["metadata"].(map[string]any)["retry_after_seconds"]; !ok {
			t.Errorf("429 without retry_after_seconds: %s", r.Body)
		}

		r = s.call("POST", "/api/v1/users", admin, map[string]any{"username": "x1", "password": "long-enough", "role": "viewer",
			"superuser": true}).WantError(400, "invalid_request")
		if !strings.Contains(string(r.Body), "body.superuser") {
			t.Errorf("unknown field not named in metadata: %s", r.Body)
		}

		s.call("GET", "/readyz", "", nil).Want(200)
		m := s.call("GET", "/metrics", admin, nil).Want(200)
		for _, want := range []string{"coffer_http_request_duration_seconds_bucket", "coffer_build_info", "coffer_events_published_total",
			"go_goroutines", "_max_open_connections"} {
			if !strings.Contains(string(m.Body), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		doc := s.call("GET", "/api/v1/openapi.json", "", nil).Want(200)
		if doc.JSON["openapi"] != "3.1.0" {
			t.Errorf("openapi version %v", doc.JSON["openapi"])
		}
		paths := doc.JSON["paths"].(map[string]any)
		for _, p := range []string{"/api/v1/auth/login", "/api/v1/users/{id}/password", "/api/v1/tokens/{id}", "/api/v1/events",
			"/api/v1/events/history", "/readyz", "/metrics", "/api"} {
			if paths[p] == nil {
				t.Errorf("openapi lacks %s", p)
			}
		}

		// The access log names route, status, user and correlation id.
		s.call("GET", "/api/v1/auth/me", viewer, nil, "X-Request-Id", "acceptance-trace-1").Want(200)
		waitFor(t, func() bool { return strings.Contains(s.Stderr(), `"request_id":"acceptance-trace-1"`) })
		line := lineWith(s.Stderr(), "acceptance-trace-1")
		for _, want := range []string{`"route":"GET /api/v1/auth/me"`, `"status":200`, `"user":"victor"`, `"duration_ms"`} {
			if !strings.Contains(line, want) {
				t.Errorf("access log line lacks %s: %s", want, line)
			}
		}
	})
}

// TestReadinessWhenDatabaseIsGone removes the database under a running server.
func TestReadinessWhenDatabaseIsGone(t *testing.T) {
	dialects(t, func(t *testing.T, d metadb.Dialect) {
		s := startServer(t, d, startOptions{args: []string{"--admin-password", "admin-password"}})
		s.call("GET", "/readyz", "", nil).Want(200)
		if d == metadb.SQLite {
			if err := os.Remove(strings.TrimPrefix(s.DBURL, "sqlite://")); err != nil {
				t.Fatal(err)
			}
		} else {
			metadbtest.DropPostgres(t, metadbtest.DatabaseName(s.DBURL))
		}
		r := s.call("GET", "/readyz", "", nil).WantError(503, "not_ready")
		var failed []string
		for _, c := range r.JSON["checks"].([]any) {
			if c := c.(map[string]any); c["healthy"] == false {
				failed = append(failed, c["name"].(string))
			}
		}
		if len(failed) == 0 || failed[0] != "database" || r.JSON["status"] != "not_ready" {
			t.Errorf("readyz = %s", r.Body)
		}
		s.call("GET", "/healthz", "", nil).Want(200) // alive, just not ready
	})
}

// TestEventReplay disconnects a stream, lets events happen, and reconnects
// with Last-Event-ID: exactly the missed events come back, in order.
func TestEventReplay(t *testing.T) {
	dialects(t, func(t *testing.T, d metadb.Dialect) {
		s := startServer(t, d, startOptions{args: []string{"--admin-password", "admin-password"}})
		admin := s.login("admin", "admin-password")
		st := s.openStream(admin, "")
		s.call("POST", "/api/v1/users", admin, map[string]string{"username": "first", "password": "first-password", "role": "viewer"}).Want(201)
		ev := st.next(t)
		if ev.Data["code"] != "user.created" || ev.Data["actor"] != "admin" {
			t.Fatalf("first event = %+v", ev)
		}
		st.close()

		var missed []string
		for i := range 5 {
			s.call("POST", "/api/v1/users", admin, map[string]string{"username": fmt.Sprintf("u%d", i),
				"password": "some-password", "role": "viewer"}).Want(201)
		}
		hist := s.call("GET", "/api/v1/events/history?page_size=100", admin, nil).Want(200)
		for _, it := range hist.JSON["items"].([]any) {
			id := fmt.Sprint(int64(it.(map[string]any)["id"].(float64)))
			if id == ev.ID {
				break
			}
			missed = append([]string{id}, missed...)
		}
		if len(missed) < 5 {
			t.Fatalf("history shows %d events after %s, want at least 5", len(missed), ev.ID)
		}

		st2 := s.openStream(admin, ev.ID)
		var got []string
		for range missed {
			got = append(got, st2.next(t).ID)
		}
		if strings.Join(got, ",") != strings.Join(missed, ",") {
			t.Fatalf("replayed %v, want %v", got, missed)
		}
		// Live events follow the replay without a gap or repeat.
		s.call("POST", "/api/v1/users", admin, map[string]string{"username": "later", "password": "later-password", "role": "viewer"}).Want(201)
		live := st2.next(t)
		if live.Data["code"] != "user.created" || atoi(live.ID) <= atoi(got[len(got)-1]) {
			t.Fatalf("live event after replay = %+v (last replayed %s)", live, got[len(got)-1])
		}

		// A viewer sees none of these admin-audience audit events: only
		// those about itself.
		created := s.call("POST", "/api/v1/users", admin, map[string]string{"username": "watcher", "password": "watcher-pass", "role": "viewer"}).Want(201)
		watcherID := created.Str("user", "id")
		viewer := s.login("watcher", "watcher-pass")
		st3 := s.openStream(viewer, "0")
		var seen int
		for timeout := time.After(2 * time.Second); ; {
			select {
			case e := <-st3.events:
				if res, _ := e.Data["resource"].(map[string]any); res["id"] != watcherID {
					t.Fatalf("viewer received an event not about itself: %+v", e)
				}
				seen++
				continue
			case <-timeout:
			}
			break
		}
		if seen != 2 { // its account was created; it logged in
			t.Errorf("viewer saw %d events about itself, want 2", seen)
		}
	})
}

// TestGracefulShutdown: SIGTERM ends open SSE streams, lets the process exit
// cleanly, and a restart keeps the accounts (no second bootstrap).
func TestGracefulShutdown(t *testing.T) {
	s := startServer(t, metadb.SQLite, startOptions{dbURL: "default", args: []string{"--admin-password", "admin-password"}})
	if _, err := os.Stat(filepath.Join(s.DataDir, "coffer.db")); err != nil {
		t.Fatalf("the default database is not in the data directory: %v", err)
	}
	admin := s.login("admin", "admin-password")
	st := s.openStream(admin, "")
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-st.done:
	case <-time.After(20 * time.Second):
		t.Fatal("SSE stream still open 20 s after SIGTERM")
	}
	if err := s.waitExit(30 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, s.Stderr())
	}
	if !strings.Contains(s.Stderr(), "coffer server stopped") {
		t.Errorf("no clean stop in the log:\n%s", s.Stderr())
	}

	again := startServer(t, metadb.SQLite, startOptions{dbURL: s.DBURL, args: []string{"--data-dir", s.DataDir}})
	if again.Password != "" || strings.Contains(again.Stdout(), "First start") {
		t.Errorf("second start bootstrapped again:\n%s", again.Stdout())
	}
	again.login("admin", "admin-password")
}

// TestConfiguration: environment variables and the YAML config file set
// flags; an unknown key in the file stops the server with a clear error.
func TestConfiguration(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "coffer.yaml")
	os.WriteFile(cfg, []byte("log-level: debug\nserver:\n  admin-user: root\n  session-ttl: 1h\n"), 0o600)
	s := startServer(t, metadb.SQLite, startOptions{
		args: []string{"--config", cfg},
		env:  []string{"COFFER_ADMIN_PASSWORD=from-the-environment"},
	})
	tok := s.login("root", "from-the-environment")
	r := s.call("POST", "/api/v1/auth/login", "", map[string]string{"username": "root", "password": "from-the-environment"}).Want(200)
	exp, _ := time.Parse(time.RFC3339, r.Str("expires_at"))
	if d := time.Until(exp); d > 61*time.Minute || d < 50*time.Minute {
		t.Errorf("session-ttl from the config file not applied: expires in %v", d)
	}
	s.call("GET", "/healthz", tok, nil).Want(200)
	if !strings.Contains(s.Stderr(), `"level":"DEBUG"`) {
		t.Error("log-level debug from the config file not applied")
	}

	os.WriteFile(cfg, []byte("server:\n  lisen: 0.0.0.0:1\n"), 0o600)
	out, err := exec.Command(binary, "server", "--config", cfg, "--data-dir", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `unknown key "server.lisen"`) {
		t.Errorf("typo in config accepted: %v\n%s", err, out)
	}
	out, err = exec.Command(binary, "--help").CombinedOutput()
	for _, want := range []string{"server", "version", "--config", "--log-format"} {
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("--help lacks %s: %v\n%s", want, err, out)
		}
	}
	out, err = exec.Command(binary, "server", "--help").CombinedOutput()
	for _, want := range []string{"--listen", "--data-dir", "--database-url", "--admin-password", "--tls-cert", "COFFER_DATABASE_URL"} {
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("server --help lacks %s: %v", want, err)
		}
	}
}

// TestRefusesNewerSchema: a database migrated by a newer coffer is refused.
func TestRefusesNewerSchema(t *testing.T) {
	dialects(t, func(t *testing.T, d metadb.Dialect) {
		url := metadbtest.URL(t, d)
		db, err := metadb.Open(context.Background(), metadb.Options{URL: url})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Migrate(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		db.SQL().Exec(`INSERT INTO goose_db_version (version_id, is_applied) VALUES ($1, $2)`, 9999, true)
		db.Close()
		s := newServerProc(t, d, startOptions{dbURL: url})
		if err := s.waitExit(60 * time.Second); err == nil {
			t.Fatal("server started on a newer schema")
		}
		if !strings.Contains(s.Stderr(), "newer than this coffer binary supports") {
			t.Errorf("unclear refusal:\n%s", s.Stderr())
		}
	})
}

// TestTLS serves HTTPS with --tls-cert/--tls-key.
func TestTLS(t *testing.T) {
	cert, key := selfSigned(t)
	s := startServer(t, metadb.SQLite, startOptions{args: []string{"--tls-cert", cert, "--tls-key", key, "--admin-password", "admin-password"}})
	if !strings.HasPrefix(s.URL, "https://") {
		t.Fatalf("URL = %s", s.URL)
	}
	r := s.call("POST", "/api/v1/auth/login", "", map[string]string{"username": "admin", "password": "admin-password"}).Want(200)
	if c := r.Header.Get("Set-Cookie"); !strings.Contains(c, "Secure") {
		t.Errorf("cookie over HTTPS is not Secure: %s", c)
	}
}

func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(k)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 10 s")
}

func atoi(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		panic(err)
	}
	return n
}

func lineWith(text, needle string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, needle) {
			return l
		}
	}
	return ""
}
