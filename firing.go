package coffer

import "time"

// FireOutcome says what came of a plan's scheduled fire.
type FireOutcome string

// The fire outcomes.
const (
	FireOutcomeFired   FireOutcome = "fired"   // the plan's backup was queued
	FireOutcomeSkipped FireOutcome = "skipped" // a backup of the plan was still queued or running
	FireOutcomeFailed  FireOutcome = "failed"  // the backup could not be queued (the client was deleted, say)
)

// PlanFiring is the scheduler's state of one plan: when it fires next and
// what came of its last fire. The server keeps it in the database, so it
// survives restarts and every replica sees the same.
type PlanFiring struct {
	PlanID string
	// NextFireAt is nil when the plan will not fire: disabled, run by hand
	// only, past its end_at, its client deleted, or not yet seen by the
	// scheduler since it was created or changed.
	NextFireAt  *time.Time
	LastFiredAt *time.Time // when the last due fire was handled (nil: never)
	LastOutcome FireOutcome
	// LastBackupID is the backup the last fire queued, or the one still
	// active that made it skip.
	LastBackupID string
	LastMessage  string // what happened, in a sentence
}
