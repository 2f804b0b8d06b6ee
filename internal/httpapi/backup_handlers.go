package httpapi

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/backups"
	"github.com/danielgtaylor/huma/v2"
)

// Backup is a backup on the wire. Beside its record it carries the
// Freezer backup metadata (seed 002): host_name, backup_name, timestamp,
// level, session, mode, paths, counts, sizes, compression_alg, encrypted,
// client_os, agent_version, exclude (the excluded patterns), errors (the
// error list, in the detail) and expires_at.
type Backup struct {
	ID              string              `json:"id"`
	ClientID        string              `json:"client_id"`
	PlanID          string              `json:"plan_id" doc:"The plan that ran it; empty for an ad-hoc backup."`
	RepositoryID    string              `json:"repository_id"`
	Trigger         string              `json:"trigger" enum:"schedule,manual,api"`
	State           string              `json:"state" enum:"queued,running,succeeded,partial,failed,canceled"`
	Paths           []string            `json:"paths" doc:"Absolute paths on the client."`
	Exclude         []string            `json:"exclude" doc:"Gitignore-style patterns."`
	Full            bool                `json:"full" doc:"Every file is re-read instead of trusting the change cache."`
	OneFileSystem   bool                `json:"one_file_system"`
	HostName        string              `json:"host_name"`
	SnapshotID      string              `json:"snapshot_id" doc:"The snapshot it committed; empty until it succeeds."`
	RootTree        string              `json:"root_tree" doc:"Hex id of the snapshot's root tree."`
	ParentID        string              `json:"parent_id" doc:"The backup whose change cache this one trusted."`
	Stats           coffer.BackupStats  `json:"stats"`
	ErrorCount      int                 `json:"error_count" doc:"Entries that could not be backed up."`
	Errors          *[]coffer.PathError `json:"errors,omitempty" doc:"Those entries and why; only in GET /api/v1/backups/{id}."`
	Error           string              `json:"error" doc:"Why the backup failed or was canceled."`
	CancelRequested bool                `json:"cancel_requested" doc:"Someone canceled the running backup; its agent is stopping."`
	CreatedBy       string              `json:"created_by" doc:"The user who asked for it; empty for the scheduler or the machine's own agent."`
	CreatedAt       time.Time           `json:"created_at"`
	StartedAt       *time.Time          `json:"started_at" nullable:"true"`
	FinishedAt      *time.Time          `json:"finished_at" nullable:"true"`
	UpdatedAt       time.Time           `json:"updated_at" doc:"The last change or progress report."`
	BackupMeta
}

// BackupMeta is the Freezer metadata of a backup beyond its record.
type BackupMeta struct {
	BackupName     string       `json:"backup_name" doc:"The plan's name when the backup ended; empty for an ad-hoc backup (or one that has not ended)."`
	Timestamp      *time.Time   `json:"timestamp" nullable:"true" doc:"When the backup started: the time of its snapshot."`
	Level          *int         `json:"level" nullable:"true" doc:"0 for a full backup (every file re-read); n for the nth backup since that full one that trusted its predecessor's change cache. Null until the backup commits."`
	Session        string       `json:"session" doc:"The id of the full (level 0) backup this one builds on — its own id at level 0; empty until it commits, or when the chain is unknown (its predecessor was forgotten)."`
	Mode           string       `json:"mode" enum:"fs" doc:"What was backed up: fs, files and directories."`
	Counts         BackupCounts `json:"counts"`
	Sizes          BackupSizes  `json:"sizes"`
	CompressionAlg string       `json:"compression_alg" enum:"zstd,none," doc:"How blobs were compressed: zstd (skipped per blob when it does not shrink it), none, or empty when not recorded."`
	Compression    string       `json:"compression" enum:"off,fastest,default,better,best," doc:"The zstd level; empty when not recorded."`
	Encrypted      bool         `json:"encrypted" doc:"The repository encrypts what it stores (AES-256-GCM)."`
	ClientOS       string       `json:"client_os" doc:"The client's operating system when the backup ended."`
	AgentVersion   string       `json:"agent_version" doc:"The version of the agent that ran it."`
	ExpiresAt      *time.Time   `json:"expires_at" nullable:"true" doc:"When the hold of the plan's retention (hold_days after the backup finished, in the plan's time zone) ends: until then retention keeps the backup. Null without hold_days, for an ad-hoc backup, or before it finishes."`
}

