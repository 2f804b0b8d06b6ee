package coffer

import "time"

// Plan is a backup plan: what to back up on which client, into which
// repository, when, and how long to keep it.
type Plan struct {
	ID           string
	Name         string
	Group        string // free-form grouping for lists ("" = none)
	ClientID     string
	RepositoryID string
	// Schedule is a cron expression (Quartz style with seconds, standard
	// 5-field, or a descriptor) in Timezone (an IANA name; "" = UTC).
	// "" means the plan runs only when started by hand.
	Schedule string
	Timezone string
	// StartAt and EndAt bound when the schedule may fire (nil = open).
	StartAt, EndAt *time.Time
	Include        []string // absolute paths to back up
	Exclude        []string // gitignore-style patterns
	// PreCommands run before the backup, PostCommands after; only admins
	// may set them, and an agent may refuse them.
	PreCommands  []string
	PostCommands []string
	// CommandTimeout bounds each command (0 = the server's default).
	CommandTimeout time.Duration
	Retention      Retention
	Compression    string // off, fastest, default, better, best
	// FullEvery makes every Nth backup re-read every file (0 = never).
	FullEvery     int
	OneFileSystem bool
	Enabled       bool
	CreatedBy     string // user id
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// Retention is a plan's retention policy (see package retention).
type Retention struct {
	KeepLast    int           `json:"keep_last"`
	KeepHourly  int           `json:"keep_hourly"`
	KeepDaily   int           `json:"keep_daily"`
	KeepWeekly  int           `json:"keep_weekly"`
	KeepMonthly int           `json:"keep_monthly"`
	KeepYearly  int           `json:"keep_yearly"`
	KeepWithin  time.Duration `json:"keep_within"` // stored in nanoseconds
	HoldDays    int           `json:"hold_days"`
}
