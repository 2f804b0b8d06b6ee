package retention_test

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/retention"
	"github.com/google/go-cmp/cmp"
)

func mustLoad(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return loc
}

// at parses an RFC 3339 time.
func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func ok(id, ts string) retention.Backup {
	return retention.Backup{ID: id, Time: at(ts), Succeeded: true}
}

func failed(id, ts string) retention.Backup {
	return retention.Backup{ID: id, Time: at(ts)}
}

func withHold(b retention.Backup, ts string) retention.Backup {
	e := at(ts)
	b.ExpiresAt = &e
	return b
}

// render turns decisions into "id:reason+reason" ("id:-" when forgotten), in
// output order, and checks the invariants every result must hold.
func render(t *testing.T, in []retention.Backup, ds []retention.Decision) []string {
	t.Helper()
	if len(ds) != len(in) {
		t.Fatalf("got %d decisions for %d backups", len(ds), len(in))
	}
	out := make([]string, len(ds))
	for i, d := range ds {
		if d.Keep != (len(d.Reasons) > 0) {
			t.Errorf("%s: Keep=%v with reasons %v", d.Backup.ID, d.Keep, d.Reasons)
		}
		if i > 0 {
			p := ds[i-1].Backup
			if p.Time.Before(d.Backup.Time) || p.Time.Equal(d.Backup.Time) && p.ID < d.Backup.ID {
				t.Errorf("not newest first: %s before %s", p.ID, d.Backup.ID)
			}
		}
		r := "-"
		if len(d.Reasons) > 0 {
			r = strings.Join(d.Reasons, "+")
		}
		out[i] = d.Backup.ID + ":" + r
	}
	return out
}

