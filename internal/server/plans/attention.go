package plans

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/schedule"
)

// AttentionGrace is how late a plan may be before it counts as overdue:
// how far its next fire time may lie in the past, and how long the backup
// its last fire queued may wait for its client.
const AttentionGrace = 30 * time.Minute

// The reasons a plan needs attention, most urgent first.
const (
	ReasonFailed   = "failed"      // its latest finished backup failed
	ReasonFireFail = "fire_failed" // the scheduler could not queue its last fire
	ReasonPartial  = "partial"     // its latest finished backup missed files
	ReasonOverdue  = "overdue"     // its next fire time passed without a fire
	ReasonWaiting  = "waiting"     // its last fire's backup waits, queued, for its client
	ReasonStale    = "stale"       // no successful backup for twice its schedule's interval
)

// Attention is a plan that needs attention, and why.
type Attention struct {
	Plan    coffer.Plan
	Reason  string // the most urgent reason, one of the Reason constants
	Message string // every reason, in sentences
	Since   *time.Time
}

// reasonRank orders the reasons by urgency.
var reasonRank = map[string]int{ReasonFailed: 0, ReasonFireFail: 1, ReasonPartial: 2, ReasonOverdue: 3, ReasonWaiting: 4, ReasonStale: 5}

// Attention returns the enabled plans that need attention, most urgent
// first, then by name, from one query of the store. A plan needs attention
// when:
//   - its latest finished backup failed, or was partial (some files could
//     not be read);
//   - the scheduler's last fire of it failed (the backup could not be
//     queued);
//   - it is overdue: its next fire time is more than AttentionGrace in the
//     past (no scheduler is running), or the backup its last fire queued has
//     waited longer than AttentionGrace (its client is offline or busy);
//   - it is scheduled and its latest successful (or partial) backup ended
//     more than twice its schedule's interval ago — or none did although
//     it has existed that long. The interval is the longest gap between
//     the schedule's next eight fire times, so that a weekdays-only plan is
//     not stale on Monday morning.
func (s *Service) Attention(ctx context.Context) ([]Attention, error) {
	statuses, err := s.store.PlanStatuses(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	var out []Attention
	for i := range statuses {
		if a, ok := judge(&statuses[i], now); ok {
			out = append(out, a)
		}
	}
	slices.SortStableFunc(out, func(a, b Attention) int { return cmp.Compare(reasonRank[a.Reason], reasonRank[b.Reason]) })
	return out, nil
}

// judge decides whether the plan of st needs attention at now.
func judge(st *metadb.PlanStatus, now time.Time) (Attention, bool) {
	a := Attention{Plan: st.Plan}
	add := func(reason string, since *time.Time, msg string) {
		if a.Reason == "" || reasonRank[reason] < reasonRank[a.Reason] {
			a.Reason, a.Since = reason, since
		}
		if a.Message != "" {
			a.Message += " "
		}
		a.Message += msg
	}
	if lf := st.LastFinished; lf != nil {
		switch lf.State {
		case coffer.JobFailed:
			add(ReasonFailed, lf.FinishedAt, "The last backup failed: "+sentence(lf.Error))
		case coffer.JobPartial:
			add(ReasonPartial, lf.FinishedAt, "The last backup could not read some files.")
		}
	}
	f := &st.Firing
	if st.HasFiring && f.LastOutcome == coffer.FireOutcomeFailed {
		add(ReasonFireFail, f.LastFiredAt, "The last scheduled run could not start: "+sentence(f.LastMessage))
	}
	if f.NextFireAt != nil && now.Sub(*f.NextFireAt) > AttentionGrace {
		add(ReasonOverdue, f.NextFireAt, fmt.Sprintf("It was due at %s and has not run: is the server's scheduler running?",
			f.NextFireAt.UTC().Format("2006-01-02 15:04 UTC")))
	}
	if fb := st.Fired; fb != nil && fb.State == coffer.JobQueued && now.Sub(fb.CreatedAt) > AttentionGrace {
		at := fb.CreatedAt
		add(ReasonWaiting, &at, fmt.Sprintf("Its backup has waited since %s for the client to start it: is the client online?",
			at.UTC().Format("2006-01-02 15:04 UTC")))
	}
	if stale, since, msg := staleness(st, now); stale {
		add(ReasonStale, since, msg)
	}
	return a, a.Reason != ""
}

// staleness reports whether a scheduled plan has gone without a
// successful backup for more than twice its schedule's interval.
func staleness(st *metadb.PlanStatus, now time.Time) (bool, *time.Time, string) {
	p := &st.Plan
	if p.Schedule == "" || st.Firing.NextFireAt == nil {
		return false, nil, "" // run by hand, ended, or not yet scheduled
	}
	interval := scheduleInterval(p, now)
	if interval <= 0 {
		return false, nil, ""
	}
	if st.LastSuccessAt != nil {
		if now.Sub(*st.LastSuccessAt) <= 2*interval {
			return false, nil, ""
		}
		return true, st.LastSuccessAt, fmt.Sprintf("No successful backup since %s, more than twice its schedule's interval.",
			st.LastSuccessAt.UTC().Format("2006-01-02 15:04 UTC"))
	}
	from := p.CreatedAt
	if p.StartAt != nil && p.StartAt.After(from) {
		from = *p.StartAt
	}
	if now.Sub(from) <= 2*interval {
		return false, nil, ""
	}
	return true, nil, "No backup of it has succeeded yet."
}

// scheduleInterval is the longest gap between the next eight fire times
// of p's schedule after now; 0 when it does not parse or fires no more.
func scheduleInterval(p *coffer.Plan, now time.Time) time.Duration {
	loc, err := time.LoadLocation(p.Timezone)
	if err != nil {
		return 0
	}
	sched, err := schedule.Parse(p.Schedule, loc)
	if err != nil {
		return 0
	}
	var longest time.Duration
	prev := sched.Next(now)
	for range 7 {
		next := sched.Next(prev)
		if prev.IsZero() || next.IsZero() {
			break
		}
		longest = max(longest, next.Sub(prev))
		prev = next
	}
	return longest
}

// sentence ends a message with a period ("" becomes "no reason given.").
func sentence(s string) string {
	if s == "" {
		return "no reason given."
	}
	if last := s[len(s)-1]; last != '.' && last != '!' && last != '?' {
		s += "."
	}
	return s
}