// BackupCounts count the entries of a backup.
type BackupCounts struct {
	Files       uint64 `json:"files"`
	Dirs        uint64 `json:"dirs"`
	Symlinks    uint64 `json:"symlinks"`
	BrokenLinks uint64 `json:"broken_links" doc:"Symlinks whose target does not exist (stored as they are)."`
	Excluded    uint64 `json:"excluded" doc:"Entries the exclude patterns left out (an excluded directory counts once)."`
	Errors      int    `json:"errors" doc:"Entries that could not be backed up."`
}

// BackupSizes are the byte sizes of a backup.
type BackupSizes struct {
	Logical          uint64 `json:"logical" doc:"The size of the files backed up."`
	StoredCompressed uint64 `json:"stored_compressed" doc:"What the new data took in the repository: compressed (and encrypted) bytes."`
	NewlyAdded       uint64 `json:"newly_added" doc:"The new data before compression: bytes no earlier backup had stored (the rest deduplicated)."`
}

// toBackupMeta converts a backup's metadata; expiresAt comes from its plan.
func toBackupMeta(b *coffer.Backup) BackupMeta {
	st := b.Stats
	m := BackupMeta{BackupName: b.Meta.Name, Timestamp: b.StartedAt, Session: b.Meta.Session, Mode: "fs",
		Counts: BackupCounts{Files: st.Files, Dirs: st.Dirs, Symlinks: st.Symlinks, BrokenLinks: st.BrokenLinks,
			Excluded: st.Excluded, Errors: backupErrorCount(b)},
		Sizes:       BackupSizes{Logical: st.LogicalBytes, StoredCompressed: st.AddedBytes, NewlyAdded: st.AddedRawBytes},
		Compression: b.Meta.Compression, Encrypted: b.Meta.Encrypted, ClientOS: b.Meta.ClientOS, AgentVersion: b.Meta.AgentVersion}
	if b.SnapshotID != "" {
		level := b.Meta.Level
		m.Level = &level
	}
	switch b.Meta.Compression {
	case "":
	case "off":
		m.CompressionAlg = "none"
	default:
		m.CompressionAlg = "zstd"
	}
	return m
}

// withExpiry sets the expires_at of backups from their plans' holds.
func withExpiry(ctx context.Context, svc *backups.Service, bs []coffer.Backup, out []Backup) error {
	ptrs := make([]*coffer.Backup, len(bs))
	for i := range bs {
		ptrs[i] = &bs[i]
	}
	exp, err := svc.ExpiresAt(ctx, ptrs...)
	if err != nil {
		return err
	}
	for i := range out {
		out[i].ExpiresAt = exp[i]
	}
	return nil
}

func backupErrorCount(b *coffer.Backup) int { return max(len(b.Errors), int(b.Stats.ErrorCount)) }

// toBackup converts a backup; detail includes its list of errors.
func toBackup(b *coffer.Backup, detail bool) Backup {
	out := Backup{ID: b.ID, ClientID: b.ClientID, PlanID: b.PlanID, RepositoryID: b.RepositoryID, Trigger: string(b.Trigger),
		State: string(b.State), Paths: orEmpty(b.Paths), Exclude: orEmpty(b.Exclude), Full: b.Full, OneFileSystem: b.OneFS,
		HostName: b.HostName, SnapshotID: b.SnapshotID, RootTree: b.RootTree, ParentID: b.ParentID, Stats: b.Stats,
		ErrorCount: backupErrorCount(b), Error: b.Error, CancelRequested: b.CancelRequested, CreatedBy: b.CreatedBy,
		CreatedAt: b.CreatedAt, StartedAt: b.StartedAt, FinishedAt: b.FinishedAt, UpdatedAt: b.UpdatedAt,
		BackupMeta: toBackupMeta(b)}
	if detail {
		errs := b.Errors
		if errs == nil {
			errs = []coffer.PathError{}
		}
		out.Errors = &errs
	}
	return out
}

