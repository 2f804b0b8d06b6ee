package metadb_test

import (
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/indextest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// TestIndexConformance runs the index suite on both databases. The
// subtests share one database, each with a repository of its own, so the
// suite also checks that no query strays into another repository's rows.
func TestIndexConformance(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		indextest.Run(t, func(t *testing.T, now func() time.Time) repository.Index {
			ix := db.Index(repositoryID(t))
			ix.Now = now
			return ix
		})
	})
}

// repositoryID returns a fresh repository config id (64 hex digits).
func repositoryID(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}
