package httpapi

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/cofferhq/coffer/internal/server/backups"
	"github.com/cofferhq/coffer/internal/server/plans"
	"github.com/cofferhq/coffer/internal/server/storage"
)

// dashboardFixture is the UI fixture with every service the dashboard
// reads, and a store clock the test can move back (ago).
type dashboardFixture struct {
	*fixture
	storage *storage.Service
	ago     atomic.Int64 // nanoseconds the store's clock is behind
}

func newDashboardFixture(t testing.TB, db *metadb.DB) *dashboardFixture {
	t.Helper()
	df := &dashboardFixture{}
	db.Now = func() time.Time { return time.Now().Add(-time.Duration(df.ago.Load())) }
	df.fixture = newFixtureWith(t, db, func(f *fixture, o *Options) {
		ag := agents.New(agents.Options{Store: db, Events: f.hub})
		df.storage = newStorageService(t, db, f.hub)
		o.Agents, o.Storage = ag, df.storage
		o.Plans = plans.New(plans.Options{Store: db, Clients: ag, Backups: &planRunner{}, Events: f.hub,
			DefaultRepositoryID: df.storage.Repos().DefaultID(), Repositories: df.storage})
		o.Backups = backups.New(backups.Options{Store: db, Repos: df.storage.Repos(), Events: f.hub, Commands: ag, Clients: ag})
	})
	return df
}

// at runs fn with the store's clock d in the past.
func (f *dashboardFixture) at(d time.Duration, fn func()) {
	f.ago.Store(int64(d))
	defer f.ago.Store(0)
	fn()
}

// backup stores a backup of plan that ran from started to finished ago.
func (f *dashboardFixture) backup(planID string, state coffer.JobState, started, finished time.Duration, msg string) *coffer.Backup {
	f.t.Helper()
	ctx := context.Background()
	b := &coffer.Backup{ClientID: "client-1", PlanID: planID, State: coffer.JobRunning, Paths: []string{"/srv"}, HostName: "web-1"}
	f.at(started, func() {
		if err := f.db.CreateBackup(ctx, b); err != nil {
			f.t.Fatal(err)
		}
	})
	f.at(finished, func() {
		done, err := f.db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: state, Error: msg,
			Meta: &coffer.BackupMeta{Name: "nightly"}})
		if err != nil {
			f.t.Fatal(err)
		}
		b = done
	})
	return b
}

// section returns the element with id from a page, up to its </section>.
func section(t *testing.T, body, id string) string {
	t.Helper()
	i := strings.Index(body, `id="`+id+`"`)
	if i < 0 {
		t.Fatalf("no #%s on the page:\n%s", id, body)
	}
	j := strings.Index(body[i:], "</section>")
	return body[i : i+j]
}