// toBackupSummary converts a backup for its agent.
func toBackupSummary(b *coffer.Backup) protocol.BackupSummary {
	return protocol.BackupSummary{ID: b.ID, State: b.State, Trigger: string(b.Trigger), Paths: orEmpty(b.Paths),
		SnapshotID: b.SnapshotID, Stats: b.Stats, Errors: backupErrorCount(b), CreatedAt: b.CreatedAt, FinishedAt: b.FinishedAt}
}

// backupOut is the single-resource envelope of a backup.
type backupOut struct {
	Body struct {
		Backup Backup `json:"backup"`
	}
}

func newBackupOut(b *coffer.Backup) *backupOut {
	out := &backupOut{}
	out.Body.Backup = toBackup(b, true)
	return out
}

// keysetCursor is the cursor of a list ordered newest first by (time, id):
// backups, restores, client log lines.
type keysetCursor struct {
	CreatedAt time.Time `json:"t"`
	ID        string    `json:"i"`
}

// decodeKeyset returns the position a cursor continues after; nil for the
// first page (no cursor).
func decodeKeyset(cursor string) (*metadb.Keyset, error) {
	if cursor == "" {
		return nil, nil
	}
	var c keysetCursor
	if err := decodeCursor(cursor, &c); err != nil {
		return nil, err
	}
	return &metadb.Keyset{CreatedAt: c.CreatedAt, ID: c.ID}, nil
}

func encodeKeyset(k metadb.Keyset) *string {
	return encodeCursor(keysetCursor{CreatedAt: k.CreatedAt, ID: k.ID})
}

// keysetPage cuts rows, fetched with one row more than the page to know
// whether another follows, to the page; next is the cursor of the
// following page, nil on the last.
func keysetPage[T any](rows []T, pageSize int, key func(*T) metadb.Keyset) (page []T, next *string) {
	if len(rows) <= pageSize {
		return rows, nil
	}
	rows = rows[:pageSize]
	return rows, encodeKeyset(key(&rows[len(rows)-1]))
}

func backupKey(b *coffer.Backup) metadb.Keyset {
	return metadb.Keyset{CreatedAt: b.CreatedAt, ID: b.ID}
}

// backupPage fetches one cursor page of backups: f with the cursor's
// position and one row more than the page, to know whether another follows.
func backupPage(ctx context.Context, p CursorParams, f metadb.BackupFilter,
	list func(context.Context, metadb.BackupFilter) ([]coffer.Backup, error)) ([]coffer.Backup, *string, error) {
	after, err := decodeKeyset(p.Cursor)
	if err != nil {
		return nil, nil, err
	}
	f.After, f.Limit = after, p.PageSize+1
	bs, err := list(ctx, f)
	if err != nil {
		return nil, nil, err
	}
	bs, next := keysetPage(bs, p.PageSize, backupKey)
	return bs, next, nil
}

// backupTreeIn is the input of the agent's and the users' backup tree
// listings.
type backupTreeIn struct {
	ID   string `path:"id" maxLength:"64"`
	Path string `query:"path" maxLength:"4096" doc:"A path in the backup, slash-separated, relative to its root (a leading / is ignored); empty for the root."`
}

// Body limits of the backup routes: a commit or fail report may list
// 100 000 path errors; a blob check names up to 10 000 ids.
const (
	maxBackupReportBytes = 32 << 20
	maxBlobCheckBytes    = 2 << 20
)

func (s *Server) registerBackups() {
	if s.opts.Backups == nil {
		return
	}
	s.registerBackupAgentRoutes()
	s.registerBackupUserRoutes()
}

