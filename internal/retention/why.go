package retention

import (
	"fmt"
	"strings"
	"time"
)

// Why says in words, for events and logs, why p let the backup of d go
// (or, for a Decision that keeps it, by which reasons it is kept): the keep
// rules that did not keep it and when its hold ran out, joined by "; ".
// For example:
//
//	not kept by keep_last=2, keep_daily=7
//	hold_days=30 expired on 2026-05-01T10:00:00Z
//	not kept by keep_last=2; hold_days=30 expired on 2026-05-01T10:00:00Z
//
// A backup that did not succeed is named as such: keep rules count only
// successful backups. loc is the plan's time zone, as given to Apply.
func Why(p Policy, d Decision, loc *time.Location) string {
	if d.Keep {
		return "kept (" + strings.Join(d.Reasons, ", ") + ")"
	}
	var parts []string
	switch rules := keepRules(p); {
	case !d.Backup.Succeeded:
		parts = append(parts, "it has no snapshot (failed or canceled), and keep rules count only successful backups")
	case rules != "":
		parts = append(parts, "not kept by "+rules)
	}
	if until, ok := HoldUntil(p, d.Backup.Time, loc); ok {
		parts = append(parts, fmt.Sprintf("hold_days=%d expired on %s", p.HoldDays, until.UTC().Format(time.RFC3339)))
	}
	if e := d.Backup.ExpiresAt; e != nil {
		parts = append(parts, "its hold expired on "+e.UTC().Format(time.RFC3339))
	}
	if len(parts) == 0 {
		return "not kept by the policy " + p.String()
	}
	return strings.Join(parts, "; ")
}

// keepRules lists the keep_* rules p sets (hold_days aside), as
// "keep_last=2, keep_within=720h0m0s", or "" when it sets none.
func keepRules(p Policy) string {
	var parts []string
	for _, r := range p.rules() {
		if r.v > 0 && r.name != "hold_days" {
			parts = append(parts, r.name+"="+r.value())
		}
	}
	return strings.Join(parts, ", ")
}