func TestApply(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	newYork := mustLoad(t, "America/New_York")
	auckland := mustLoad(t, "Pacific/Auckland")

	now := at("2024-06-15T12:00:00Z")
	tests := []struct {
		name    string
		policy  retention.Policy
		backups []retention.Backup
		now     time.Time // zero means now above
		loc     *time.Location
		want    []string
	}{
		{
			name:   "zero policy keeps everything, failed included",
			policy: retention.Policy{},
			backups: []retention.Backup{
				ok("a", "2020-01-01T00:00:00Z"),
				failed("b", "2024-06-14T00:00:00Z"),
				ok("c", "2024-06-15T00:00:00Z"),
				failed("d", "2024-06-15T11:00:00Z"),
			},
			want: []string{"d:all", "c:newest+all", "b:all", "a:all"},
		},
		{
			name:    "no backups",
			policy:  retention.Policy{KeepLast: 3},
			backups: nil,
			want:    []string{},
		},
		{
			name:   "keep_last counts successful backups only",
			policy: retention.Policy{KeepLast: 2},
			backups: []retention.Backup{
				ok("a", "2024-06-15T08:00:00Z"),
				ok("b", "2024-06-15T09:00:00Z"),
				failed("c", "2024-06-15T10:00:00Z"),
				ok("d", "2024-06-15T11:00:00Z"),
				failed("e", "2024-06-15T11:30:00Z"),
			},
			want: []string{"e:-", "d:last+newest", "c:-", "b:last", "a:-"},
		},
		{
			name:   "keep_last larger than the number of backups",
			policy: retention.Policy{KeepLast: 10},
			backups: []retention.Backup{
				ok("a", "2024-06-15T08:00:00Z"),
				ok("b", "2024-06-15T09:00:00Z"),
			},
			want: []string{"b:last+newest", "a:last"},
		},
		{
			name:   "newest successful kept by a policy that keeps nothing else",
			policy: retention.Policy{HoldDays: 1},
			backups: []retention.Backup{
				ok("a", "2024-06-01T00:00:00Z"),
				ok("b", "2024-06-02T00:00:00Z"),
				failed("c", "2024-06-03T00:00:00Z"),
			},
			want: []string{"c:-", "b:newest", "a:-"},
		},
		{
			name:   "newest successful kept when keep_within has nothing in range",
			policy: retention.Policy{KeepWithin: time.Hour},
			backups: []retention.Backup{
				ok("a", "2024-06-01T00:00:00Z"),
				ok("b", "2024-06-02T00:00:00Z"),
			},
			want: []string{"b:newest", "a:-"},
		},
		{
			name:   "only failed backups: none is the newest successful",
			policy: retention.Policy{KeepLast: 1},
			backups: []retention.Backup{
				failed("a", "2024-06-01T00:00:00Z"),
				failed("b", "2024-06-02T00:00:00Z"),
			},
			want: []string{"b:-", "a:-"},
		},
		{
			name:   "keep_hourly keeps the newest of each hour",
			policy: retention.Policy{KeepHourly: 2},
			backups: []retention.Backup{
				ok("a", "2024-06-15T09:30:00Z"),
				ok("b", "2024-06-15T10:05:00Z"),
				ok("c", "2024-06-15T10:50:00Z"),
				ok("d", "2024-06-15T11:10:00Z"),
				ok("e", "2024-06-15T11:59:59Z"),
			},
			want: []string{"e:hourly+newest", "d:-", "c:hourly", "b:-", "a:-"},
		},
		{
			name:   "keep_hourly skips hours without backups",
			policy: retention.Policy{KeepHourly: 3},
			backups: []retention.Backup{
				ok("a", "2024-06-13T09:30:00Z"),
				ok("b", "2024-06-14T10:05:00Z"),
				ok("c", "2024-06-15T11:10:00Z"),
				ok("d", "2024-06-10T00:00:00Z"),
			},
			want: []string{"c:hourly+newest", "b:hourly", "a:hourly", "d:-"},
		},
		{
			name:   "failed backups fill no bucket",
			policy: retention.Policy{KeepDaily: 2},
			backups: []retention.Backup{
				ok("a", "2024-06-12T10:00:00Z"),
				ok("b", "2024-06-13T10:00:00Z"),
				failed("c", "2024-06-14T10:00:00Z"),
				failed("d", "2024-06-15T10:00:00Z"),
			},
			want: []string{"d:-", "c:-", "b:daily+newest", "a:daily"},
		},
		{
			name:   "keep_daily at midnight in UTC",
			policy: retention.Policy{KeepDaily: 2},
			loc:    time.UTC,
			backups: []retention.Backup{
				ok("a", "2024-03-08T12:00:00Z"),
				ok("b", "2024-03-09T22:30:00Z"), // 23:30 in Berlin
				ok("c", "2024-03-09T23:30:00Z"), // 00:30 next day in Berlin
			},
			want: []string{"c:daily+newest", "b:-", "a:daily"},
		},
		{
			name:   "keep_daily at midnight in Berlin",
			policy: retention.Policy{KeepDaily: 2},
			loc:    berlin,
			backups: []retention.Backup{
				ok("a", "2024-03-08T12:00:00Z"),
				ok("b", "2024-03-09T22:30:00Z"),
				ok("c", "2024-03-09T23:30:00Z"),
			},
			want: []string{"c:daily+newest", "b:daily", "a:-"},
		},
		{
			name:   "nil location is UTC",
			policy: retention.Policy{KeepDaily: 2},
			loc:    nil,
			backups: []retention.Backup{
				ok("a", "2024-03-08T12:00:00Z"),
				ok("b", "2024-03-09T22:30:00Z"),
				ok("c", "2024-03-09T23:30:00Z"),
			},
			want: []string{"c:daily+newest", "b:-", "a:daily"},
		},
		{
			name:   "the repeated hour when clocks go back counts twice",
			policy: retention.Policy{KeepHourly: 2},
			loc:    newYork,
			backups: []retention.Backup{
				ok("a", "2024-11-03T05:10:00Z"), // 01:10 EDT
				ok("b", "2024-11-03T05:40:00Z"), // 01:40 EDT
				ok("c", "2024-11-03T06:10:00Z"), // 01:10 EST
				ok("d", "2024-11-03T06:40:00Z"), // 01:40 EST
			},
			want: []string{"d:hourly+newest", "c:-", "b:hourly", "a:-"},
		},
		{
			name:   "a 25-hour day is one day",
			policy: retention.Policy{KeepDaily: 2},
			loc:    newYork,
			backups: []retention.Backup{
				ok("a", "2024-11-02T12:00:00Z"), // Nov 2
				ok("b", "2024-11-03T04:10:00Z"), // Nov 3 00:10 EDT
				ok("c", "2024-11-04T04:50:00Z"), // Nov 3 23:50 EST
			},
			want: []string{"c:daily+newest", "b:-", "a:daily"},
		},
		{
			name:   "a 23-hour day is one day",
			policy: retention.Policy{KeepDaily: 2},
			loc:    newYork,
			backups: []retention.Backup{
				ok("a", "2024-03-09T12:00:00Z"), // Mar 9
				ok("b", "2024-03-10T05:10:00Z"), // Mar 10 00:10 EST
				ok("c", "2024-03-11T03:50:00Z"), // Mar 10 23:50 EDT
				ok("d", "2024-03-11T04:10:00Z"), // Mar 11 00:10 EDT
			},
			want: []string{"d:daily+newest", "c:daily", "b:-", "a:-"},
		},
		{
			name:   "ISO weeks across a year boundary",
			policy: retention.Policy{KeepWeekly: 2},
			backups: []retention.Backup{
				ok("a", "2024-12-28T12:00:00Z"), // Sat, 2024-W52
				ok("b", "2024-12-29T12:00:00Z"), // Sun, 2024-W52
				ok("c", "2024-12-30T12:00:00Z"), // Mon, 2025-W01
				ok("d", "2025-01-05T12:00:00Z"), // Sun, 2025-W01
				ok("e", "2024-12-22T12:00:00Z"), // Sun, 2024-W51
			},
			now:  at("2025-01-06T00:00:00Z"),
			want: []string{"d:weekly+newest", "c:-", "b:weekly", "a:-", "e:-"},
		},
		{
			name:   "ISO week starts on Monday in the plan's time zone",
			policy: retention.Policy{KeepWeekly: 2},
			loc:    berlin,
			backups: []retention.Backup{
				ok("a", "2024-06-09T21:00:00Z"), // Sun 23:00 in Berlin, W23
				ok("b", "2024-06-09T22:30:00Z"), // Mon 00:30 in Berlin, W24
				ok("c", "2024-06-10T10:00:00Z"), // Mon, W24
			},
			want: []string{"c:weekly+newest", "b:-", "a:weekly"},
		},
		{
			name:   "month ends",
			policy: retention.Policy{KeepMonthly: 3},
			loc:    berlin,
			backups: []retention.Backup{
				ok("a", "2024-01-15T12:00:00Z"),
				ok("b", "2024-01-31T22:59:00Z"), // Jan 31 23:59 Berlin
				ok("c", "2024-01-31T23:00:00Z"), // Feb 1 00:00 Berlin
				ok("d", "2024-02-29T22:59:00Z"), // Feb 29 23:59 Berlin (leap day)
				ok("e", "2024-02-29T23:01:00Z"), // Mar 1 00:01 Berlin
			},
			want: []string{"e:monthly+newest", "d:monthly", "c:-", "b:monthly", "a:-"},
		},
		{
			name:   "keep_yearly in a zone far from UTC",
			policy: retention.Policy{KeepYearly: 2},
			loc:    auckland,
			backups: []retention.Backup{
				ok("a", "2022-06-01T00:00:00Z"),
				ok("b", "2023-12-31T10:00:00Z"), // 2023-12-31 23:00 NZDT
				ok("c", "2023-12-31T11:30:00Z"), // 2024-01-01 00:30 NZDT
			},
			want: []string{"c:yearly+newest", "b:yearly", "a:-"},
		},
		{
			name:   "keep_within keeps successful backups newer than the cutoff",
			policy: retention.Policy{KeepWithin: 24 * time.Hour},
			backups: []retention.Backup{
				ok("a", "2024-06-14T12:00:00Z"), // exactly at the cutoff: out
				ok("b", "2024-06-14T12:00:01Z"),
				failed("c", "2024-06-15T06:00:00Z"),
				ok("d", "2024-06-15T11:00:00Z"),
			},
			want: []string{"d:within+newest", "c:-", "b:within", "a:-"},
		},
		{
			name:   "hold_days keeps failed and successful backups alike",
			policy: retention.Policy{HoldDays: 2},
			backups: []retention.Backup{
				ok("a", "2024-06-13T11:00:00Z"),     // 49h ago
				failed("b", "2024-06-13T12:00:00Z"), // exactly 2 days ago: expired
				failed("c", "2024-06-13T13:00:00Z"), // 47h ago
				ok("d", "2024-06-14T12:00:00Z"),
			},
			want: []string{"d:hold+newest", "c:hold", "b:-", "a:-"},
		},
		{
			name:   "hold_days counts calendar days across a DST change",
			policy: retention.Policy{HoldDays: 1},
			loc:    newYork,
			backups: []retention.Backup{
				ok("a", "2024-03-09T17:00:00Z"), // Mar 9 12:00 EST, held until Mar 10 12:00 EDT
				ok("b", "2024-03-10T16:20:00Z"), // newest
			},
			now:  at("2024-03-10T16:30:00Z"), // Mar 10 12:30 EDT: only 23.5h later
			want: []string{"b:hold+newest", "a:-"},
		},
		{
			name:   "expires_at in the future holds any backup",
			policy: retention.Policy{KeepLast: 1},
			backups: []retention.Backup{
				withHold(failed("a", "2020-01-01T00:00:00Z"), "2024-07-01T00:00:00Z"),
				withHold(ok("b", "2020-01-02T00:00:00Z"), "2024-06-15T12:00:00Z"), // expires now: not held
				withHold(ok("c", "2020-01-03T00:00:00Z"), "2024-06-01T00:00:00Z"),
				withHold(ok("d", "2020-01-04T00:00:00Z"), "2024-06-15T12:00:01Z"),
				ok("e", "2024-06-15T00:00:00Z"),
			},
			want: []string{"e:last+newest", "d:hold", "c:-", "b:-", "a:hold"},
		},
		{
			name: "rules combine and list every reason",
			policy: retention.Policy{
				KeepLast: 2, KeepDaily: 3, KeepWeekly: 2, KeepMonthly: 2, KeepYearly: 3,
				KeepWithin: 2 * time.Hour, HoldDays: 1,
			},
			backups: []retention.Backup{
				ok("a", "2023-07-01T00:00:00Z"),     // Sat 2023-W26
				ok("b", "2024-05-20T00:00:00Z"),     // Mon 2024-W21
				ok("c", "2024-06-10T09:00:00Z"),     // Mon 2024-W24
				ok("d", "2024-06-13T09:00:00Z"),     // Thu
				ok("e", "2024-06-14T09:00:00Z"),     // Fri
				ok("f", "2024-06-15T09:00:00Z"),     // Sat
				ok("g", "2024-06-15T10:30:00Z"),     // Sat
				failed("h", "2024-06-15T11:30:00Z"), // Sat
				ok("i", "2022-12-31T00:00:00Z"),
				ok("j", "2021-01-01T00:00:00Z"),
			},
			want: []string{
				"h:hold",
				"g:last+daily+weekly+monthly+yearly+within+hold+newest",
				"f:last+hold",
				"e:daily",
				"d:daily",
				"c:-",
				"b:weekly+monthly",
				"a:yearly",
				"i:yearly",
				"j:-",
			},
		},
		{
			name:   "unsorted input with equal times: the greater ID is newer",
			policy: retention.Policy{KeepLast: 2, KeepDaily: 1},
			backups: []retention.Backup{
				ok("01B", "2024-06-15T10:00:00Z"),
				ok("01A", "2024-06-14T10:00:00Z"),
				ok("01D", "2024-06-15T10:00:00Z"),
				ok("01C", "2024-06-15T10:00:00Z"),
			},
			want: []string{"01D:last+daily+newest", "01C:last", "01B:-", "01A:-"},
		},
		{
			name:   "duplicate entries are decided separately",
			policy: retention.Policy{KeepLast: 1},
			backups: []retention.Backup{
				ok("x", "2024-06-15T10:00:00Z"),
				ok("x", "2024-06-15T10:00:00Z"),
			},
			want: []string{"x:last+newest", "x:-"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.policy.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			n := now
			if !tt.now.IsZero() {
				n = tt.now
			}
			in := slices.Clone(tt.backups)
			got := render(t, tt.backups, retention.Apply(tt.policy, tt.backups, n, tt.loc))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decisions (-want +got):\n%s", diff)
			}
			if !slices.EqualFunc(in, tt.backups, func(a, b retention.Backup) bool {
				return a.ID == b.ID && a.Time.Equal(b.Time)
			}) {
				t.Errorf("Apply reordered its input")
			}
		})
	}
}

