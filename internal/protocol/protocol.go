// Package protocol is the wire contract between a coffer agent (or the CLI
// on an enrolled machine) and the server: the JSON bodies of the
// /api/v1/agent/... routes, the commands sent over the agent's event
// stream, and the binary frames that carry blobs. The server (httpapi) and
// the agent (apiclient) both use these types, so the two sides cannot drift;
// docs/agent-protocol.md describes the exchange.
//
// It imports only the standard library and the engine's blob package.
package protocol

import (
	"time"

	"github.com/cofferhq/coffer"
)

// CredentialPrefix starts every agent credential; EnrollPrefix every
// enrollment token.
const (
	CredentialPrefix = "cfr_a_"
	EnrollPrefix     = "cfr_e_"
)

// MachineInfo describes the agent's machine.
type MachineInfo struct {
	Hostname     string   `json:"hostname" maxLength:"255"`
	OS           string   `json:"os" maxLength:"64" doc:"GOOS, e.g. linux."`
	Arch         string   `json:"arch" maxLength:"64" doc:"GOARCH, e.g. amd64."`
	IPv4         []string `json:"ipv4" maxItems:"64"`
	IPv6         []string `json:"ipv6" maxItems:"64"`
	AgentVersion string   `json:"agent_version" maxLength:"64"`
	// CommandsAllowed is the agent's --allow-commands setting; absent
	// (enrollment, older agents) means allowed.
	CommandsAllowed *bool `json:"commands_allowed,omitempty" doc:"Whether the agent runs plans' pre and post commands (--allow-commands); absent means it does."`
}

// EnrollRequest is the body of POST /api/v1/agent/enroll.
type EnrollRequest struct {
	Token string `json:"token" minLength:"1" maxLength:"200" doc:"The one-time enrollment token (cfr_e_…)."`
	Name  string `json:"name,omitempty" maxLength:"100" doc:"The client's name; default: the token's name, else the hostname."`
	MachineInfo
}

// AgentClient is the agent's view of its own client record.
type AgentClient struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Hostname string `json:"hostname"`
}

// EnrollResponse answers an enrollment.
type EnrollResponse struct {
	Client     AgentClient `json:"client"`
	Credential string      `json:"credential" doc:"The client's credential (cfr_a_…). Shown only in this response: the agent stores it in its state directory."`
	// HeartbeatSeconds is how often the agent should send a heartbeat.
	HeartbeatSeconds int `json:"heartbeat_seconds"`
}

// HeartbeatRequest is the body of POST /api/v1/agent/heartbeat.
type HeartbeatRequest struct {
	MachineInfo
	RunningJobs []string `json:"running_jobs" maxItems:"100" doc:"Ids of the backups and restores the agent is running."`
}

// HeartbeatResponse answers a heartbeat.
type HeartbeatResponse struct {
	Message          string    `json:"message"`
	Success          bool      `json:"success"`
	ServerTime       time.Time `json:"server_time"`
	HeartbeatSeconds int       `json:"heartbeat_seconds"`
}

// Command kinds sent over GET /api/v1/agent/stream as SSE events named
// "command" whose data is a Command.
const (
	CommandBackup  = "backup"
	CommandRestore = "restore"
	CommandListDir = "list_dir"
	CommandCancel  = "cancel"
)

// Command is one order for the agent. Exactly one payload field is set,
// the one its Kind names.
type Command struct {
	ID      string          `json:"id"`
	Kind    string          `json:"kind" enum:"backup,restore,list_dir,cancel"`
	Backup  *BackupCommand  `json:"backup,omitempty"`
	Restore *RestoreCommand `json:"restore,omitempty"`
	ListDir *ListDirCommand `json:"list_dir,omitempty"`
	Cancel  *CancelCommand  `json:"cancel,omitempty"`
}

// BackupCommand asks the agent to run the queued backup BackupID: it calls
// StartBackup with that id and then proceeds as for any backup.
type BackupCommand struct {
	BackupID string `json:"backup_id"`
}

