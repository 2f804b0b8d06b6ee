// Package retention decides which of a plan's backups a retention policy
// keeps (DESIGN §6).
//
// It owns the policy and nothing else: Apply is a pure function of the
// policy, the plan's backups, the current time and the plan's time zone. It
// reads no clock, stores nothing and forgets nothing; the caller (the server's
// retention service) acts on the decisions, emits the forget events and leaves
// freeing space to the next GC.
//
// The bucket rules follow restic's "forget" policy: walking the successful
// backups newest first, keep_hourly=N keeps the newest backup of each of the
// N most recent distinct hours that have a backup, and likewise keep_daily
// (calendar days), keep_weekly (ISO 8601 weeks, Monday first), keep_monthly
// and keep_yearly. Buckets are computed in the plan's time zone. A backup
// kept by several rules is kept once and lists every reason.
package retention

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
)

// Policy is a plan's retention policy. The zero Policy means "no policy" and
// keeps every backup; see Apply.
type Policy struct {
	KeepLast    int           // the N newest successful backups
	KeepHourly  int           // the newest backup in each of the N most recent hours that have one
	KeepDaily   int           // … days (calendar days in the plan's time zone)
	KeepWeekly  int           // … ISO weeks
	KeepMonthly int           // … months
	KeepYearly  int           // … years
	KeepWithin  time.Duration // every successful backup newer than now−KeepWithin
	HoldDays    int           // every backup, failed or not, for N days after it finished
}

// IsZero reports whether p sets no rule at all, which Apply reads as "keep
// everything".
func (p Policy) IsZero() bool { return p == Policy{} }

// rule is one rule of a Policy: its name in the API and its value (for
// keep_within, the duration).
type rule struct {
	name string
	v    int64
}

// rules lists every rule of p, in the order they are named.
func (p Policy) rules() []rule {
	return []rule{{"keep_last", int64(p.KeepLast)}, {"keep_hourly", int64(p.KeepHourly)}, {"keep_daily", int64(p.KeepDaily)},
		{"keep_weekly", int64(p.KeepWeekly)}, {"keep_monthly", int64(p.KeepMonthly)}, {"keep_yearly", int64(p.KeepYearly)},
		{"keep_within", int64(p.KeepWithin)}, {"hold_days", int64(p.HoldDays)}}
}

// value is r's value as written in events: a count, or a duration.
func (r rule) value() string {
	if r.name == "keep_within" {
		return time.Duration(r.v).String()
	}
	return fmt.Sprint(r.v)
}

// Validate refuses negative values with a KindInvalid error whose "field"
// metadata names the offending rule. A policy whose rules are all zero except
// one that keeps nothing is valid: the newest successful backup is still kept.
func (p Policy) Validate() error {
	for _, r := range p.rules() {
		if r.v < 0 {
			return coffer.Errorf(coffer.KindInvalid, "invalid_retention",
				"retention %s must not be negative (got %s)", r.name, r.value()).With("field", r.name)
		}
	}
	return nil
}

