package coffer

import "time"

// ClientStatus says whether an enrolled machine's agent is reachable.
type ClientStatus string

// The client statuses.
const (
	ClientOnline  ClientStatus = "online"  // heartbeats arrive
	ClientOffline ClientStatus = "offline" // heartbeats stopped (or never came)
)

// Client is an enrolled machine. Its credential is shown once, at
// enrollment; only its SHA-256 is stored.
type Client struct {
	ID           string
	Name         string
	Hostname     string
	OS           string
	Arch         string
	IPv4         []string
	IPv6         []string
	AgentVersion string
	// CommandsAllowed is false when its agent refuses plans' pre and post
	// commands (coffer agent run --allow-commands=false).
	CommandsAllowed bool
	OwnerID         string // the user who created the enrollment token ("" if none)
	Status          ClientStatus
	LastSeenAt      *time.Time
	CreatedAt       time.Time
	UpdatedAt       time.Time
	CredentialHash  string // never leaves the server
}

// ClientInfo is what an agent reports about its machine, at enrollment
// and with every heartbeat.
type ClientInfo struct {
	Hostname     string
	OS           string
	Arch         string
	IPv4         []string
	IPv6         []string
	AgentVersion string
	// CommandsAllowed is the agent's --allow-commands setting (true when
	// it did not say).
	CommandsAllowed bool
}

// EnrollmentToken lets one agent enroll, once, before it expires. Only its
// SHA-256 is stored.
type EnrollmentToken struct {
	ID        string
	TokenHash string
	Name      string // the name the enrolled client gets ("" = its hostname)
	CreatedBy string // user id
	CreatedAt time.Time
	ExpiresAt time.Time
	UsedAt    *time.Time
	ClientID  string // the client it enrolled, once used
}

// JobState is the state of a backup or restore.
type JobState string

// The job states. A job moves queued → running → one of the final states.
const (
	JobQueued    JobState = "queued"
	JobRunning   JobState = "running"
	JobSucceeded JobState = "succeeded"
	JobPartial   JobState = "partial" // finished, but some entries could not be read or written (listed)
	JobFailed    JobState = "failed"
	JobCanceled  JobState = "canceled"
)

// Final reports whether s is an end state.
func (s JobState) Final() bool {
	return s == JobSucceeded || s == JobPartial || s == JobFailed || s == JobCanceled
}

// BackupTrigger says what started a backup.
type BackupTrigger string

// The triggers.
const (
	TriggerSchedule BackupTrigger = "schedule" // a plan's schedule fired
	TriggerManual   BackupTrigger = "manual"   // a person: the UI, or `coffer backup` on the machine
	TriggerAPI      BackupTrigger = "api"      // a script with an API token
)

// Backup is one backup run: its request, its progress and its outcome.
type Backup struct {
	ID           string
	ClientID     string
	PlanID       string // "" for an ad-hoc backup
	RepositoryID string // the engine repository's id
	Trigger      BackupTrigger
	State        JobState
	Paths        []string
	Exclude      []string
	Full         bool // re-read every file, ignoring the change cache
	OneFS        bool // do not cross into other file systems
	HostName     string
	SnapshotID   string // set once committed
	RootTree     string // hex id of the root tree, once committed
	ParentID     string // the backup whose change cache this one used, if any
	Stats        BackupStats
	Errors       []PathError
	Error        string // why it failed, for failed and canceled backups
	SessionID    string // the index write session that protects its blobs from GC
	// Meta is recorded when the backup ends.
	Meta BackupMeta
	// CancelRequested is set when someone canceled a running backup: the
	// agent learns it from its command stream or its next progress report.
	CancelRequested bool
	CreatedBy       string // user id ("" for the agent or the scheduler)
	CreatedAt       time.Time
	StartedAt       *time.Time
	FinishedAt      *time.Time
	UpdatedAt       time.Time // last progress report
}

