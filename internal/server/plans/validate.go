package plans

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/retention"
	"github.com/cofferhq/coffer/internal/schedule"
)

// Limits on a plan.
const (
	MaxNameLen     = 100 // characters
	MaxGroupLen    = 100 // characters
	MaxIncludes    = 1000
	MaxPathLen     = coffer.MaxPathLen
	MaxExcludes    = 10000
	MaxExcludeLen  = coffer.MaxExcludeLen
	MaxCommands    = 20   // pre and post, each
	MaxCommandLen  = 4096 // bytes
	MaxPreview     = 100  // fire times one preview returns
	defaultPreview = 5
)

// Compressions are the compression levels a plan may name, least first.
var Compressions = []string{"off", "fastest", "default", "better", "best"}

// DefaultCompression is the level of a plan that names none.
const DefaultCompression = "fastest"

func invalid(field, code, format string, args ...any) *coffer.Error {
	return coffer.Errorf(coffer.KindInvalid, code, format, args...).With("field", "body."+field)
}

// location returns the time zone a plan's schedule runs in: an IANA name,
// "" for UTC.
func location(tz string) (*time.Location, error) {
	if tz == "" {
		return time.UTC, nil
	}
	// LoadLocation also accepts "Local" and file paths; neither is a zone
	// the server and every replica would agree on.
	if tz == "Local" || strings.ContainsAny(tz, "\\\x00") || strings.HasPrefix(tz, "/") || strings.Contains(tz, "..") || len(tz) > 64 {
		return nil, invalid("timezone", "invalid_timezone", "%q is not an IANA time zone name like Europe/Berlin or UTC", truncate(tz))
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, invalid("timezone", "invalid_timezone", "%q is not an IANA time zone name like Europe/Berlin or UTC", truncate(tz)).Wrap(err)
	}
	return loc, nil
}

// parseSchedule parses a plan's schedule in its time zone; "" (run by hand
// only) yields nil. An invalid expression is "invalid_schedule" whose
// metadata field is body.schedule; the cron field that is wrong is in
// schedule_field (with position and value).
func parseSchedule(expr string, loc *time.Location) (*schedule.Schedule, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, nil
	}
	if len(expr) > 256 {
		return nil, invalid("schedule", "invalid_schedule", "the schedule is longer than 256 bytes")
	}
	s, err := schedule.Parse(expr, loc)
	if err != nil {
		var ce *coffer.Error
		if errors.As(err, &ce) {
			out := ce.With("field", "body.schedule")
			if f, ok := ce.Meta["field"]; ok {
				out = out.With("schedule_field", f)
			}
			return nil, out
		}
		return nil, err
	}
	return s, nil
}

// validate checks spec and fills in its defaults (compression). It does
// not look up the client or check who may set commands.
func validate(spec *Spec) (*time.Location, error) {
	switch n := utf8.RuneCountInString(spec.Name); {
	case strings.TrimSpace(spec.Name) == "":
		return nil, invalid("name", "invalid_name", "the plan needs a name")
	case n > MaxNameLen:
		return nil, invalid("name", "invalid_name", "the name has %d characters; the limit is %d", n, MaxNameLen).With("limit", MaxNameLen)
	case !utf8.ValidString(spec.Name) || hasControl(spec.Name):
		return nil, invalid("name", "invalid_name", "the name contains control characters or invalid UTF-8")
	}
	switch n := utf8.RuneCountInString(spec.Group); {
	case n > MaxGroupLen:
		return nil, invalid("group", "invalid_group", "the group has %d characters; the limit is %d", n, MaxGroupLen).With("limit", MaxGroupLen)
	case !utf8.ValidString(spec.Group) || hasControl(spec.Group):
		return nil, invalid("group", "invalid_group", "the group contains control characters or invalid UTF-8")
	}
	loc, err := location(spec.Timezone)
	if err != nil {
		return nil, err
	}
	if _, err := parseSchedule(spec.Schedule, loc); err != nil {
		return nil, err
	}
	spec.Schedule = strings.TrimSpace(spec.Schedule)
	if spec.StartAt != nil && spec.EndAt != nil && !spec.StartAt.Before(*spec.EndAt) {
		return nil, invalid("end_at", "invalid_window", "end_at (%s) must be after start_at (%s)",
			spec.EndAt.UTC().Format(time.RFC3339), spec.StartAt.UTC().Format(time.RFC3339))
	}
	if err := validateIncludes(spec.Include); err != nil {
		return nil, err
	}
	if err := validateExcludes(spec.Exclude); err != nil {
		return nil, err
	}
	if err := validateCommands("pre_commands", spec.PreCommands); err != nil {
		return nil, err
	}
	if err := validateCommands("post_commands", spec.PostCommands); err != nil {
		return nil, err
	}
	if err := toPolicy(spec.Retention).Validate(); err != nil {
		var ce *coffer.Error
		if errors.As(err, &ce) {
			return nil, ce.With("field", fmt.Sprintf("body.retention.%v", ce.Meta["field"]))
		}
		return nil, err
	}
	if spec.Compression == "" {
		spec.Compression = DefaultCompression
	}
	if !slices.Contains(Compressions, spec.Compression) {
		return nil, invalid("compression", "invalid_compression", "compression %q is not one of %s",
			truncate(spec.Compression), strings.Join(Compressions, ", "))
	}
	if spec.FullEvery < 0 {
		return nil, invalid("full_every", "invalid_full_every", "full_every must not be negative (got %d)", spec.FullEvery)
	}
	if t := spec.CommandTimeout; t != 0 && (t < time.Second || t > MaxCommandTimeout || t%time.Second != 0) {
		return nil, invalid("command_timeout_seconds", "invalid_command_timeout",
			"the command timeout must be whole seconds from 1 s to %v, or 0 for the server's default (got %v)", MaxCommandTimeout, t)
	}
	return loc, nil
}