// String lists the rules p sets, as "keep_last=2 keep_daily=7", or "none"
// for the zero Policy. It is meant for events and logs ("forgotten: not kept
// by keep_last=2 keep_daily=7").
func (p Policy) String() string {
	var parts []string
	for _, r := range p.rules() {
		if r.v != 0 {
			parts = append(parts, r.name+"="+r.value())
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// Backup is what Apply needs to know about one backup of a plan.
type Backup struct {
	ID string
	// Time is when the backup finished. It places the backup in its
	// buckets and starts its hold_days.
	Time time.Time
	// Succeeded is true when the backup has a snapshot: it succeeded or
	// was partial. Only such backups count for the keep_* rules and for
	// "the newest successful backup".
	Succeeded bool
	// ExpiresAt is a hold set on this backup: until then it is kept. Nil
	// means no hold.
	ExpiresAt *time.Time
}

// The reasons a Decision may carry, in the order they are listed.
const (
	ReasonLast    = "last"
	ReasonHourly  = "hourly"
	ReasonDaily   = "daily"
	ReasonWeekly  = "weekly"
	ReasonMonthly = "monthly"
	ReasonYearly  = "yearly"
	ReasonWithin  = "within"
	ReasonHold    = "hold"   // hold_days, or ExpiresAt in the future
	ReasonNewest  = "newest" // the newest successful backup, always kept
	ReasonAll     = "all"    // the zero Policy: no policy keeps everything
)

// Decision is Apply's verdict on one backup. Keep is true exactly when
// Reasons is not empty.
type Decision struct {
	Backup  Backup
	Keep    bool
	Reasons []string
}

// Apply decides, for each of a plan's backups, whether p keeps it, and
// returns one Decision per backup, newest first. Backups with equal times are
// ordered by ID, the greater ID first (IDs are ULIDs, so it is the later
// one). The input slice is not modified; duplicates are decided separately.
//
// Calendar buckets and hold_days are computed in loc (nil means UTC). An
// hourly bucket is a wall-clock hour together with its UTC offset, so the
// hour repeated when clocks go back counts as two hours; a day that has 23
// or 25 hours is still one day.
//
// The rules:
//   - keep_last, keep_hourly … keep_yearly and keep_within consider only
//     successful backups (Succeeded); a failed backup never fills a bucket.
//   - keep_within keeps successful backups whose Time is after now−KeepWithin.
//   - hold keeps any backup, failed or not, whose ExpiresAt is after now, or
//     which finished less than HoldDays calendar days before now.
//   - the newest successful backup is always kept, whatever the policy.
//   - the zero Policy (IsZero) keeps every backup, failed ones included,
//     each with ReasonAll besides whatever other reason applies: a plan
//     without a policy never loses a backup to retention.
//
// A failed backup that is not held is therefore forgotten by any non-zero
// policy. Apply does not validate p; negative counts behave as zero.
func Apply(p Policy, backups []Backup, now time.Time, loc *time.Location) []Decision {
	if loc == nil {
		loc = time.UTC
	}
	sorted := slices.Clone(backups)
	slices.SortStableFunc(sorted, func(a, b Backup) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})

	// keep_last keeps every successful backup until its count runs out: it
	// gives each backup a bucket of its own.
	seq := 0
	rules := []*bucketRule{
		{reason: ReasonLast, left: p.KeepLast, key: func(time.Time) key { seq++; return key{seq} }},
		{reason: ReasonHourly, left: p.KeepHourly, key: hourKey},
		{reason: ReasonDaily, left: p.KeepDaily, key: dayKey},
		{reason: ReasonWeekly, left: p.KeepWeekly, key: weekKey},
		{reason: ReasonMonthly, left: p.KeepMonthly, key: monthKey},
		{reason: ReasonYearly, left: p.KeepYearly, key: yearKey},
	}

	withinCutoff := now.Add(-p.KeepWithin)
	newestSeen := false
	out := make([]Decision, 0, len(sorted))
	for _, b := range sorted {
		var reasons []string
		if b.Succeeded {
			t := b.Time.In(loc)
			for _, r := range rules {
				if r.take(t) {
					reasons = append(reasons, r.reason)
				}
			}
			if p.KeepWithin > 0 && b.Time.After(withinCutoff) {
				reasons = append(reasons, ReasonWithin)
			}
		}
		if held(p, b, now, loc) {
			reasons = append(reasons, ReasonHold)
		}
		if b.Succeeded && !newestSeen {
			newestSeen = true
			reasons = append(reasons, ReasonNewest)
		}
		if p.IsZero() {
			reasons = append(reasons, ReasonAll)
		}
		out = append(out, Decision{Backup: b, Keep: len(reasons) > 0, Reasons: reasons})
	}
	return out
}

// held reports whether b is under a hold at now.
func held(p Policy, b Backup, now time.Time, loc *time.Location) bool {
	if b.ExpiresAt != nil && b.ExpiresAt.After(now) {
		return true
	}
	until, ok := HoldUntil(p, b.Time, loc)
	return ok && now.Before(until)
}

// HoldUntil returns when the hold_days of p on a backup that finished at
// finished runs out — HoldDays calendar days later in loc (nil means UTC),
// so a hold spanning a daylight saving change still ends at the same wall
// clock time — and false when p sets no hold_days. Until then Apply keeps
// the backup; it is the backup's expires_at.
func HoldUntil(p Policy, finished time.Time, loc *time.Location) (time.Time, bool) {
	if p.HoldDays <= 0 {
		return time.Time{}, false
	}
	if loc == nil {
		loc = time.UTC
	}
	return finished.In(loc).AddDate(0, 0, p.HoldDays), true
}

// key identifies a bucket; only equality matters.
type key [5]int

func hourKey(t time.Time) key {
	_, off := t.Zone()
	return key{t.Year(), int(t.Month()), t.Day(), t.Hour(), off}
}

func dayKey(t time.Time) key { return key{t.Year(), int(t.Month()), t.Day()} }

func weekKey(t time.Time) key {
	y, w := t.ISOWeek()
	return key{y, w}
}

func monthKey(t time.Time) key { return key{t.Year(), int(t.Month())} }

func yearKey(t time.Time) key { return key{t.Year()} }

// bucketRule is one keep_* rule while Apply walks the backups newest first.
// Because the walk is in time order, each bucket's backups arrive together
// and the first one seen is the newest in its bucket.
type bucketRule struct {
	reason string
	left   int // buckets still to fill
	key    func(time.Time) key
	last   key
	seen   bool
}

// take reports whether the rule keeps the backup at t: it is the first one
// seen in a new bucket and the rule still has buckets left.
func (r *bucketRule) take(t time.Time) bool {
	if r.left <= 0 {
		return false
	}
	k := r.key(t)
	if r.seen && k == r.last {
		return false
	}
	r.seen, r.last = true, k
	r.left--
	return true
}
