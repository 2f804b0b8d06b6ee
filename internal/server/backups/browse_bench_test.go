package backups

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blobstore/local"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/server/repos"
)

// The download benchmarks read one 64 MiB file of a backup in a local
// repository (default chunker and pack size, files in the page cache)
// indexed in SQLite, the embedded default, and write it to io.Discard:
//
//	go test -run '^$' -bench Download -benchtime 10x ./internal/server/backups/
//
// MB/s is of the file's bytes. random is incompressible (stored as is),
// text compresses (zstd-decompressed on read); plain and encrypted are the
// repository's setting (AES-256-GCM authenticates every blob). cpu-MB/s
// divides the bytes by the process's CPU time (user and system) instead:
// steadier than MB/s on a shared machine.
func BenchmarkFileDownload(b *testing.B) {
	for _, c := range benchCases {
		b.Run(c.name, func(b *testing.B) {
			svc, id := benchBackup(b, c.encrypted, c.content())
			ctx := context.Background()
			admin := &coffer.Principal{Kind: coffer.PrincipalSession, Username: "admin", Role: coffer.RoleAdmin,
				Scopes: coffer.RoleAdmin.Permissions()}
			b.SetBytes(benchFileSize)
			b.ResetTimer()
			cpu := cpuTime(b)
			defer reportCPU(b, cpu)
			for range b.N {
				f, err := svc.OpenFile(ctx, admin, id, "big.bin")
				if err != nil {
					b.Fatal(err)
				}
				dl, err := f.Download(ctx, 0, f.Size)
				if err != nil {
					b.Fatal(err)
				}
				n, err := dl.WriteTo(io.Discard)
				dl.Close()
				if err != nil || n != benchFileSize {
					b.Fatalf("wrote %d bytes: %v", n, err)
				}
			}
		})
	}
}

// BenchmarkArchiveDownload is BenchmarkFileDownload for the directory
// holding the file, as a tar and as a zip archive.
func BenchmarkArchiveDownload(b *testing.B) {
	for _, format := range []ArchiveFormat{FormatTar, FormatZip} {
		for _, c := range benchCases {
			b.Run(string(format)+"/"+c.name, func(b *testing.B) {
				svc, id := benchBackup(b, c.encrypted, c.content())
				ctx := context.Background()
				admin := &coffer.Principal{Kind: coffer.PrincipalSession, Username: "admin", Role: coffer.RoleAdmin,
					Scopes: coffer.RoleAdmin.Permissions()}
				b.SetBytes(benchFileSize)
				b.ResetTimer()
				cpu := cpuTime(b)
				defer reportCPU(b, cpu)
				for range b.N {
					a, err := svc.OpenArchive(ctx, admin, id, "", format)
					if err != nil {
						b.Fatal(err)
					}
					dl, err := a.Download(ctx)
					if err != nil {
						b.Fatal(err)
					}
					n, err := dl.WriteTo(io.Discard)
					dl.Close()
					if err != nil || n == 0 {
						b.Fatalf("wrote %d bytes: %v", n, err)
					}
				}
			})
		}
	}
}

const benchFileSize = 64 << 20

var benchCases = []struct {
	name      string
	encrypted bool
	content   func() []byte
}{
	{"random/plain", false, func() []byte { return repotest.Random(1, benchFileSize) }},
	{"random/encrypted", true, func() []byte { return repotest.Random(1, benchFileSize) }},
	{"text/encrypted", true, benchText},
}

// benchText is benchFileSize bytes of varied text that zstd shrinks about
// threefold.
func benchText() []byte {
	words := strings.Fields("backup restore snapshot repository chunk pack index blob tree agent server plan schedule " +
		"retention verify garbage collection encryption compression deduplication client operator admin viewer")
	rnd := repotest.Random(2, benchFileSize/4)
	var buf bytes.Buffer
	for i := 0; buf.Len() < benchFileSize; i++ {
		buf.WriteString(words[int(rnd[i%len(rnd)])%len(words)])
		buf.WriteByte(" \n"[rnd[(i+1)%len(rnd)]&1])
	}
	return buf.Bytes()[:benchFileSize]
}

// benchBackup stores content as big.bin in a fresh local repository and
// records a committed backup of it.
func benchBackup(b *testing.B, encrypted bool, content []byte) (*Service, string) {
	b.Helper()
	ctx := context.Background()
	db := metadbtest.Open(b, metadb.SQLite)
	backend, err := local.New(filepath.Join(b.TempDir(), "repo"))
	if err != nil {
		b.Fatal(err)
	}
	repo, _, err := repository.OpenOrInit(ctx, backend, func(id string) repository.Index { return db.Index(id) },
		repository.InitOptions{MasterKey: repotest.MasterKey(), Encrypted: encrypted})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(repo.Close)
	w, err := repo.NewWriter(ctx, repository.WriterOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	root, err := repotest.StoreTree(ctx, repo, w, repotest.Files{"big.bin": content})
	if err == nil {
		err = w.Flush(ctx)
	}
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
	svc := New(Options{Store: db, Repos: repos.New(repo, nil), Clients: db, Commands: &commandLog{}, Events: &eventLog{}})
	return svc, bk.ID
}

// cpuTime is the CPU time the process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the file bytes per second of CPU time since start.
func reportCPU(b *testing.B, start time.Duration) {
	if used := cpuTime(b) - start; used > 0 {
		b.ReportMetric(float64(b.N)*benchFileSize/1e6/used.Seconds(), "cpu-MB/s")
	}
}