// MaxCommandTimeout is the longest a plan may let each of its commands run.
const MaxCommandTimeout = 24 * time.Hour

func hasControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0
}

func validateIncludes(paths []string) error {
	if len(paths) == 0 {
		return invalid("include", "include_required", "name at least one absolute path to back up")
	}
	if len(paths) > MaxIncludes {
		return invalid("include", "too_many_includes", "%d paths exceed the limit of %d: back up a common parent instead",
			len(paths), MaxIncludes).With("limit", MaxIncludes)
	}
	for i, p := range paths {
		if why := coffer.PathProblem(p); why != "" {
			return invalid("include", "invalid_path", "include path %d %q %s", i, truncate(p), why).With("index", i)
		}
	}
	return nil
}

func validateExcludes(patterns []string) error {
	if len(patterns) > MaxExcludes {
		return invalid("exclude", "too_many_excludes", "%d exclude patterns exceed the limit of %d: merge them into fewer, broader patterns",
			len(patterns), MaxExcludes).With("limit", MaxExcludes)
	}
	for i, p := range patterns {
		if why := coffer.ExcludeProblem(p); why != "" {
			return invalid("exclude", "invalid_exclude", "exclude pattern %d %q %s", i, truncate(p), why).With("index", i)
		}
	}
	return nil
}

func validateCommands(field string, cmds []string) error {
	if len(cmds) > MaxCommands {
		return invalid(field, "too_many_commands", "%d %s exceed the limit of %d", len(cmds), strings.ReplaceAll(field, "_", " "),
			MaxCommands).With("limit", MaxCommands)
	}
	for i, c := range cmds {
		bad := func(why string) error {
			return invalid(field, "invalid_command", "%s %d %q %s", strings.TrimSuffix(field, "s"), i, truncate(c), why).With("index", i)
		}
		switch {
		case strings.TrimSpace(c) == "":
			return bad("is empty")
		case len(c) > MaxCommandLen:
			return bad("is longer than 4096 bytes")
		case strings.IndexByte(c, 0) >= 0:
			return bad("contains a NUL byte")
		}
	}
	return nil
}

// toPolicy maps a plan's retention to the retention package's policy.
func toPolicy(r coffer.Retention) retention.Policy {
	return retention.Policy{KeepLast: r.KeepLast, KeepHourly: r.KeepHourly, KeepDaily: r.KeepDaily,
		KeepWeekly: r.KeepWeekly, KeepMonthly: r.KeepMonthly, KeepYearly: r.KeepYearly,
		KeepWithin: r.KeepWithin, HoldDays: r.HoldDays}
}

// Policy returns plan's retention policy.
func Policy(p *coffer.Plan) retention.Policy { return toPolicy(p.Retention) }

func truncate(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}