// uploadIn is the input of POST /api/v1/agent/blobs. The body is not read
// by huma: the service streams it, verifying every frame.
type uploadIn struct {
	BackupID string `query:"backup_id" required:"true" minLength:"1" maxLength:"64" doc:"The running backup the blobs belong to."`
	body     io.Reader
	size     int64
}

// Resolve checks the media type and takes the request body.
func (in *uploadIn) Resolve(ctx huma.Context) []error {
	mt, _, err := mime.ParseMediaType(ctx.Header("Content-Type"))
	if err != nil || mt != protocol.MediaType {
		return []error{&APIError{status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
			Detail: fmt.Sprintf("send blob frames with Content-Type %s", protocol.MediaType), Metadata: map[string]any{}}}
	}
	in.body = ctx.BodyReader()
	in.size = -1
	if n, err := strconv.ParseInt(ctx.Header("Content-Length"), 10, 64); err == nil && n >= 0 {
		in.size = n
	}
	return nil
}

func (s *Server) registerBackupAgentRoutes() {
	tags := []string{"agent"}
	svc := s.opts.Backups

	type startIn struct {
		Body protocol.StartBackupRequest
	}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-start-backup", Method: http.MethodPost, Path: "/api/v1/agent/backups", Tags: tags,
		Summary: "Start a backup",
		Description: "Starts the queued backup backup_id (sent to the agent in a backup command), or, without backup_id, " +
			"an ad-hoc backup of paths on this machine. Returns the job and the repository parameters blobs are made with. " +
			"Starting a backup that already runs for this client returns it again.",
		DefaultStatus: http.StatusCreated, Errors: []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *startIn) (*struct{ Body *protocol.StartBackupResponse }, error) {
		res, err := svc.StartBackup(ctx, principalFrom(ctx).ClientID, in.Body)
		if err != nil {
			return nil, err
		}
		return &struct{ Body *protocol.StartBackupResponse }{res}, nil
	})

	type checkIn struct {
		Body protocol.CheckBlobsRequest
	}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-check-blobs", Method: http.MethodPost, Path: "/api/v1/agent/blobs/check", Tags: tags,
		Summary: "Ask which blobs are missing",
		Description: "Returns, in request order, the ids the repository lacks. The others are kept alive for the running " +
			"backup until it commits or fails.",
		Errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusRequestEntityTooLarge}, MaxBodyBytes: maxBlobCheckBytes,
	}, func(ctx context.Context, in *checkIn) (*struct{ Body *protocol.CheckBlobsResponse }, error) {
		res, err := svc.CheckBlobs(ctx, principalFrom(ctx).ClientID, in.Body)
		if err != nil {
			return nil, err
		}
		return &struct{ Body *protocol.CheckBlobsResponse }{res}, nil
	})

	handle(s, Agent, huma.Operation{
		OperationID: "agent-upload-blobs", Method: http.MethodPost, Path: "/api/v1/agent/blobs", Tags: tags,
		Summary: "Upload blobs",
		Description: "The body is blob frames back to back (see docs/agent-protocol.md): type (1 byte), id (32), plaintext " +
			"length (4, big-endian), payload length (4), payload (zstd-compressed plaintext, or the plaintext). The server " +
			"verifies every frame before storing any — a corrupt one fails the request with 400 blob_corrupt naming it, " +
			"and nothing is stored — skips blobs it already holds, and answers once the rest are durably stored and " +
			"indexed. Sending the same frames again is harmless.",
		RequestBody: &huma.RequestBody{Required: true, Description: "Blob frames.",
			Content: map[string]*huma.MediaType{protocol.MediaType: {Schema: &huma.Schema{Type: "string", Format: "binary"}}}},
		MaxBodyBytes: svc.MaxUploadBytes(),
		Errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusRequestEntityTooLarge,
			http.StatusUnsupportedMediaType},
	}, func(ctx context.Context, in *uploadIn) (*struct{ Body *protocol.UploadResponse }, error) {
		res, err := svc.Upload(ctx, principalFrom(ctx).ClientID, in.BackupID, in.body, in.size)
		if err != nil {
			return nil, err
		}
		return &struct{ Body *protocol.UploadResponse }{res}, nil
	})

	type progressIn struct {
		ID   string `path:"id" maxLength:"64"`
		Body protocol.BackupProgress
	}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-backup-progress", Method: http.MethodPost, Path: "/api/v1/agent/backups/{id}/progress", Tags: tags,
		Summary: "Report backup progress",
		Description: "Records the running backup's statistics. A backup without progress for a while is failed by the " +
			"server. cancel=true in the answer tells the agent to stop: the backup was canceled or already ended.",
		Errors: []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *progressIn) (*struct{ Body *protocol.ProgressResponse }, error) {
		res, err := svc.Progress(ctx, principalFrom(ctx).ClientID, in.ID, in.Body)
		if err != nil {
			return nil, err
		}
		return &struct{ Body *protocol.ProgressResponse }{res}, nil
	})

	type commitIn struct {
		ID   string `path:"id" maxLength:"64"`
		Body protocol.CommitRequest
	}
	type commitOut struct {
		Body struct {
			Backup protocol.BackupSummary `json:"backup"`
		}
	}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-commit-backup", Method: http.MethodPost, Path: "/api/v1/agent/backups/{id}/commit", Tags: tags,
		Summary: "Commit a backup",
		Description: "Writes the snapshot of the root tree and ends the backup succeeded (partial when errors are listed). " +
			"When blobs the tree references are missing it answers 409 missing_blobs with up to 1000 of their ids in " +
			"metadata." + protocol.MissingBlobsMetadataKey + "; the backup keeps running, so upload them and commit again. " +
			"Committing the same tree again returns the backup.",
		Errors: []int{http.StatusNotFound, http.StatusConflict}, MaxBodyBytes: maxBackupReportBytes,
	}, func(ctx context.Context, in *commitIn) (*commitOut, error) {
		b, err := svc.Commit(ctx, principalFrom(ctx).ClientID, in.ID, in.Body)
		if err != nil {
			return nil, err
		}
		out := &commitOut{}
		out.Body.Backup = toBackupSummary(b)
		return out, nil
	})

	type failIn struct {
		ID   string `path:"id" maxLength:"64"`
		Body protocol.FailRequest
	}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-fail-backup", Method: http.MethodPost, Path: "/api/v1/agent/backups/{id}/fail", Tags: tags,
		Summary: "Give up a backup",
		Description: "Ends the backup failed (with the reason) or canceled (after a cancel). Nothing is committed; the " +
			"blobs it uploaded are reused by the next backup.",
		Errors: []int{http.StatusNotFound, http.StatusConflict}, MaxBodyBytes: maxBackupReportBytes,
	}, func(ctx context.Context, in *failIn) (*struct{ Body CommandResult }, error) {
		b, err := svc.Fail(ctx, principalFrom(ctx).ClientID, in.ID, in.Body)
		if err != nil {
			return nil, err
		}
		return &struct{ Body CommandResult }{CommandResult{Message: fmt.Sprintf("Backup %s.", b.State), Success: true, ID: b.ID}}, nil
	})

	type listIn struct {
		CursorParams
	}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-list-backups", Method: http.MethodGet, Path: "/api/v1/agent/backups", Tags: tags,
		Summary: "List this client's backups", Description: "This client's backups, newest first, cursor-paginated.",
	}, func(ctx context.Context, in *listIn) (*struct{ Body *Page[protocol.BackupSummary] }, error) {
		clientID := principalFrom(ctx).ClientID
		bs, next, err := backupPage(ctx, in.CursorParams, metadb.BackupFilter{},
			func(ctx context.Context, f metadb.BackupFilter) ([]coffer.Backup, error) {
				return svc.Backups(ctx, clientID, f.After, f.Limit)
			})
		if err != nil {
			return nil, err
		}
		items := make([]protocol.BackupSummary, len(bs))
		for i := range bs {
			items[i] = toBackupSummary(&bs[i])
		}
		return &struct{ Body *Page[protocol.BackupSummary] }{cursorPage(items, in.PageSize, next)}, nil
	})

	handle(s, Agent, huma.Operation{
		OperationID: "agent-backup-tree", Method: http.MethodGet, Path: "/api/v1/agent/backups/{id}/tree", Tags: tags,
		Summary: "List a directory of a backup",
		Description: "The entries of the directory at path in one of this client's committed backups; a file's path " +
			"lists that file. A path the backup does not hold is 404 path_not_found.",
		Errors: []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *backupTreeIn) (*struct {
		Body Collection[protocol.TreeEntry]
	}, error) {
		entries, err := svc.Tree(ctx, principalFrom(ctx).ClientID, in.ID, in.Path)
		if err != nil {
			return nil, err
		}
		return &struct {
			Body Collection[protocol.TreeEntry]
		}{Collection[protocol.TreeEntry]{Items: entries, Total: len(entries)}}, nil
	})
}

