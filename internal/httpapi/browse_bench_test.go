package httpapi

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blobstore/local"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/cofferhq/coffer/internal/server/backups"
	"github.com/cofferhq/coffer/internal/server/repos"
)

// BenchmarkFileDownloadHTTP downloads a 64 MiB file of a backup in an
// encrypted local repository (default chunker and pack size) indexed in
// SQLite, over HTTP on the loopback, as the admin: the server's whole path,
// authentication and TCP included (see the backups package's
// BenchmarkFileDownload for the reading alone).
//
//	go test -run '^$' -bench FileDownloadHTTP -benchtime 10x ./internal/httpapi/
func BenchmarkFileDownloadHTTP(b *testing.B) {
	const size = 64 << 20
	ctx := context.Background()
	db := metadbtest.Open(b, metadb.SQLite)
	backend, err := local.New(filepath.Join(b.TempDir(), "repo"))
	if err != nil {
		b.Fatal(err)
	}
	repo, _, err := repository.OpenOrInit(ctx, backend, func(id string) repository.Index { return db.Index(id) },
		repository.InitOptions{MasterKey: repotest.MasterKey(), Encrypted: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(repo.Close)
	w, err := repo.NewWriter(ctx, repository.WriterOptions{})
	if err != nil {
		b.Fatal(err)
	}
	root, err := repotest.StoreTree(ctx, repo, w, repotest.Files{"big.bin": repotest.Random(1, size)})
	if err == nil {
		err = w.Flush(ctx)
	}
	w.Close()
	if err != nil {
		b.Fatal(err)
	}
	bk := &coffer.Backup{ClientID: "bench", RepositoryID: repo.Config().ID, State: coffer.JobRunning, Paths: []string{"/"}}
	if err := db.CreateBackup(ctx, bk); err != nil {
		b.Fatal(err)
	}
	if _, err := db.FinishBackup(ctx, bk.ID, metadb.BackupFinish{State: coffer.JobSucceeded, SnapshotID: "bench",
		RootTree: root.String()}); err != nil {
		b.Fatal(err)
	}
	f := newFixtureWith(b, db, func(f *fixture, o *Options) {
		ag := agents.New(agents.Options{Store: db, Events: f.hub})
		o.Agents = ag
		o.Backups = backups.New(backups.Options{Store: db, Repos: repos.New(repo, nil), Events: f.hub, Commands: ag, Clients: ag})
	})
	req, err := http.NewRequest("GET", f.ts.URL+"/api/v1/backups/"+bk.ID+"/file?path=big.bin", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.tokens["admin"])
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		resp, err := f.ts.Client().Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size || resp.StatusCode != 200 {
			b.Fatalf("status %d, %d bytes, %v", resp.StatusCode, n, err)
		}
	}
}
