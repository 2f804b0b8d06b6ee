package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blobstore/local"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/server/masterkey"
	"github.com/google/go-cmp/cmp"
)

// run runs the coffer binary to completion with a clean environment and
// returns its output and exit code.
func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = cleanEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run coffer %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

// openRepository opens the server's default repository from the test
// process, as the server would: its master key file, and the index in the
// database at dbURL. closeAll closes it, the database and the backend; the
// test's end does too.
func openRepository(t *testing.T, dataDir, dbURL string) (repo *repository.Repository, closeAll func()) {
	t.Helper()
	ctx := context.Background()
	key, err := masterkey.Load(filepath.Join(dataDir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	var closers []func()
	var once sync.Once
	closeAll = func() {
		once.Do(func() {
			for _, c := range slices.Backward(closers) {
				c()
			}
		})
	}
	t.Cleanup(closeAll)
	db, err := metadb.Open(ctx, metadb.Options{URL: dbURL})
	if err != nil {
		t.Fatal(err)
	}
	closers = append(closers, func() { db.Close() })
	backend, err := local.New(filepath.Join(dataDir, "repository"))
	if err != nil {
		t.Fatal(err)
	}
	closers = append(closers, func() { backend.Close() })
	cfg, _, err := repository.OpenConfig(ctx, backend, key)
	if err != nil {
		t.Fatal(err)
	}
	repo, err = repository.Open(ctx, backend, db.Index(cfg.ID), key)
	if err != nil {
		t.Fatal(err)
	}
	closers = append(closers, repo.Close)
	return repo, closeAll
}

// catalogue is what a repository's index says about its snapshots, with
// every snapshot read back whole.
type catalogue struct {
	Snapshots []repository.SnapshotInfo
	Files     map[string]repotest.Files
}

func catalogueOf(t *testing.T, repo *repository.Repository) catalogue {
	t.Helper()
	snaps, err := repo.Snapshots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := catalogue{Snapshots: snaps, Files: map[string]repotest.Files{}}
	for _, s := range snaps {
		c.Files[s.ID] = repotest.ReadFiles(t, repo, s.ID)
	}
	return c
}

// rebuildOutput is the part of `rebuild-index --json` the test reads.
type rebuildOutput struct {
	RepositoryID     string `json:"repository_id"`
	Clean            bool   `json:"clean"`
	Packs            int    `json:"packs"`
	PacksAdded       int    `json:"packs_added"`
	PacksIndexed     int    `json:"packs_indexed"`
	BlobsAdded       int    `json:"blobs_added"`
	Snapshots        int    `json:"snapshots"`
	SnapshotsAdded   int    `json:"snapshots_added"`
	SnapshotsIndexed int    `json:"snapshots_indexed"`
}

// summaryLine is the snapshots line of rebuild-index's summary after
// adding three.
var summaryLine = regexp.MustCompile(`(?m)^\s+snapshots\s+3 in storage:\s+3 added, 0 already indexed, 0 skipped$`)

// readyCheck returns whether the /readyz check name is healthy, and
// whether there is one.
func readyCheck(body map[string]any, name string) (healthy, ok bool) {
	checks, _ := body["checks"].([]any)
	for _, c := range checks {
		if c, _ := c.(map[string]any); c["name"] == name {
			h, ok := c["healthy"].(bool)
			return h, ok
		}
	}
	return false, false
}

// TestRebuildIndex loses the database of a server whose repository holds
// backups, rebuilds the index with `coffer server rebuild-index`, and finds
// every snapshot as it was.
func TestRebuildIndex(t *testing.T) {
	dialects(t, func(t *testing.T, d metadb.Dialect) {
		dbOpt := "default" // SQLite in the data directory, which the test deletes
		if d == metadb.Postgres {
			dbOpt = ""
		}
		s := startServer(t, d, startOptions{dbURL: dbOpt, args: []string{"--admin-password", "admin-password"}})
		dataDir := s.DataDir
		keyFile := filepath.Join(dataDir, "master.key")
		raw, err := os.ReadFile(keyFile)
		if err != nil {
			t.Fatalf("no master key in the data directory: %v", err)
		}
		keyHex := strings.Fields(string(raw))[1]
		if !strings.Contains(lineWith(s.Stderr(), "created a new master key"), "back up this file separately") ||
			!strings.Contains(lineWith(s.Stderr(), "created a new master key"), `"level":"WARN"`) {
			t.Errorf("no warning to back up the new master key:\n%s", s.Stderr())
		}
		if strings.Contains(s.Stderr()+s.Stdout(), keyHex) {
			t.Fatal("the master key appears in the server's output")
		}
		if !strings.Contains(lineWith(s.Stderr(), "default repository open"), filepath.Join(dataDir, "repository")) {
			t.Errorf("the repository's location is not logged:\n%s", s.Stderr())
		}
		s.cmd.Process.Signal(syscall.SIGTERM)
		if err := s.waitExit(30 * time.Second); err != nil {
			t.Fatalf("stop the server: %v", err)
		}

		// Backups, written with the engine while the server is stopped.
		repo, closeRepo := openRepository(t, dataDir, s.DBURL)
		shared := repotest.Random(1, 3<<20)
		for _, files := range []repotest.Files{
			{"etc/hosts": []byte("127.0.0.1 localhost\n"), "srv/big.bin": shared, "home/empty/": nil},
			{"etc/hosts": []byte("127.0.0.1 localhost\n::1 localhost\n"), "srv/big.bin": shared, "srv/new.bin": repotest.Random(2, 2<<20)},
			{"a/b/c/deep.txt": []byte("deep"), "copy.bin": shared},
		} {
			repotest.WriteSnapshot(t, repo, files)
		}
		want := catalogueOf(t, repo)
		if len(want.Snapshots) != 3 {
			t.Fatalf("wrote %d snapshots, want 3", len(want.Snapshots))
		}
		closeRepo()

		// The database is lost.
		dbURL := s.DBURL
		if d == metadb.SQLite {
			for _, suffix := range []string{"", "-wal", "-shm"} {
				if err := os.Remove(filepath.Join(dataDir, "coffer.db"+suffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Fatal(err)
				}
			}
		} else {
			metadbtest.DropPostgres(t, metadbtest.DatabaseName(dbURL))
			dbURL = metadbtest.URL(t, d) // the new, empty database
		}
		args := []string{"server", "rebuild-index", "--data-dir", dataDir, "--database-url", dbURL, "--log-format", "json"}

		// A wrong master key is refused, naming the key file.
		otherKey := filepath.Join(t.TempDir(), "other.key")
		if _, _, err := masterkey.LoadOrCreate(otherKey); err != nil {
			t.Fatal(err)
		}
		out, stderr, code := run(t, append(args, "--master-key-file", otherKey)...)
		if code != 1 || !strings.Contains(stderr, otherKey) || !strings.Contains(stderr, "--master-key-file") {
			t.Errorf("rebuild-index with a wrong master key: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
		}

		out, stderr, code = run(t, args...)
		if code != 0 {
			t.Fatalf("rebuild-index: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
		}
		if !summaryLine.MatchString(out) || !strings.Contains(out, "No damage found.") {
			t.Errorf("rebuild-index summary:\n%s", out)
		}
		rebuilt, closeRebuilt := openRepository(t, dataDir, dbURL)
		got := catalogueOf(t, rebuilt)
		closeRebuilt()
		if d := cmp.Diff(want, got, cmp.Comparer(bytes.Equal)); d != "" {
			t.Errorf("snapshots after the rebuild differ (-before +after):\n%s", d)
		}

		// Again, as JSON: everything is indexed already.
		out, stderr, code = run(t, append(args, "--json")...)
		var rep rebuildOutput
		if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
			t.Fatalf("rebuild-index --json: exit %d, %v\nstdout:\n%s\nstderr:\n%s", code, err, out, stderr)
		}
		if !rep.Clean || rep.Packs == 0 || rep.PacksIndexed != rep.Packs || rep.PacksAdded != 0 || rep.BlobsAdded != 0 ||
			rep.Snapshots != 3 || rep.SnapshotsIndexed != 3 || rep.SnapshotsAdded != 0 {
			t.Errorf("second rebuild: %+v", rep)
		}

		// The server starts on the rebuilt database (a new one, so it
		// bootstraps the admin again), its storage ready, with no warning
		// that the index is empty.
		again := startServer(t, d, startOptions{dbURL: dbURL, args: []string{"--data-dir", dataDir}})
		if strings.Contains(again.Stderr(), "created a new master key") || strings.Contains(again.Stderr(), "knows no pack") {
			t.Errorf("restart on the rebuilt database:\n%s", again.Stderr())
		}
		r := again.call("GET", "/readyz", "", nil).Want(200)
		if healthy, ok := readyCheck(r.JSON, "storage"); !ok || !healthy {
			t.Errorf("readyz has no healthy storage check: %s", r.Body)
		}
		// The repository's config vanishes under the running server.
		if err := os.Remove(filepath.Join(dataDir, "repository", "config")); err != nil {
			t.Fatal(err)
		}
		r = again.call("GET", "/readyz", "", nil).WantError(503, "not_ready")
		if healthy, ok := readyCheck(r.JSON, "storage"); !ok || healthy || strings.Contains(string(r.Body), dataDir) {
			t.Errorf("readyz with the repository gone: %s", r.Body)
		}
		if !strings.Contains(again.Stderr(), "storage check failed") {
			t.Errorf("the storage failure is not logged:\n%s", again.Stderr())
		}
	})
}

// TestServerWarnsOfEmptyIndex: a server started on an empty database
// beside a repository that holds packs says to run rebuild-index.
func TestServerWarnsOfEmptyIndex(t *testing.T) {
	s := startServer(t, metadb.SQLite, startOptions{dbURL: "default", args: []string{"--admin-password", "admin-password"}})
	s.cmd.Process.Signal(syscall.SIGTERM)
	if err := s.waitExit(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	repo, closeRepo := openRepository(t, s.DataDir, s.DBURL)
	repotest.WriteSnapshot(t, repo, repotest.Files{"f": []byte("content")})
	closeRepo()

	fresh := "sqlite://" + filepath.Join(t.TempDir(), "fresh.db")
	again := startServer(t, metadb.SQLite, startOptions{dbURL: fresh, args: []string{"--data-dir", s.DataDir}})
	if line := lineWith(again.Stderr(), "knows no pack"); !strings.Contains(line, "rebuild-index") || !strings.Contains(line, `"level":"WARN"`) {
		t.Errorf("no warning about the empty index:\n%s", again.Stderr())
	}
}