func TestUIDashboardParts(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newDashboardFixture(t, db)
		ctx := context.Background()
		viewer := f.uiSignIn("viewer", "viewer-password")

		// Empty: no plan needs attention, the charts say there is no data.
		r := f.uiDo("GET", "/", []*http.Cookie{viewer}, nil)
		if r.StatusCode != 200 {
			t.Fatalf("dashboard: %d\n%s", r.StatusCode, r.Body)
		}
		if s := section(t, r.Body, "plans-attention"); strings.Contains(s, "data-plan=") || !strings.Contains(s, "Every enabled plan ran") {
			t.Errorf("attention, empty:\n%s", s)
		}
		for _, id := range []string{"chart-stored", "chart-durations"} {
			if s := section(t, r.Body, id); !strings.Contains(s, "<svg") || !strings.Contains(s, "chart-nodata") || !strings.Contains(s, "No data yet") {
				t.Errorf("%s, empty:\n%s", id, s)
			}
		}
		defID := f.storage.Repos().DefaultID()
		if s := section(t, r.Body, "storage-usage"); !strings.Contains(s, `href="/storage/repositories/`+defID+`"`) ||
			!strings.Contains(s, "No quota") || strings.Contains(s, "<meter") {
			t.Errorf("storage, no quota:\n%s", s)
		}

		// Data: a failing plan, a healthy one, a quota and usage history.
		failing := &coffer.Plan{Name: "db dumps", ClientID: "client-1", Include: []string{"/srv"}, Enabled: true}
		healthy := &coffer.Plan{Name: "home", ClientID: "client-1", Include: []string{"/home"}, Enabled: true}
		for _, p := range []*coffer.Plan{failing, healthy} {
			if err := db.CreatePlan(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		f.backup(healthy.ID, coffer.JobSucceeded, 3*time.Hour, 2*time.Hour, "")
		f.backup(failing.ID, coffer.JobSucceeded, 90*time.Minute, 80*time.Minute, "")
		f.backup(failing.ID, coffer.JobFailed, 20*time.Minute, 15*time.Minute, "disk full")
		repo, err := f.storage.Repos().Get(ctx, defID)
		if err != nil {
			t.Fatal(err)
		}
		repotest.WriteSnapshot(t, repo, repotest.Files{"a": repotest.Random(1, 40_000)})
		stored, err := db.RepositoryStoredBytes(ctx, defID)
		if err != nil || stored == 0 {
			t.Fatalf("stored bytes: %d, %v", stored, err)
		}
		rec, err := db.GetRepository(ctx, defID)
		if err != nil {
			t.Fatal(err)
		}
		rec.QuotaBytes = stored * 10 / 9 // 90 %: above the low mark
		if err := db.UpdateRepository(ctx, rec); err != nil {
			t.Fatal(err)
		}
		for h := 1; h <= 3; h++ {
			if _, err := db.RecordUsageSample(ctx, metadb.UsageSample{RepositoryID: defID, TakenAt: time.Now().Add(-time.Duration(h) * 6 * time.Hour),
				StoredBytes: stored / int64(h), LogicalBytes: 40_000}, false); err != nil {
				t.Fatal(err)
			}
		}

		r = f.uiDo("GET", "/", []*http.Cookie{viewer}, nil)
		if r.StatusCode != 200 {
			t.Fatalf("dashboard: %d\n%s", r.StatusCode, r.Body)
		}
		att := section(t, r.Body, "plans-attention")
		if !strings.Contains(att, `data-plan="`+failing.ID+`" data-reason="failed"`) || !strings.Contains(att, `href="/plans/`+failing.ID+`"`) ||
			!strings.Contains(att, "The last backup failed: disk full.") || strings.Contains(att, healthy.ID) {
			t.Errorf("attention:\n%s", att)
		}
		st := section(t, r.Body, "storage-usage")
		meter := regexp.MustCompile(`<meter class="quota"[^>]*>`).FindString(st)
		for _, want := range []string{`max="` + itoa(rec.QuotaBytes) + `"`, `value="` + itoa(stored) + `"`,
			`low="` + itoa(rec.QuotaBytes*80/100) + `"`, `high="` + itoa(rec.QuotaBytes*95/100) + `"`} {
			if !strings.Contains(meter, want) {
				t.Errorf("meter %s lacks %s", meter, want)
			}
		}
		if !strings.Contains(st, "90 % of") {
			t.Errorf("storage text:\n%s", st)
		}
		chart := section(t, r.Body, "chart-stored")
		if !strings.Contains(chart, "<svg") || strings.Contains(chart, "chart-nodata") || strings.Count(chart, "chart-point") < 3 {
			t.Errorf("stored chart:\n%s", chart)
		}
		bars := section(t, r.Body, "chart-durations")
		if !strings.Contains(bars, "<svg") || strings.Count(bars, `class="chart-bar state-succeeded"`) != 2 ||
			strings.Count(bars, `class="chart-bar state-failed"`) != 1 || !strings.Contains(bars, "nightly on web-1") {
			t.Errorf("durations chart:\n%s", bars)
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