// RestoreCommand asks the agent to run the queued restore RestoreID: it
// calls StartRestore with that id.
type RestoreCommand struct {
	RestoreID string `json:"restore_id"`
}

// ListDirCommand asks for one directory's entries, answered with POST
// /api/v1/agent/fs/{request_id} where request_id is the command's id.
type ListDirCommand struct {
	Path string `json:"path"`
}

// CancelCommand asks the agent to stop a running backup or restore.
type CancelCommand struct {
	JobID string `json:"job_id"`
}

// DirEntry is one entry of a live directory listing.
type DirEntry struct {
	Name  string    `json:"name"`
	Type  string    `json:"type" enum:"file,dir,symlink,other"`
	Size  int64     `json:"size"`
	Mtime time.Time `json:"mtime"`
}

// ListDirResult is the body of POST /api/v1/agent/fs/{request_id}.
type ListDirResult struct {
	Path    string     `json:"path" maxLength:"4096"`
	Entries []DirEntry `json:"entries" maxItems:"100000"`
	Error   string     `json:"error,omitempty" maxLength:"4096" doc:"Why the directory could not be listed; entries is empty then."`
}

// StartBackupRequest is the body of POST /api/v1/agent/backups. With
// BackupID it starts a backup the server queued (the other fields come
// from it and must be empty); without, it starts an ad-hoc backup of Paths
// (the CLI on the machine).
type StartBackupRequest struct {
	BackupID      string   `json:"backup_id,omitempty" maxLength:"64"`
	Paths         []string `json:"paths,omitempty" maxItems:"1000" doc:"Absolute paths to back up (ad-hoc backups)."`
	Exclude       []string `json:"exclude,omitempty" maxItems:"10000" doc:"Gitignore-style patterns."`
	Full          bool     `json:"full,omitempty" doc:"Re-read every file instead of trusting the change cache."`
	OneFileSystem bool     `json:"one_file_system,omitempty"`
	Hostname      string   `json:"hostname,omitempty" maxLength:"255"`
}

// BackupJob is a backup as the agent needs it.
type BackupJob struct {
	ID            string          `json:"id"`
	State         coffer.JobState `json:"state"`
	Paths         []string        `json:"paths"`
	Exclude       []string        `json:"exclude"`
	Full          bool            `json:"full"`
	OneFileSystem bool            `json:"one_file_system"`
	PlanID        string          `json:"plan_id,omitempty"`
	// PreCommands and PostCommands are the plan's commands, which the
	// agent runs with /bin/sh -c before the walk and after the upload
	// (an agent started with --allow-commands=false fails the backup
	// instead). CommandTimeoutSeconds bounds each one (0: the agent's
	// default, 10 minutes).
	PreCommands           []string `json:"pre_commands,omitempty" doc:"Shell commands to run, in order, before the walk; a failure fails the backup."`
	PostCommands          []string `json:"post_commands,omitempty" doc:"Shell commands to run, in order, once the data is uploaded (or the backup failed); a failure makes the backup partial."`
	CommandTimeoutSeconds int      `json:"command_timeout_seconds,omitempty" doc:"How long each command may run before it is killed; 0: 600."`
}

// RepositoryParams are what an agent needs to produce blobs the
// repository can store: the chunker parameters and the key of blob ids. The
// agent never receives the data key or storage credentials.
type RepositoryParams struct {
	ID          string `json:"id"`
	ChunkerMin  int    `json:"chunker_min"`
	ChunkerAvg  int    `json:"chunker_avg"`
	ChunkerMax  int    `json:"chunker_max"`
	IDKey       []byte `json:"id_key" doc:"The 32-byte key of the keyed BLAKE3 blob ids (base64)."`
	Compression string `json:"compression" enum:"off,fastest,default,better,best"`
	// MaxUploadBytes bounds one POST /agent/blobs body.
	MaxUploadBytes int64 `json:"max_upload_bytes"`
	// MaxCheckIDs bounds the ids of one POST /agent/blobs/check.
	MaxCheckIDs int `json:"max_check_ids"`
}

