// Package schedule parses plan schedules and computes their fire times.
//
// It owns the cron dialect Coffer accepts (DESIGN §6) and wraps
// github.com/netresearch/go-cron so that the rest of the server sees one small
// type and Coffer's error vocabulary. Accepted forms:
//
//   - Quartz style with seconds: "sec min hour dom month dow", e.g. "0 30 2 * * ?"
//     or "0/3 * * * * ?"; with a seventh year field: "0 0 12 1 1 ? 2030".
//   - Standard crontab: "min hour dom month dow", e.g. "30 2 * * *" (seconds are 0).
//   - Descriptors: @yearly (@annually), @monthly, @weekly, @daily (@midnight),
//     @hourly, and @every <Go duration>, e.g. "@every 1h30m".
//
// Fields take numbers, names (JAN–DEC, SUN–SAT, any case), ranges (1-5),
// lists (1,15), steps (*/5, 0/3, 10-40/10), and the Quartz extensions L and
// L-n (last day, n-th day before the last), nW and LW (nearest weekday) in day
// of month, and DAY#n and DAY#L (n-th and last such weekday) in day of week.
// '?' means "any" and is allowed only in day of month and day of week.
//
// Day-of-week numbers are crontab style, not Quartz style: 0 and 7 are
// Sunday, 1 is Monday … 6 is Saturday (Quartz has 1 = Sunday). Prefer names.
// As in Quartz, day of month and day of week cannot both be restricted: one of
// them must be '*' or '?'.
//
// Times are computed in the schedule's location. Around daylight-saving
// changes (tested for Europe/Berlin):
//
//   - spring forward: a fire time inside the skipped hour runs once at the
//     same minute after the jump ("0 30 2 * * ?" fires at 03:30 CEST on the
//     day 02:00–03:00 does not exist);
//   - fall back: go-cron fires a wall-clock time inside the repeated hour
//     twice (02:30 CEST and 02:30 CET). Coffer follows Vixie cron instead: a
//     fixed-time schedule (none of seconds, minutes, hours starts with '*')
//     fires once, in the first (summer-time) occurrence; a wildcard schedule
//     ("0 0 * * * ?", "0 */5 * * * ?", @hourly) keeps firing through both
//     occurrences, so it stays evenly spaced in absolute time.
//
// "@every d" is not anchored to the clock: its next fire time is d after the
// given instant, so a scheduler passes the previous fire time.
package schedule

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	cron "github.com/netresearch/go-cron"

	"github.com/cofferhq/coffer"
)

// searchYears is how far ahead Next looks before deciding a schedule never
// fires again; it is also the horizon of the "never fires" check in Parse.
const searchYears = 100

// MaxPreview caps NextN so a preview request cannot ask for unbounded work.
const MaxPreview = 1000

// Field names as they appear in error messages and the "field" metadata.
const (
	FieldExpression = "expression"
	FieldDescriptor = "descriptor"
	FieldSeconds    = "seconds"
	FieldMinutes    = "minutes"
	FieldHours      = "hours"
	FieldDayOfMonth = "day of month"
	FieldMonth      = "month"
	FieldDayOfWeek  = "day of week"
	FieldYear       = "year"
)

// quartzFields is the order of a full expression; layouts below index into it.
var quartzFields = []string{FieldSeconds, FieldMinutes, FieldHours, FieldDayOfMonth, FieldMonth, FieldDayOfWeek, FieldYear}

// layouts maps a field count to the fields present, in order.
var layouts = map[int][]string{
	5: quartzFields[1:6],
	6: quartzFields[:6],
	7: quartzFields,
}

const extended = cron.DowNth | cron.DowLast | cron.DomL | cron.DomW

var (
	parsers = map[int]cron.Parser{
		5: cron.MustNewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | extended),
		6: cron.MustNewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | extended),
		7: cron.MustNewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Year | extended),
	}
	descriptorParser = cron.MustNewParser(cron.Descriptor).WithMinEveryInterval(time.Second)
)

// Schedule is a parsed cron expression bound to a time zone. It is immutable
// and safe for concurrent use.
type Schedule struct {
	expr  string
	loc   *time.Location
	inner cron.Schedule
	fixed bool // fires once in a fall-back overlap; see the package doc
}

// Window bounds fire times: none before Start, none after End. A nil bound is
// open.
type Window struct {
	Start, End *time.Time
}

