package schedule

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cofferhq/coffer"
)

// from is Friday 2026-05-01 10:00:00 UTC (12:00 CEST).
var from = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

func berlin(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatalf("load Europe/Berlin: %v", err)
	}
	return loc
}

func formatAll(ts []time.Time) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Format(time.RFC3339)
	}
	return out
}

func mustParse(t *testing.T, expr string, loc *time.Location) *Schedule {
	t.Helper()
	s, err := Parse(expr, loc)
	if err != nil {
		t.Fatalf("Parse(%q): %v", expr, err)
	}
	return s
}

func TestParseValid(t *testing.T) {
	ber := berlin(t)
	tests := []struct {
		name   string
		expr   string
		loc    *time.Location
		after  time.Time
		string string // normalized; "" means expr
		want   []string
	}{
		{"quartz daily", "0 30 2 * * ?", time.UTC, from, "",
			[]string{"2026-05-02T02:30:00Z", "2026-05-03T02:30:00Z", "2026-05-04T02:30:00Z"}},
		{"quartz seconds step", "0/3 * * * * ?", time.UTC, from, "",
			[]string{"2026-05-01T10:00:03Z", "2026-05-01T10:00:06Z", "2026-05-01T10:00:09Z"}},
		{"quartz weekdays by name", "0 0 12 ? * MON-FRI", time.UTC, from, "",
			[]string{"2026-05-01T12:00:00Z", "2026-05-04T12:00:00Z", "2026-05-05T12:00:00Z"}},
		{"quartz last day of month", "0 0 0 L * ?", time.UTC, from, "",
			[]string{"2026-05-31T00:00:00Z", "2026-06-30T00:00:00Z", "2026-07-31T00:00:00Z"}},
		{"quartz third friday", "0 0 9 ? * FRI#3", time.UTC, from, "",
			[]string{"2026-05-15T09:00:00Z", "2026-06-19T09:00:00Z", "2026-07-17T09:00:00Z"}},
		{"quartz last friday by number", "0 0 9 ? * 5#L", time.UTC, from, "",
			[]string{"2026-05-29T09:00:00Z", "2026-06-26T09:00:00Z", "2026-07-31T09:00:00Z"}},
		{"quartz nearest weekday", "0 15 10 16W * ?", time.UTC, from, "", // 16 May is a Saturday
			[]string{"2026-05-15T10:15:00Z", "2026-06-16T10:15:00Z", "2026-07-16T10:15:00Z"}},
		{"quartz with year", "0 0 12 1 1 ? 2030", time.UTC, from, "",
			[]string{"2030-01-01T12:00:00Z"}},
		{"quartz year in the past never fires", "0 0 12 1 1 ? 2020", time.UTC, from, "", []string{}},
		{"standard", "30 2 * * *", time.UTC, from, "",
			[]string{"2026-05-02T02:30:00Z", "2026-05-03T02:30:00Z", "2026-05-04T02:30:00Z"}},
		{"standard sunday is 0", "0 0 * * 0", time.UTC, from, "",
			[]string{"2026-05-03T00:00:00Z", "2026-05-10T00:00:00Z", "2026-05-17T00:00:00Z"}},
		{"standard sunday is 7", "0 0 * * 7", time.UTC, from, "",
			[]string{"2026-05-03T00:00:00Z", "2026-05-10T00:00:00Z", "2026-05-17T00:00:00Z"}},
		{"standard THU upper case", "0 0 * * THU", time.UTC, from, "",
			[]string{"2026-05-07T00:00:00Z", "2026-05-14T00:00:00Z", "2026-05-21T00:00:00Z"}},
		{"standard month names and list", "0 6 1 jan,JUL *", time.UTC, from, "",
			[]string{"2026-07-01T06:00:00Z", "2027-01-01T06:00:00Z", "2027-07-01T06:00:00Z"}},
		{"whitespace normalized", "  */15   * *  * *\t", time.UTC, from, "*/15 * * * *",
			[]string{"2026-05-01T10:15:00Z", "2026-05-01T10:30:00Z", "2026-05-01T10:45:00Z"}},
		{"nil location is UTC", "30 2 * * *", nil, from, "",
			[]string{"2026-05-02T02:30:00Z", "2026-05-03T02:30:00Z", "2026-05-04T02:30:00Z"}},
		{"descriptor daily", "@daily", time.UTC, from, "",
			[]string{"2026-05-02T00:00:00Z", "2026-05-03T00:00:00Z", "2026-05-04T00:00:00Z"}},
		{"descriptor midnight upper case", "@MIDNIGHT", time.UTC, from, "@midnight",
			[]string{"2026-05-02T00:00:00Z", "2026-05-03T00:00:00Z", "2026-05-04T00:00:00Z"}},
		{"descriptor hourly", "@hourly", time.UTC, from, "",
			[]string{"2026-05-01T11:00:00Z", "2026-05-01T12:00:00Z", "2026-05-01T13:00:00Z"}},
		{"descriptor weekly is sunday", "@weekly", time.UTC, from, "",
			[]string{"2026-05-03T00:00:00Z", "2026-05-10T00:00:00Z", "2026-05-17T00:00:00Z"}},
		{"descriptor monthly", "@monthly", time.UTC, from, "",
			[]string{"2026-06-01T00:00:00Z", "2026-07-01T00:00:00Z", "2026-08-01T00:00:00Z"}},
		{"descriptor yearly", "@yearly", time.UTC, from, "",
			[]string{"2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z", "2029-01-01T00:00:00Z"}},
		{"descriptor annually", "@annually", time.UTC, from, "",
			[]string{"2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z", "2029-01-01T00:00:00Z"}},
		{"descriptor every", "@every 1h30m", time.UTC, from, "",
			[]string{"2026-05-01T11:30:00Z", "2026-05-01T13:00:00Z", "2026-05-01T14:30:00Z"}},

		// Europe/Berlin: the same instant is 12:00 CEST.
		{"berlin quartz daily", "0 30 2 * * ?", ber, from, "",
			[]string{"2026-05-02T02:30:00+02:00", "2026-05-03T02:30:00+02:00", "2026-05-04T02:30:00+02:00"}},
		{"berlin next is strictly after", "0 0 12 ? * MON-FRI", ber, from, "",
			[]string{"2026-05-04T12:00:00+02:00", "2026-05-05T12:00:00+02:00", "2026-05-06T12:00:00+02:00"}},
		{"berlin standard", "30 2 * * *", ber, from, "",
			[]string{"2026-05-02T02:30:00+02:00", "2026-05-03T02:30:00+02:00", "2026-05-04T02:30:00+02:00"}},
		{"berlin descriptor daily", "@daily", ber, from, "",
			[]string{"2026-05-02T00:00:00+02:00", "2026-05-03T00:00:00+02:00", "2026-05-04T00:00:00+02:00"}},
		{"berlin first of month", "0 0 3 1 * ?", ber, from, "",
			[]string{"2026-06-01T03:00:00+02:00", "2026-07-01T03:00:00+02:00", "2026-08-01T03:00:00+02:00"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustParse(t, tt.expr, tt.loc)
			wantStr := tt.string
			if wantStr == "" {
				wantStr = tt.expr
			}
			if s.String() != wantStr {
				t.Errorf("String() = %q, want %q", s.String(), wantStr)
			}
			wantLoc := tt.loc
			if wantLoc == nil {
				wantLoc = time.UTC
			}
			if s.Location() != wantLoc {
				t.Errorf("Location() = %v, want %v", s.Location(), wantLoc)
			}
			got := s.NextN(tt.after, 3, Window{})
			for _, g := range got {
				if g.Location() != wantLoc {
					t.Errorf("fire time %v not in %v", g, wantLoc)
				}
			}
			if diff := cmp.Diff(tt.want, formatAll(got)); diff != "" {
				t.Errorf("NextN (-want +got):\n%s", diff)
			}
			if len(tt.want) > 0 {
				if next := s.Next(tt.after).Format(time.RFC3339); next != tt.want[0] {
					t.Errorf("Next = %s, want %s", next, tt.want[0])
				}
			} else if next := s.Next(tt.after); !next.IsZero() {
				t.Errorf("Next = %v, want zero", next)
			}
			again := mustParse(t, s.String(), s.Location())
			if diff := cmp.Diff(formatAll(got), formatAll(again.NextN(tt.after, 3, Window{}))); diff != "" {
				t.Errorf("reparsed String() fires differently:\n%s", diff)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name     string
		expr     string
		field    string
		position int
	}{
		{"empty", "", FieldExpression, 0},
		{"blank", "   ", FieldExpression, 0},
		{"too few fields", "* * * *", FieldExpression, 0},
		{"too many fields", "0 0 0 * * ? 2030 1", FieldExpression, 0},
		{"time zone prefix", "CRON_TZ=UTC 0 0 * * *", FieldExpression, 1},
		{"seconds not a number", "x * * * * ?", FieldSeconds, 1},
		{"seconds out of range", "60 * * * * ?", FieldSeconds, 1},
		{"seconds step too large", "0/75 * * * * ?", FieldSeconds, 1},
		{"question mark in seconds", "? * * * * *", FieldSeconds, 1},
		{"minutes out of range", "0 70 * * * ?", FieldMinutes, 2},
		{"standard minutes out of range", "70 * * * *", FieldMinutes, 1},
		{"hours out of range", "0 0 24 * * ?", FieldHours, 3},
		{"standard hours bad range", "0 1-2-3 * * *", FieldHours, 2},
		{"question mark in hours", "0 0 ? * * *", FieldHours, 3},
		{"day of month zero", "0 0 0 0 * ?", FieldDayOfMonth, 4},
		{"day of month 32", "0 0 0 32 * ?", FieldDayOfMonth, 4},
		{"day of month bad L offset", "0 0 0 L-40 * ?", FieldDayOfMonth, 4},
		{"day of month never fires", "0 0 0 30 2 ?", FieldDayOfMonth, 4},
		{"standard day of month", "0 0 x * *", FieldDayOfMonth, 3},
		{"month 13", "0 0 0 * 13 ?", FieldMonth, 5},
		{"month bad name", "0 0 0 * FOO ?", FieldMonth, 5},
		{"standard month", "0 0 * 0 *", FieldMonth, 4},
		{"day of week 8", "0 0 0 ? * 8", FieldDayOfWeek, 6},
		{"day of week bad name", "0 0 0 ? * FUNDAY", FieldDayOfWeek, 6},
		{"day of week bad nth", "0 0 0 ? * MON#6", FieldDayOfWeek, 6},
		{"standard day of week", "0 0 * * 9", FieldDayOfWeek, 5},
		{"question mark not alone", "0 0 0 ?,1 * *", FieldDayOfMonth, 4},
		{"year not a number", "0 0 0 1 1 ? x", FieldYear, 7},
		{"year backwards", "0 0 0 1 1 ? 2030-2020", FieldYear, 7},
		{"question mark in year", "0 0 0 1 1 * ?", FieldYear, 7},
		{"hash syntax", "H * * * *", FieldMinutes, 1},
		{"unknown descriptor", "@fortnightly", FieldDescriptor, 1},
		{"descriptor with argument", "@daily 5", FieldDescriptor, 2},
		{"every without duration", "@every", FieldDescriptor, 1},
		{"every bad duration", "@every soon", FieldDescriptor, 2},
		{"every too short", "@every 500ms", FieldDescriptor, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkInvalid(t, tt.expr, tt.field, tt.position)
		})
	}
}

func checkInvalid(t *testing.T, expr, field string, position int) *coffer.Error {
	t.Helper()
	s, err := Parse(expr, time.UTC)
	if err == nil {
		t.Fatalf("Parse(%q) = %q, want an error", expr, s)
	}
	var ce *coffer.Error
	if !errors.As(err, &ce) {
		t.Fatalf("Parse(%q) error %T %v, want *coffer.Error", expr, err, err)
	}
	if ce.Kind != coffer.KindInvalid || ce.Code != "invalid_schedule" {
		t.Errorf("kind, code = %s, %s; want invalid, invalid_schedule", ce.Kind, ce.Code)
	}
	if ce.Meta["field"] != field || ce.Meta["position"] != position {
		t.Errorf("meta = %v, want field %q position %d", ce.Meta, field, position)
	}
	if field != FieldExpression && !contains(ce.Detail, field) {
		t.Errorf("detail %q does not name the field %q", ce.Detail, field)
	}
	t.Logf("%q: %s", expr, ce.Detail)
	return ce
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestDayOfMonthAndDayOfWeek(t *testing.T) {
	for _, expr := range []string{
		"0 0 0 1 * ?", "0 0 0 ? * MON", "0 0 0 * * MON", "0 0 0 1 * *", "0 0 0 ? * ?",
		"0 0 1 * *", "0 0 * * MON", "0 0 0 L * ?", "0 0 0 ? * FRI#L",
	} {
		t.Run("valid "+expr, func(t *testing.T) { mustParse(t, expr, time.UTC) })
	}
	tests := []struct {
		expr     string
		position int
	}{
		{"0 0 0 1 * MON", 6},
		{"0 0 0 L * FRI", 6},
		{"0 0 0 1-7 * FRI#1", 6},
		{"0 0 1 * MON", 5},
	}
	for _, tt := range tests {
		t.Run("invalid "+tt.expr, func(t *testing.T) {
			ce := checkInvalid(t, tt.expr, FieldDayOfWeek, tt.position)
			if !contains(ce.Detail, "cannot both be restricted") {
				t.Errorf("detail %q does not explain the day-of-month/day-of-week rule", ce.Detail)
			}
		})
	}
}

func TestNextNWindow(t *testing.T) {
	at := func(h int) *time.Time {
		v := time.Date(2026, 5, 1, h, 0, 0, 0, time.UTC)
		return &v
	}
	hourly := mustParse(t, "0 0 * * * ?", time.UTC)
	tests := []struct {
		name string
		n    int
		w    Window
		want []string
	}{
		{"open window", 3, Window{},
			[]string{"2026-05-01T11:00:00Z", "2026-05-01T12:00:00Z", "2026-05-01T13:00:00Z"}},
		{"start and end are inclusive", 10, Window{Start: at(12), End: at(15)},
			[]string{"2026-05-01T12:00:00Z", "2026-05-01T13:00:00Z", "2026-05-01T14:00:00Z", "2026-05-01T15:00:00Z"}},
		{"n limits", 2, Window{Start: at(12), End: at(15)},
			[]string{"2026-05-01T12:00:00Z", "2026-05-01T13:00:00Z"}},
		{"start in the past is ignored", 2, Window{Start: at(3)},
			[]string{"2026-05-01T11:00:00Z", "2026-05-01T12:00:00Z"}},
		{"start equal to after fires at start", 1, Window{Start: at(10)},
			[]string{"2026-05-01T10:00:00Z"}},
		{"end only", 10, Window{End: at(13)},
			[]string{"2026-05-01T11:00:00Z", "2026-05-01T12:00:00Z", "2026-05-01T13:00:00Z"}},
		{"end before first fire", 3, Window{End: at(10)}, nil},
		{"end before start", 3, Window{Start: at(14), End: at(12)}, nil},
		{"zero n", 0, Window{}, nil},
		{"negative n", -1, Window{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := hourly.NextN(from, tt.n, tt.w)
			if len(got) == 0 && len(tt.want) == 0 {
				return
			}
			if diff := cmp.Diff(tt.want, formatAll(got)); diff != "" {
				t.Errorf("NextN (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("capped at MaxPreview", func(t *testing.T) {
		s := mustParse(t, "* * * * * ?", time.UTC)
		if got := len(s.NextN(from, MaxPreview+50, Window{})); got != MaxPreview {
			t.Errorf("len = %d, want %d", got, MaxPreview)
		}
	})
	t.Run("window in another zone", func(t *testing.T) {
		ber := berlin(t)
		s := mustParse(t, "@daily", ber)
		start := time.Date(2026, 5, 10, 0, 0, 0, 0, time.UTC) // 02:00 CEST
		got := s.NextN(from, 2, Window{Start: &start})
		want := []string{"2026-05-11T00:00:00+02:00", "2026-05-12T00:00:00+02:00"}
		if diff := cmp.Diff(want, formatAll(got)); diff != "" {
			t.Errorf("NextN (-want +got):\n%s", diff)
		}
	})
}

// TestDaylightSaving pins down behaviour around Europe/Berlin's changes in
// 2026: 29 March 02:00 CET jumps to 03:00 CEST, 25 October 03:00 CEST falls
// back to 02:00 CET.
func TestDaylightSaving(t *testing.T) {
	ber := berlin(t)
	tests := []struct {
		name  string
		expr  string
		after time.Time
		want  []string
	}{
		{"spring gap runs after the jump", "0 30 2 * * ?", time.Date(2026, 3, 28, 12, 0, 0, 0, ber),
			[]string{"2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00"}},
		{"spring gap on the hour", "0 0 2 * * ?", time.Date(2026, 3, 28, 12, 0, 0, 0, ber),
			[]string{"2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"}},
		{"spring standard form", "30 2 * * *", time.Date(2026, 3, 28, 12, 0, 0, 0, ber),
			[]string{"2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00"}},
		{"spring half-hourly skips the gap", "0 0/30 * * * ?", time.Date(2026, 3, 29, 1, 0, 0, 0, ber),
			[]string{"2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"}},
		{"fall overlap fixed time fires once", "0 30 2 * * ?", time.Date(2026, 10, 24, 12, 0, 0, 0, ber),
			[]string{"2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"}},
		{"fall overlap fixed hours range fires once per hour", "0 45 1-3 * * ?", time.Date(2026, 10, 25, 0, 0, 0, 0, ber),
			[]string{"2026-10-25T01:45:00+02:00", "2026-10-25T02:45:00+02:00", "2026-10-25T03:45:00+01:00"}},
		{"fall overlap from inside the repeated hour", "0 30 2 * * ?", time.Date(2026, 10, 25, 0, 40, 0, 0, time.UTC), // 02:40 CEST
			[]string{"2026-10-26T02:30:00+01:00"}},
		{"fall overlap hourly fires in both", "0 0 * * * ?", time.Date(2026, 10, 25, 1, 0, 0, 0, ber),
			[]string{"2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"}},
		{"fall overlap @hourly fires in both", "@hourly", time.Date(2026, 10, 25, 1, 0, 0, 0, ber),
			[]string{"2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"}},
		{"fall overlap every 30 minutes", "*/30 * * * *", time.Date(2026, 10, 25, 1, 50, 0, 0, ber),
			[]string{"2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00"}},
		{"@every ignores wall clock", "@every 1h", time.Date(2026, 10, 25, 1, 30, 0, 0, ber),
			[]string{"2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00", "2026-10-25T03:30:00+01:00"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustParse(t, tt.expr, ber)
			got := s.NextN(tt.after, len(tt.want), Window{})
			if diff := cmp.Diff(tt.want, formatAll(got)); diff != "" {
				t.Errorf("NextN (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNextConvertsInput(t *testing.T) {
	ber := berlin(t)
	s := mustParse(t, "0 30 2 * * ?", ber)
	// The same instant given in three zones yields the same fire time.
	for _, loc := range []*time.Location{time.UTC, ber, time.FixedZone("X", -7*3600)} {
		got := s.Next(from.In(loc))
		if got.Format(time.RFC3339) != "2026-05-02T02:30:00+02:00" || got.Location() != ber {
			t.Errorf("Next(from in %v) = %v", loc, got)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"0 30 2 * * ?", "0/3 * * * * ?", "30 2 * * *", "@daily", "@every 1h30m",
		"0 0 12 1 1 ? 2030", "0 0 0 L * ?", "0 0 9 ? * FRI#3", "0 15 10 16W * ?",
		"0 0 0 1 * MON", "x", "*/0 * * * *", "5-1 * * * *", "0 0 0 L-3 * ?",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		s, err := Parse(expr, time.UTC)
		if err != nil {
			var ce *coffer.Error
			if !errors.As(err, &ce) || ce.Kind != coffer.KindInvalid {
				t.Fatalf("Parse(%q) error %v is not a KindInvalid *coffer.Error", expr, err)
			}
			return
		}
		if _, err := Parse(s.String(), time.UTC); err != nil {
			t.Fatalf("String() %q of %q does not parse: %v", s.String(), expr, err)
		}
		prev := from
		for _, next := range s.NextN(from, 5, Window{}) {
			if !next.After(prev) {
				t.Fatalf("%q: fire time %v not after %v", expr, next, prev)
			}
			prev = next
		}
	})
}
