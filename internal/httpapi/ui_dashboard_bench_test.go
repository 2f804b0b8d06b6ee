package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// BenchmarkUIDashboard renders the dashboard of a fleet with history: 200
// plans, 20 000 finished backups (100 per plan), 30 days of hourly usage
// samples and the recent events, on SQLite. The page's queries are bounded
// (none runs per plan or per backup), so its time should not grow with
// the history.
func BenchmarkUIDashboard(b *testing.B) {
	db := metadbtest.Open(b, metadb.SQLite)
	f := newDashboardFixture(b, db)
	ctx := context.Background()
	const plans, perPlan = 200, 100
	for i := range plans {
		p := &coffer.Plan{Name: fmt.Sprintf("plan %d", i), ClientID: "client-1", Include: []string{"/srv"}, Enabled: true,
			Schedule: "0 0 2 * * ?"}
		if err := db.CreatePlan(ctx, p); err != nil {
			b.Fatal(err)
		}
		for j := range perPlan {
			state := coffer.JobSucceeded
			if j%17 == 0 {
				state = coffer.JobFailed
			}
			ago := time.Duration(perPlan-j) * 24 * time.Hour / 4
			f.backup(p.ID, state, ago+time.Hour, ago, "")
		}
	}
	defID := f.storage.Repos().DefaultID()
	for h := range 30 * 24 {
		if _, err := db.RecordUsageSample(ctx, metadb.UsageSample{RepositoryID: defID,
			TakenAt: time.Now().Add(-time.Duration(h) * time.Hour), StoredBytes: int64(1e12 - h*1e8), LogicalBytes: 3e12,
			BlobBytes: 1e12}, false); err != nil {
			b.Fatal(err)
		}
	}
	viewer := f.uiSignIn("viewer", "viewer-password")
	b.ResetTimer()
	for b.Loop() {
		r := f.uiDo("GET", "/", []*http.Cookie{viewer}, nil)
		if r.StatusCode != http.StatusOK {
			b.Fatalf("dashboard: %d", r.StatusCode)
		}
	}
}