// Parse parses expr in loc (nil means UTC). An invalid expression returns a
// coffer.KindInvalid error with code "invalid_schedule" whose detail names
// the field and the reason; its metadata carries "field" (see the Field
// constants), "position" (1-based index of the field in expr, 0 when the
// expression as a whole is wrong) and, for a field, "value".
func Parse(expr string, loc *time.Location) (*Schedule, error) {
	if loc == nil {
		loc = time.UTC
	}
	fields := strings.Fields(expr)
	if len(fields) == 0 {
		return nil, invalid(FieldExpression, 0, "", "the schedule is empty")
	}
	if strings.HasPrefix(fields[0], "TZ=") || strings.HasPrefix(fields[0], "CRON_TZ=") {
		return nil, invalid(FieldExpression, 1, fields[0], "the time zone is set on the plan, not in the expression")
	}
	if strings.HasPrefix(fields[0], "@") {
		return parseDescriptor(fields, loc)
	}

	names, ok := layouts[len(fields)]
	if !ok {
		return nil, invalid(FieldExpression, 0, "", fmt.Sprintf(
			"expected 5 fields (minutes hours day-of-month month day-of-week), "+
				"6 (seconds first, Quartz style) or 7 (plus year), found %d", len(fields)))
	}
	for i, f := range fields {
		if strings.Contains(f, "?") && f != "?" {
			return nil, invalid(names[i], i+1, f, "'?' must stand alone")
		}
		if f == "?" && names[i] != FieldDayOfMonth && names[i] != FieldDayOfWeek {
			return nil, invalid(names[i], i+1, f, "'?' is allowed only in day of month and day of week")
		}
	}
	dom, dow := indexOf(names, FieldDayOfMonth), indexOf(names, FieldDayOfWeek)
	if restricted(fields[dom]) && restricted(fields[dow]) {
		return nil, invalid(FieldDayOfWeek, dow+1, fields[dow], fmt.Sprintf(
			"day of month (%q) and day of week (%q) cannot both be restricted; set one of them to '?'",
			fields[dom], fields[dow]))
	}

	// go-cron treats an upper-case H anywhere as its hash syntax (so "THU"
	// fails); lower case is equivalent for every name and letter it accepts.
	lowered := make([]string, len(fields))
	for i, f := range fields {
		lowered[i] = strings.ToLower(f)
	}
	inner, err := parsers[len(fields)].Parse(strings.Join(lowered, " "))
	if err != nil {
		return nil, fieldError(lowered, fields, names, err)
	}
	spec, ok := inner.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("parse schedule %q: unexpected %T", expr, inner)
	}
	spec.Location = loc
	spec.MaxSearchYears = searchYears
	s := &Schedule{expr: strings.Join(fields, " "), loc: loc, inner: spec}
	s.fixed = true
	for _, i := range []int{indexOf(names, FieldSeconds), indexOf(names, FieldMinutes), indexOf(names, FieldHours)} {
		if i >= 0 && strings.HasPrefix(fields[i], "*") {
			s.fixed = false
		}
	}
	if len(fields) < 7 && s.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, loc)).IsZero() {
		return nil, invalid(FieldDayOfMonth, dom+1, fields[dom], fmt.Sprintf(
			"the schedule never fires: no date matches day of month %q, month %q and day of week %q",
			fields[dom], fields[dom+1], fields[dow]))
	}
	return s, nil
}

func parseDescriptor(fields []string, loc *time.Location) (*Schedule, error) {
	name := strings.ToLower(fields[0])
	norm := name
	switch name {
	case "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly":
		if len(fields) != 1 {
			return nil, invalid(FieldDescriptor, 2, fields[1], fmt.Sprintf("%s takes no arguments", name))
		}
	case "@every":
		if len(fields) != 2 {
			return nil, invalid(FieldDescriptor, 1, fields[0], "@every takes one duration, e.g. \"@every 1h30m\"")
		}
		d, err := time.ParseDuration(fields[1])
		if err != nil {
			return nil, invalid(FieldDescriptor, 2, fields[1], fmt.Sprintf("%q is not a duration like 90s, 15m or 1h30m", fields[1]))
		}
		if d < time.Second {
			return nil, invalid(FieldDescriptor, 2, fields[1], "@every needs a duration of at least 1s")
		}
		norm = "@every " + fields[1]
	default:
		return nil, invalid(FieldDescriptor, 1, fields[0], fmt.Sprintf(
			"unknown descriptor %q; use @yearly, @monthly, @weekly, @daily, @hourly or @every <duration>", fields[0]))
	}
	inner, err := descriptorParser.Parse(norm)
	if err != nil {
		return nil, invalid(FieldDescriptor, 1, fields[0], err.Error())
	}
	if spec, ok := inner.(*cron.SpecSchedule); ok {
		spec.Location = loc
		spec.MaxSearchYears = searchYears
	}
	// @yearly … @daily fire at midnight, which is never repeated where DST
	// changes at night; @hourly and @every are wildcard schedules.
	return &Schedule{expr: norm, loc: loc, inner: inner}, nil
}