// StartBackupResponse answers StartBackupRequest.
type StartBackupResponse struct {
	Backup     BackupJob        `json:"backup"`
	Repository RepositoryParams `json:"repository"`
}

// CheckBlobsRequest is the body of POST /api/v1/agent/blobs/check.
type CheckBlobsRequest struct {
	BackupID string   `json:"backup_id" maxLength:"64"`
	IDs      []string `json:"ids" maxItems:"10000" doc:"Hex blob ids (data and tree alike)."`
}

// CheckBlobsResponse lists, in request order, the ids the repository lacks.
// The others are kept alive for this backup (garbage collection spares
// them until it commits or fails).
type CheckBlobsResponse struct {
	Missing []string `json:"missing"`
}

// UploadResponse answers POST /api/v1/agent/blobs?backup_id=: every blob of
// the body is stored and indexed when it returns 200.
type UploadResponse struct {
	Message     string `json:"message"`
	Success     bool   `json:"success"`
	Stored      int    `json:"stored" doc:"Blobs written."`
	Duplicates  int    `json:"duplicates" doc:"Blobs the repository already held (not written again)."`
	StoredBytes int64  `json:"stored_bytes" doc:"Bytes the written blobs take in the repository."`
}

// BackupProgress is the body of POST /api/v1/agent/backups/{id}/progress.
type BackupProgress struct {
	Stats       coffer.BackupStats `json:"stats"`
	CurrentPath string             `json:"current_path,omitempty" maxLength:"4096"`
}

// ProgressResponse answers a progress report. Cancel tells the agent to
// stop the job (it was canceled on the server).
type ProgressResponse struct {
	Message string `json:"message"`
	Success bool   `json:"success"`
	Cancel  bool   `json:"cancel"`
}

// CommitRequest is the body of POST /api/v1/agent/backups/{id}/commit.
type CommitRequest struct {
	RootTree  string             `json:"root_tree" minLength:"64" maxLength:"64" doc:"Hex id of the root tree."`
	Stats     coffer.BackupStats `json:"stats"`
	Errors    []coffer.PathError `json:"errors" maxItems:"100000"`
	StartedAt time.Time          `json:"started_at"`
	ParentID  string             `json:"parent_id,omitempty" maxLength:"64" doc:"The backup whose change cache this one trusted."`
}

// MissingBlobsMetadataKey is the error metadata key of a commit refused
// with code "missing_blobs": the hex ids (at most 1000) of the blobs the
// snapshot references that the repository lacks. The agent re-uploads
// what it can, or runs the backup again with Full.
const MissingBlobsMetadataKey = "missing"

// FailRequest is the body of POST /api/v1/agent/backups/{id}/fail and
// /agent/restores/{id}/fail.
type FailRequest struct {
	State  coffer.JobState    `json:"state" enum:"failed,canceled"`
	Error  string             `json:"error" maxLength:"8192"`
	Errors []coffer.PathError `json:"errors,omitempty" maxItems:"100000"`
}

// StartRestoreRequest is the body of POST /api/v1/agent/restores. With
// RestoreID it starts a restore the server queued for this client;
// without, it creates one of BackupID (a backup of this client) to
// Destination on this machine (the CLI).
type StartRestoreRequest struct {
	RestoreID   string           `json:"restore_id,omitempty" maxLength:"64"`
	BackupID    string           `json:"backup_id,omitempty" maxLength:"64"`
	Paths       []string         `json:"paths,omitempty" maxItems:"1000"`
	Destination string           `json:"destination,omitempty" maxLength:"4096"`
	Overwrite   coffer.Overwrite `json:"overwrite,omitempty" enum:"overwrite,skip,if-newer,rename"`
}

