package retention_test

import (
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/retention"
)

func TestHoldUntil(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	tests := []struct {
		name     string
		policy   retention.Policy
		finished string
		loc      *time.Location
		want     string // "" when there is no hold
	}{
		{"no hold_days", retention.Policy{KeepLast: 3}, "2024-06-15T10:00:00Z", nil, ""},
		{"negative hold_days", retention.Policy{HoldDays: -1}, "2024-06-15T10:00:00Z", nil, ""},
		{"days in UTC", retention.Policy{HoldDays: 30}, "2024-06-15T10:00:00Z", nil, "2024-07-15T10:00:00Z"},
		// Calendar days in the plan's zone: across the spring-forward night
		// the hold still ends at the same wall clock time, 23 hours of UTC
		// later for the day that is short.
		{"across a DST change", retention.Policy{HoldDays: 1}, "2024-03-30T11:00:00Z", berlin, "2024-03-31T10:00:00Z"},
		{"month end", retention.Policy{HoldDays: 1}, "2024-02-29T23:30:00Z", nil, "2024-03-01T23:30:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := retention.HoldUntil(tc.policy, at(tc.finished), tc.loc)
			if tc.want == "" {
				if ok {
					t.Fatalf("HoldUntil = %v, want no hold", got)
				}
				return
			}
			if !ok || !got.Equal(at(tc.want)) {
				t.Fatalf("HoldUntil = %v, %v; want %s", got, ok, tc.want)
			}
		})
	}
}

// TestHoldUntilMatchesApply checks that the hold HoldUntil reports is the
// one Apply honours: held a nanosecond before, let go at it.
func TestHoldUntilMatchesApply(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	p := retention.Policy{KeepLast: 1, HoldDays: 2}
	old := ok("old", "2024-03-29T12:00:00Z")
	backups := []retention.Backup{old, ok("new", "2024-04-10T12:00:00Z")}
	until, _ := retention.HoldUntil(p, old.Time, berlin)
	for _, tc := range []struct {
		now  time.Time
		keep bool
	}{{until.Add(-time.Nanosecond), true}, {until, false}} {
		ds := retention.Apply(p, backups, tc.now, berlin)
		if ds[1].Backup.ID != "old" || ds[1].Keep != tc.keep {
			t.Errorf("at %v: %+v, want keep=%v", tc.now, ds[1], tc.keep)
		}
	}
}

func TestWhy(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	gone := func(b retention.Backup) retention.Decision { return retention.Decision{Backup: b} }
	tests := []struct {
		name   string
		policy retention.Policy
		d      retention.Decision
		loc    *time.Location
		want   string
	}{
		{"keep rules", retention.Policy{KeepLast: 2, KeepDaily: 7}, gone(ok("a", "2024-06-01T10:00:00Z")), nil,
			"not kept by keep_last=2, keep_daily=7"},
		{"every keep rule", retention.Policy{KeepLast: 1, KeepHourly: 2, KeepDaily: 3, KeepWeekly: 4, KeepMonthly: 5,
			KeepYearly: 6, KeepWithin: 36 * time.Hour}, gone(ok("a", "2024-06-01T10:00:00Z")), nil,
			"not kept by keep_last=1, keep_hourly=2, keep_daily=3, keep_weekly=4, keep_monthly=5, keep_yearly=6, keep_within=36h0m0s"},
		{"hold only", retention.Policy{HoldDays: 30}, gone(ok("a", "2024-06-01T10:00:00Z")), nil,
			"hold_days=30 expired on 2024-07-01T10:00:00Z"},
		{"hold in the plan's zone, reported in UTC", retention.Policy{HoldDays: 1}, gone(ok("a", "2024-03-30T11:00:00Z")), berlin,
			"hold_days=1 expired on 2024-03-31T10:00:00Z"},
		{"keep rules and hold", retention.Policy{KeepLast: 2, HoldDays: 7}, gone(ok("a", "2024-06-01T10:00:00Z")), nil,
			"not kept by keep_last=2; hold_days=7 expired on 2024-06-08T10:00:00Z"},
		{"a failed backup", retention.Policy{KeepLast: 2}, gone(failed("f", "2024-06-01T10:00:00Z")), nil,
			"it has no snapshot (failed or canceled), and keep rules count only successful backups"},
		{"a failed backup's hold", retention.Policy{KeepLast: 2, HoldDays: 1}, gone(failed("f", "2024-06-01T10:00:00Z")), nil,
			"it has no snapshot (failed or canceled), and keep rules count only successful backups; hold_days=1 expired on 2024-06-02T10:00:00Z"},
		{"an explicit hold", retention.Policy{KeepLast: 1}, gone(withHold(ok("a", "2024-06-01T10:00:00Z"), "2024-06-03T00:00:00Z")), nil,
			"not kept by keep_last=1; its hold expired on 2024-06-03T00:00:00Z"},
		{"a kept backup", retention.Policy{KeepLast: 1},
			retention.Decision{Backup: ok("a", "2024-06-01T10:00:00Z"), Keep: true, Reasons: []string{"last", "newest"}}, nil,
			"kept (last, newest)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := retention.Why(tc.policy, tc.d, tc.loc); got != tc.want {
				t.Errorf("Why = %q\nwant  %q", got, tc.want)
			}
		})
	}
}