// restricted reports whether a day field narrows the days, i.e. is neither
// '*' nor '?'.
func restricted(f string) bool { return f != "*" && f != "?" }

// fieldError finds which field made go-cron fail, by parsing each field on
// its own inside an otherwise permissive expression, and turns err into a
// coffer error naming it.
func fieldError(lowered, orig, names []string, err error) error {
	probe := []string{"0", "0", "0", "*", "*", "?", "*"}
	for i, name := range names {
		full := append([]string(nil), probe...)
		full[indexOf(quartzFields, name)] = lowered[i]
		if _, ferr := parsers[7].Parse(strings.Join(full, " ")); ferr != nil {
			why := strings.ReplaceAll(reason(name, orig[i], ferr), strconv.Quote(lowered[i]), strconv.Quote(orig[i]))
			return invalid(name, i+1, orig[i], why).Wrap(err)
		}
	}
	return invalid(FieldExpression, 0, "", reason("", "", err)).Wrap(err)
}

// reason rewrites go-cron's parse errors where they would puzzle a user.
func reason(field, value string, err error) string {
	var num *strconv.NumError
	if errors.As(err, &num) {
		switch field {
		case FieldMonth:
			return fmt.Sprintf("%q is not a month number (1-12) or name (JAN-DEC)", value)
		case FieldDayOfWeek:
			return fmt.Sprintf("%q is not a weekday number (0-7, 0 and 7 = Sunday) or name (SUN-SAT)", value)
		default:
			return fmt.Sprintf("%q is not a number, range, list or step", value)
		}
	}
	msg := err.Error()
	if strings.Contains(msg, "h expressions") {
		return "Jenkins-style H expressions are not supported"
	}
	return msg
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

func invalid(field string, position int, value, why string) *coffer.Error {
	var e *coffer.Error
	if field == FieldExpression {
		e = coffer.Errorf(coffer.KindInvalid, "invalid_schedule", "invalid schedule: %s", why)
	} else {
		e = coffer.Errorf(coffer.KindInvalid, "invalid_schedule", "invalid schedule: %s (field %d, %q): %s", field, position, value, why)
	}
	e = e.With("field", field).With("position", position)
	if value != "" {
		e = e.With("value", value)
	}
	return e
}

// String returns the normalized expression: fields separated by single
// spaces, descriptors in lower case. Parse(s.String(), s.Location()) yields
// the same schedule.
func (s *Schedule) String() string { return s.expr }

// Location returns the time zone fire times are computed and returned in.
func (s *Schedule) Location() *time.Location { return s.loc }

// Next returns the first fire time strictly after after, in s's location, or
// the zero time if there is none within the next 100 years.
func (s *Schedule) Next(after time.Time) time.Time {
	t := s.inner.Next(after.In(s.loc))
	for s.fixed && !t.IsZero() && repeatedWallClock(t.In(s.loc)) {
		t = s.inner.Next(t)
	}
	if t.IsZero() {
		return t
	}
	return t.In(s.loc)
}

// repeatedWallClock reports whether t is the second occurrence of its wall
// clock time, i.e. it lies in the hour repeated when DST ends.
func repeatedWallClock(t time.Time) bool {
	_, off := t.Zone()
	_, before := t.Add(-2 * time.Hour).Zone()
	if before <= off {
		return false
	}
	e := t.Add(-time.Duration(before-off) * time.Second)
	return e.Hour() == t.Hour() && e.Minute() == t.Minute() && e.Day() == t.Day()
}

// NextN returns up to n fire times after after that fall inside w, in
// ascending order and in s's location. n is capped at MaxPreview.
func (s *Schedule) NextN(after time.Time, n int, w Window) []time.Time {
	n = min(n, MaxPreview)
	if n <= 0 {
		return nil
	}
	if w.Start != nil && !w.Start.Before(after) {
		// Next is exclusive; start just before Start so Start itself can fire.
		after = w.Start.Add(-time.Nanosecond)
	}
	var out []time.Time
	for len(out) < n {
		t := s.Next(after)
		if t.IsZero() || (w.End != nil && t.After(*w.End)) {
			break
		}
		out = append(out, t)
		after = t
	}
	return out
}