// RestoreJob is a restore as the agent needs it.
type RestoreJob struct {
	ID          string           `json:"id"`
	BackupID    string           `json:"backup_id"`
	State       coffer.JobState  `json:"state"`
	RootTree    string           `json:"root_tree" doc:"Hex id of the backup's root tree."`
	Paths       []string         `json:"paths" doc:"Paths in the backup to restore (slash-separated, relative to its root); empty: everything."`
	Destination string           `json:"destination"`
	Overwrite   coffer.Overwrite `json:"overwrite"`
}

// StartRestoreResponse answers StartRestoreRequest. The id key lets the
// agent check every blob it receives against its id.
type StartRestoreResponse struct {
	Restore    RestoreJob       `json:"restore"`
	Repository RepositoryParams `json:"repository"`
}

// RestoreProgress is the body of POST /api/v1/agent/restores/{id}/progress.
type RestoreProgress struct {
	Stats       coffer.RestoreStats `json:"stats"`
	CurrentPath string              `json:"current_path,omitempty" maxLength:"4096"`
}

// FinishRestoreRequest is the body of POST /api/v1/agent/restores/{id}/finish.
type FinishRestoreRequest struct {
	Stats  coffer.RestoreStats `json:"stats"`
	Errors []coffer.PathError  `json:"errors" maxItems:"100000"`
}

// BlobLocation is where a blob lives in the repository, as the server
// reports it to a restoring agent so that the agent can ask for
// neighbouring blobs together.
type BlobLocation struct {
	ID        string `json:"id"`
	Type      string `json:"type" enum:"data,tree"`
	Pack      string `json:"pack" doc:"Hex pack id."`
	Offset    uint32 `json:"offset"`
	Length    uint32 `json:"length"`
	RawLength uint32 `json:"raw_length"`
}

// LocateRequest is the body of POST /api/v1/agent/blobs/locate.
type LocateRequest struct {
	RestoreID string   `json:"restore_id" maxLength:"64"`
	IDs       []string `json:"ids" maxItems:"10000"`
}

// LocateResponse lists the locations of the indexed ids among the request's.
type LocateResponse struct {
	Locations []BlobLocation `json:"locations"`
}

// ReadRequest is the body of POST /api/v1/agent/blobs/read: the blobs to
// read, by id (the server looks each one up itself). The response is a
// MediaType stream: one frame per distinct id, in no particular order
// (each frame names its blob; see WriteFrame), carrying the blob's payload
// as stored before encryption (zstd when smaller than the plaintext), or
// an error frame for a blob the server lacks or cannot read.
type ReadRequest struct {
	RestoreID string   `json:"restore_id" maxLength:"64"`
	IDs       []string `json:"ids" maxItems:"4096" doc:"Hex blob ids, data and tree alike."`
}

// BackupSummary is an entry of GET /api/v1/agent/backups (this client's backups).
type BackupSummary struct {
	ID         string             `json:"id"`
	State      coffer.JobState    `json:"state"`
	Trigger    string             `json:"trigger"`
	Paths      []string           `json:"paths"`
	SnapshotID string             `json:"snapshot_id"`
	Stats      coffer.BackupStats `json:"stats"`
	Errors     int                `json:"error_count"`
	CreatedAt  time.Time          `json:"created_at"`
	FinishedAt *time.Time         `json:"finished_at"`
}

// TreeEntry is one entry of a directory in a backup.
type TreeEntry struct {
	Name    string    `json:"name"`
	Type    string    `json:"type" enum:"file,dir,symlink,dev,chardev,fifo,socket"`
	Mode    uint32    `json:"mode" doc:"Permission bits with setuid, setgid and sticky."`
	Size    uint64    `json:"size"`
	Mtime   time.Time `json:"mtime"`
	User    string    `json:"user"`
	Group   string    `json:"group"`
	UID     uint32    `json:"uid"`
	GID     uint32    `json:"gid"`
	Target  string    `json:"target,omitempty" doc:"A symlink's target."`
	Content int       `json:"content_blobs" doc:"How many blobs hold a file's content."`
}