// TestApplyDeterministic checks that the order of the input does not change
// the decisions, and that the newest successful backup is always kept.
func TestApplyDeterministic(t *testing.T) {
	loc := mustLoad(t, "Europe/Berlin")
	now := at("2024-06-15T12:00:00Z")
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var bs []retention.Backup
		for i := range 1 + rng.IntN(40) {
			bs = append(bs, retention.Backup{
				ID:        string(rune('A'+i%26)) + string(rune('a'+i/26)),
				Time:      now.Add(-time.Duration(rng.IntN(400*24)) * time.Hour / 4),
				Succeeded: rng.IntN(4) != 0,
			})
		}
		p := retention.Policy{
			KeepLast: rng.IntN(3), KeepHourly: rng.IntN(3), KeepDaily: rng.IntN(4),
			KeepWeekly: rng.IntN(3), KeepMonthly: rng.IntN(3), KeepYearly: rng.IntN(2),
		}
		want := render(t, bs, retention.Apply(p, bs, now, loc))
		shuffled := slices.Clone(bs)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		ds := retention.Apply(p, shuffled, now, loc)
		if diff := cmp.Diff(want, render(t, shuffled, ds)); diff != "" {
			t.Fatalf("round %d: shuffled input changed the decisions (-want +got):\n%s", round, diff)
		}
		for _, d := range ds {
			if d.Backup.Succeeded {
				if !d.Keep || !slices.Contains(d.Reasons, retention.ReasonNewest) {
					t.Fatalf("round %d: newest successful %s not kept: %v", round, d.Backup.ID, d.Reasons)
				}
				break
			}
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name   string
		policy retention.Policy
		field  string // "" when valid
	}{
		{"zero", retention.Policy{}, ""},
		{"keeps nothing but the newest", retention.Policy{KeepWithin: time.Nanosecond}, ""},
		{"all set", retention.Policy{
			KeepLast: 1, KeepHourly: 2, KeepDaily: 3, KeepWeekly: 4, KeepMonthly: 5, KeepYearly: 6,
			KeepWithin: time.Hour, HoldDays: 7,
		}, ""},
		{"keep_last", retention.Policy{KeepLast: -1}, "keep_last"},
		{"keep_hourly", retention.Policy{KeepHourly: -1}, "keep_hourly"},
		{"keep_daily", retention.Policy{KeepDaily: -1}, "keep_daily"},
		{"keep_weekly", retention.Policy{KeepWeekly: -1}, "keep_weekly"},
		{"keep_monthly", retention.Policy{KeepMonthly: -1}, "keep_monthly"},
		{"keep_yearly", retention.Policy{KeepYearly: -1}, "keep_yearly"},
		{"keep_within", retention.Policy{KeepWithin: -time.Second}, "keep_within"},
		{"hold_days", retention.Policy{HoldDays: -3}, "hold_days"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.policy.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !coffer.IsKind(err, coffer.KindInvalid) || coffer.ErrorCode(err) != "invalid_retention" {
				t.Fatalf("Validate = %v, want an invalid_retention error", err)
			}
			var ce *coffer.Error
			if !errors.As(err, &ce) || ce.Meta["field"] != tt.field || !strings.Contains(ce.Detail, tt.field) {
				t.Errorf("Validate = %#v, want field %q named", err, tt.field)
			}
		})
	}
}

func TestPolicyIsZeroAndString(t *testing.T) {
	if !(retention.Policy{}).IsZero() {
		t.Error("zero Policy: IsZero false")
	}
	if (retention.Policy{HoldDays: 1}).IsZero() {
		t.Error("HoldDays 1: IsZero true")
	}
	if got := (retention.Policy{}).String(); got != "none" {
		t.Errorf("zero String = %q", got)
	}
	p := retention.Policy{KeepLast: 2, KeepDaily: 7, KeepWithin: 36 * time.Hour, HoldDays: 3}
	if got, want := p.String(), "keep_last=2 keep_daily=7 keep_within=36h0m0s hold_days=3"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}