// BackupMeta is what a backup records about itself when it ends, after the
// Freezer backup metadata (seed 002). It is copied then — from the plan, the
// client and the repository — so that it stays true when the plan is
// renamed or the agent upgraded.
type BackupMeta struct {
	// Level is 0 for a backup that read every file (a full backup) and n
	// for the nth backup since that full one that trusted the change cache
	// of its predecessor. Session is the id of that full backup (the
	// backup's own id at level 0), or "" when the chain is not known: the
	// predecessor was forgotten before this backup committed. Both are set
	// at commit; a backup that never committed has level 0 and no session.
	Level   int
	Session string
	// Name is the plan's name when the backup ended ("" for an ad-hoc backup).
	Name string
	// ClientOS and AgentVersion describe the client's agent that ran it.
	ClientOS     string
	AgentVersion string
	// Compression is the level its blobs were compressed at: off, fastest,
	// default, better or best ("" when not recorded).
	Compression string
	// Encrypted says whether the repository encrypts what it stores.
	Encrypted bool
}

// BackupStats count what a backup saw and stored.
type BackupStats struct {
	Files          uint64 `json:"files"`
	Dirs           uint64 `json:"dirs"`
	Symlinks       uint64 `json:"symlinks"`
	Others         uint64 `json:"others"`
	FilesNew       uint64 `json:"files_new"`
	FilesChanged   uint64 `json:"files_changed"`
	FilesUnchanged uint64 `json:"files_unchanged"`
	Excluded       uint64 `json:"excluded"`
	ErrorCount     uint64 `json:"errors"`
	LogicalBytes   uint64 `json:"logical_bytes"`   // the files' total size
	ReadBytes      uint64 `json:"read_bytes"`      // bytes read and hashed
	AddedBytes     uint64 `json:"added_bytes"`     // stored (compressed, encrypted) bytes of new blobs
	AddedRawBytes  uint64 `json:"added_raw_bytes"` // plaintext bytes of new blobs
	UploadedBytes  uint64 `json:"uploaded_bytes"`  // bytes sent to the server
	DataBlobs      uint64 `json:"data_blobs"`      // new data blobs
	TreeBlobs      uint64 `json:"tree_blobs"`      // new tree blobs
	TotalFiles     uint64 `json:"total_files"`     // files found so far (progress), 0 if unknown
	TotalBytes     uint64 `json:"total_bytes"`     // their size
	// BrokenLinks counts the symlinks (among Symlinks) whose target does
	// not exist. Agents from before it was counted do not send it.
	BrokenLinks uint64 `json:"broken_links" required:"false"`
}

// PathError is an entry a job could not handle as it is.
type PathError struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// Overwrite is what a restore does with an entry that exists at the
// destination.
type Overwrite string

// The overwrite policies.
const (
	OverwriteAlways  Overwrite = "overwrite" // replace it
	OverwriteSkip    Overwrite = "skip"      // keep it, skip the restored one
	OverwriteIfNewer Overwrite = "if-newer"  // replace it if the backup's copy is newer
	OverwriteRename  Overwrite = "rename"    // keep it, restore beside it as "name.restored-N"
)

// Overwrites lists every policy.
var Overwrites = []Overwrite{OverwriteAlways, OverwriteSkip, OverwriteIfNewer, OverwriteRename}

// Restore is one restore job.
type Restore struct {
	ID             string
	BackupID       string
	SourceClientID string // the client the backup is of
	TargetClientID string // the client that writes the files
	Paths          []string
	Destination    string
	Overwrite      Overwrite
	State          JobState
	Stats          RestoreStats
	Errors         []PathError
	Error          string
	// CancelRequested: see Backup.CancelRequested.
	CancelRequested bool
	CreatedBy       string // user id ("" when the target's agent started it)
	CreatedAt       time.Time
	StartedAt       *time.Time
	FinishedAt      *time.Time
	UpdatedAt       time.Time
}

// RestoreStats count what a restore wrote.
type RestoreStats struct {
	Files      uint64 `json:"files"`
	Dirs       uint64 `json:"dirs"`
	Symlinks   uint64 `json:"symlinks"`
	Links      uint64 `json:"links"`
	Others     uint64 `json:"others"`
	Skipped    uint64 `json:"skipped"`
	Bytes      uint64 `json:"bytes"`
	ErrorCount uint64 `json:"errors"`
	TotalFiles uint64 `json:"total_files"` // 0 if unknown
	TotalBytes uint64 `json:"total_bytes"`
}

// AgentCommand is an order for one client's agent, delivered over its
// command stream. Payload is the command's JSON (package protocol).
type AgentCommand struct {
	ID          string
	ClientID    string
	Kind        string
	Payload     []byte
	CreatedAt   time.Time
	DeliveredAt *time.Time
	CompletedAt *time.Time
	Result      []byte // JSON the agent posted back (list_dir), if any
}