// Limits of the log lines an agent ships (POST /api/v1/agent/logs).
const (
	// MaxLogLines bounds the lines of one batch.
	MaxLogLines = 500
	// MaxLogMessage bounds a line's message, in characters.
	MaxLogMessage = 8192
	// MaxLogAttrs bounds a line's attributes; MaxLogAttrKey and
	// MaxLogAttrValue the characters of each key and value.
	MaxLogAttrs     = 16
	MaxLogAttrKey   = 64
	MaxLogAttrValue = 256
)

// LogLine is one line of the agent's log.
type LogLine struct {
	Time      time.Time `json:"time,omitzero" doc:"When the agent logged it (RFC 3339); absent: when the server receives it."`
	Level     string    `json:"level" enum:"debug,info,warn,error"`
	Message   string    `json:"message" maxLength:"8192"`
	BackupID  string    `json:"backup_id,omitempty" maxLength:"64" doc:"The backup of this client the line is about."`
	RestoreID string    `json:"restore_id,omitempty" maxLength:"64" doc:"The restore run by this client the line is about."`
	// Attrs are the record's other attributes, values as text; keys of
	// groups are joined with dots ("http.status").
	Attrs map[string]string `json:"attrs,omitempty" maxProperties:"16" doc:"Other attributes of the record: keys of at most 64 characters, values of at most 256."`
}

// LogBatch is the body of POST /api/v1/agent/logs.
type LogBatch struct {
	Lines []LogLine `json:"lines" minItems:"1" maxItems:"500"`
}

// LogBatchResponse answers a log batch. Lines naming a backup or restore
// that is not this client's are stored without that reference and counted
// in Detached.
type LogBatchResponse struct {
	Message  string `json:"message"`
	Success  bool   `json:"success"`
	Accepted int    `json:"accepted" doc:"Lines stored."`
	Detached int    `json:"detached" doc:"Lines whose backup_id or restore_id is not this client's: stored without it."`
}

// AgentPlan is one of the calling client's enabled plans, as GET
// /api/v1/agent/plans lists them for display on the machine. The server
// fires plans on their schedule; the agent does not.
type AgentPlan struct {
	ID            string        `json:"id"`
	Name          string        `json:"name"`
	Group         string        `json:"group"`
	RepositoryID  string        `json:"repository_id"`
	Schedule      string        `json:"schedule" doc:"Cron expression; empty when the plan runs only when started by hand."`
	Timezone      string        `json:"timezone" doc:"IANA time zone of the schedule; empty for UTC."`
	StartAt       *time.Time    `json:"start_at" nullable:"true"`
	EndAt         *time.Time    `json:"end_at" nullable:"true"`
	NextRunAt     *time.Time    `json:"next_run_at" nullable:"true" doc:"When the schedule fires next; null when it never does (run by hand only, or past end_at)."`
	Include       []string      `json:"include"`
	Exclude       []string      `json:"exclude"`
	PreCommands   []string      `json:"pre_commands"`
	PostCommands  []string      `json:"post_commands"`
	Retention     PlanRetention `json:"retention"`
	Compression   string        `json:"compression" enum:"off,fastest,default,better,best"`
	FullEvery     int           `json:"full_every"`
	OneFileSystem bool          `json:"one_file_system"`
	UpdatedAt     time.Time     `json:"updated_at"`
}

// PlanRetention is a plan's retention policy as an agent shows it; zero
// rules do not apply.
type PlanRetention struct {
	KeepLast    int    `json:"keep_last"`
	KeepHourly  int    `json:"keep_hourly"`
	KeepDaily   int    `json:"keep_daily"`
	KeepWeekly  int    `json:"keep_weekly"`
	KeepMonthly int    `json:"keep_monthly"`
	KeepYearly  int    `json:"keep_yearly"`
	KeepWithin  string `json:"keep_within" doc:"A Go duration, e.g. 720h; 0s for none."`
	HoldDays    int    `json:"hold_days"`
}