func (s *Server) registerBackupUserRoutes() {
	tags := []string{"backups"}
	svc := s.opts.Backups

	type listIn struct {
		CursorParams
		ClientID string    `query:"client_id" maxLength:"64" doc:"Only this client's backups."`
		PlanID   string    `query:"plan_id" maxLength:"64" doc:"Only this plan's backups."`
		State    []string  `query:"state" maxItems:"6" enum:"queued,running,succeeded,partial,failed,canceled" doc:"Only backups in these states (repeatable)."`
		Trigger  string    `query:"trigger" enum:"schedule,manual,api," doc:"Only backups started this way: by a plan's schedule, by a person, or by a script with an API token."`
		Since    time.Time `query:"since" doc:"Only backups created at or after this time (RFC 3339)."`
		Until    time.Time `query:"until" doc:"Only backups created before this time (RFC 3339)."`
	}
	handle(s, Read, huma.Operation{
		OperationID: "list-backups", Method: http.MethodGet, Path: "/api/v1/backups", Tags: tags,
		Summary: "List backups", Description: "Backups of every client, newest first, cursor-paginated. Lists omit each backup's errors.",
	}, func(ctx context.Context, in *listIn) (*struct{ Body *Page[Backup] }, error) {
		f := metadb.BackupFilter{ClientID: in.ClientID, PlanID: in.PlanID, Trigger: coffer.BackupTrigger(in.Trigger),
			Since: in.Since, Until: in.Until}
		for _, st := range in.State {
			f.States = append(f.States, coffer.JobState(st))
		}
		bs, next, err := backupPage(ctx, in.CursorParams, f, svc.List)
		if err != nil {
			return nil, err
		}
		items := make([]Backup, len(bs))
		for i := range bs {
			items[i] = toBackup(&bs[i], false)
		}
		if err := withExpiry(ctx, svc, bs, items); err != nil {
			return nil, err
		}
		return &struct{ Body *Page[Backup] }{cursorPage(items, in.PageSize, next)}, nil
	})

	type idIn struct {
		ID string `path:"id" maxLength:"64"`
	}
	handle(s, Read, huma.Operation{
		OperationID: "get-backup", Method: http.MethodGet, Path: "/api/v1/backups/{id}", Tags: tags,
		Summary: "Get a backup", Description: "One backup, with the entries it could not back up.",
		Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *idIn) (*backupOut, error) {
		b, err := svc.Get(ctx, in.ID)
		if err != nil {
			return nil, err
		}
		out := newBackupOut(b)
		exp, err := svc.ExpiresAt(ctx, b)
		if err != nil {
			return nil, err
		}
		out.Body.Backup.ExpiresAt = exp[0]
		return out, nil
	})

	handle(s, Manage, huma.Operation{
		OperationID: "forget-backup", Method: http.MethodDelete, Path: "/api/v1/backups/{id}", Tags: tags,
		Summary: "Forget a backup",
		Description: "Forgets a finished backup: its snapshot goes from its repository — the data is freed by the next " +
			"garbage collection, unless other backups share it — and its record from the history; records of restores " +
			"made from it stay. Retention and holds do not stop an admin. A queued or running backup is 409 " +
			"backup_active (cancel it first); one a queued or running restore reads is 409 backup_restoring.",
		Errors: []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *idIn) (*struct{ Body CommandResult }, error) {
		b, err := svc.Forget(ctx, principalFrom(ctx), in.ID)
		if err != nil {
			return nil, err
		}
		return &struct{ Body CommandResult }{CommandResult{Success: true, ID: b.ID,
			Message: "Backup forgotten; its data is freed at the next garbage collection."}}, nil
	})

	handle(s, Read, huma.Operation{
		OperationID: "backup-tree", Method: http.MethodGet, Path: "/api/v1/backups/{id}/tree", Tags: tags,
		Summary: "List a directory of a backup",
		Description: "The entries of the directory at path in a committed backup; a file's path lists that file. " +
			"A path the backup does not hold is 404 path_not_found.",
		Errors: []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *backupTreeIn) (*struct {
		Body Collection[protocol.TreeEntry]
	}, error) {
		entries, err := svc.TreeOf(ctx, in.ID, in.Path)
		if err != nil {
			return nil, err
		}
		return &struct {
			Body Collection[protocol.TreeEntry]
		}{Collection[protocol.TreeEntry]{Items: entries, Total: len(entries)}}, nil
	})

	handle(s, Operate, huma.Operation{
		OperationID: "cancel-backup", Method: http.MethodPost, Path: "/api/v1/backups/{id}/cancel", Tags: tags,
		Summary: "Cancel a backup",
		Description: "A queued backup is canceled at once; a running one is marked and its agent told to stop, after " +
			"which it ends canceled. A backup that already ended is 409 backup_finished.",
		Errors: []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *idIn) (*struct{ Body CommandResult }, error) {
		b, err := svc.Cancel(ctx, principalFrom(ctx), in.ID)
		if err != nil {
			return nil, err
		}
		msg := "Backup canceled."
		if b.State == coffer.JobRunning {
			msg = "Cancel requested: the agent is told to stop the backup."
		}
		return &struct{ Body CommandResult }{CommandResult{Message: msg, Success: true, ID: b.ID}}, nil
	})

	type runIn struct {
		ID   string `path:"id" maxLength:"64" doc:"The client."`
		Body struct {
			Paths         []string `json:"paths" minItems:"1" maxItems:"1000" doc:"Absolute paths on the client."`
			Exclude       []string `json:"exclude,omitempty" maxItems:"10000" doc:"Gitignore-style patterns."`
			Full          bool     `json:"full,omitempty" doc:"Re-read every file instead of trusting the change cache."`
			OneFileSystem bool     `json:"one_file_system,omitempty" doc:"Do not cross into other file systems."`
		}
	}
	handle(s, Operate, huma.Operation{
		OperationID: "run-client-backup", Method: http.MethodPost, Path: "/api/v1/clients/{id}/backups", Tags: tags,
		Summary: "Back up a client now",
		Description: "Queues an ad-hoc backup of paths on the client and sends its agent the command to run it. " +
			"Its trigger is api for an API token, manual otherwise.",
		DefaultStatus: http.StatusCreated, Errors: []int{http.StatusNotFound}, MaxBodyBytes: maxBackupReportBytes,
	}, func(ctx context.Context, in *runIn) (*backupOut, error) {
		b, err := svc.RunAdHoc(ctx, principalFrom(ctx), in.ID, backups.AdHoc{Paths: in.Body.Paths, Exclude: in.Body.Exclude,
			Full: in.Body.Full, OneFileSystem: in.Body.OneFileSystem})
		if err != nil {
			return nil, err
		}
		return newBackupOut(b), nil
	})
}
