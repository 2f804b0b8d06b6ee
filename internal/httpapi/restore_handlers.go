package httpapi

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/restores"
	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
)

// Restore is a restore job on the wire.
type Restore struct {
	ID              string              `json:"id"`
	BackupID        string              `json:"backup_id"`
	SourceClientID  string              `json:"source_client_id" doc:"The client the backup is of."`
	TargetClientID  string              `json:"target_client_id" doc:"The client that writes the files."`
	Paths           []string            `json:"paths" doc:"Paths in the backup that are restored, relative to its root; empty: everything."`
	Destination     string              `json:"destination" doc:"The directory on the target the files are written under."`
	Overwrite       string              `json:"overwrite" enum:"overwrite,skip,if-newer,rename"`
	State           string              `json:"state" enum:"queued,running,succeeded,partial,failed,canceled"`
	Stats           coffer.RestoreStats `json:"stats"`
	ErrorCount      int                 `json:"error_count" doc:"Entries that could not be written."`
	Errors          *[]coffer.PathError `json:"errors,omitempty" doc:"Those entries and why; not in lists."`
	Error           string              `json:"error" doc:"Why the restore failed or was canceled."`
	CancelRequested bool                `json:"cancel_requested" doc:"Someone canceled the running restore; its agent is stopping."`
	CreatedBy       string              `json:"created_by" doc:"The user who asked for it; empty when the client's own agent started it."`
	CreatedAt       time.Time           `json:"created_at"`
	StartedAt       *time.Time          `json:"started_at" nullable:"true"`
	FinishedAt      *time.Time          `json:"finished_at" nullable:"true"`
	UpdatedAt       time.Time           `json:"updated_at" doc:"The last change or progress report."`
}

// toRestore converts a restore; detail includes its list of errors.
func toRestore(r *coffer.Restore, detail bool) Restore {
	out := Restore{ID: r.ID, BackupID: r.BackupID, SourceClientID: r.SourceClientID, TargetClientID: r.TargetClientID,
		Paths: orEmpty(r.Paths), Destination: r.Destination, Overwrite: string(r.Overwrite), State: string(r.State),
		Stats: r.Stats, ErrorCount: max(len(r.Errors), int(r.Stats.ErrorCount)), Error: r.Error,
		CancelRequested: r.CancelRequested, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt, StartedAt: r.StartedAt,
		FinishedAt: r.FinishedAt, UpdatedAt: r.UpdatedAt}
	if detail {
		errs := r.Errors
		if errs == nil {
			errs = []coffer.PathError{}
		}
		out.Errors = &errs
	}
	return out
}

// restoreOut is the single-resource envelope of a restore.
type restoreOut struct {
	Body struct {
		Restore Restore `json:"restore"`
	}
}

func newRestoreOut(r *coffer.Restore) *restoreOut {
	out := &restoreOut{}
	out.Body.Restore = toRestore(r, true)
	return out
}

// Body limits of the restore routes: a finish or fail report may list
// 100 000 path errors; a read request names up to 4096 locations.
const (
	maxRestoreReportBytes = 32 << 20
	maxLocateBytes        = 2 << 20
	maxReadRequestBytes   = 4 << 20
)

func (s *Server) registerRestores() {
	if s.opts.Restores == nil {
		return
	}
	s.registerRestoreJobs()
	s.registerAgentRestores()
	s.registerAgentBlobReads()
}

func (s *Server) registerRestoreJobs() {
	tags := []string{"restores"}
	rs := s.opts.Restores

	type createIn struct {
		Body struct {
			BackupID       string   `json:"backup_id" minLength:"1" maxLength:"64" doc:"The backup to restore; it must have finished succeeded or partial."`
			TargetClientID string   `json:"target_client_id,omitempty" maxLength:"64" doc:"The client that writes the files; default: the client the backup is of."`
			Paths          []string `json:"paths,omitempty" maxItems:"1000" doc:"Paths inside the backup, slash-separated, relative to its root (a leading / is ignored; no .. components); default: everything."`
			Destination    string   `json:"destination" minLength:"1" maxLength:"4096" doc:"Absolute directory on the target to restore under: path P of the backup is written to DESTINATION/P."`
			Overwrite      string   `json:"overwrite,omitempty" enum:"overwrite,skip,if-newer,rename" doc:"What to do with entries that exist at the destination: keep them (skip, the default), replace them (overwrite), replace them when the backup's copy is newer (if-newer), or restore beside them as NAME.restored-N (rename)."`
		}
	}
	handle(s, Operate, huma.Operation{
		OperationID: "create-restore", Method: http.MethodPost, Path: "/api/v1/restores", Tags: tags,
		Summary: "Restore a backup",
		Description: "Queues a restore of a backup (or chosen paths in it) to a directory on the same or another client, " +
			"and orders that client's agent to run it.",
		DefaultStatus: http.StatusCreated, Errors: []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *createIn) (*restoreOut, error) {
		b := in.Body
		r, err := rs.Create(ctx, principalFrom(ctx), restores.Request{BackupID: b.BackupID, TargetClientID: b.TargetClientID,
			Paths: b.Paths, Destination: b.Destination, Overwrite: coffer.Overwrite(b.Overwrite)})
		if err != nil {
			return nil, err
		}
		return newRestoreOut(r), nil
	})

	type listIn struct {
		CursorParams
		BackupID string   `query:"backup_id" maxLength:"64" doc:"Only restores of this backup."`
		ClientID string   `query:"client_id" maxLength:"64" doc:"Only restores from or to this client."`
		State    []string `query:"state" maxItems:"6" doc:"Only restores in these states: queued, running, succeeded, partial, failed, canceled."`
	}
	handle(s, Read, huma.Operation{
		OperationID: "list-restores", Method: http.MethodGet, Path: "/api/v1/restores", Tags: tags,
		Summary: "List restores", Description: "Restores, newest first, cursor-paginated.",
	}, func(ctx context.Context, in *listIn) (*struct{ Body *Page[Restore] }, error) {
		f := metadb.RestoreFilter{BackupID: in.BackupID, ClientID: in.ClientID, Limit: in.PageSize + 1}
		for _, st := range in.State {
			js := coffer.JobState(st)
			if js != coffer.JobQueued && js != coffer.JobRunning && !js.Final() {
				return nil, coffer.Errorf(coffer.KindInvalid, "invalid_state",
					"state %q is not valid: use queued, running, succeeded, partial, failed or canceled", st).
					With("field", "query.state")
			}
			f.States = append(f.States, js)
		}
		after, err := decodeKeyset(in.Cursor)
		if err != nil {
			return nil, err
		}
		f.After = after
		list, err := rs.List(ctx, f)
		if err != nil {
			return nil, err
		}
		list, next := keysetPage(list, in.PageSize, func(r *coffer.Restore) metadb.Keyset {
			return metadb.Keyset{CreatedAt: r.CreatedAt, ID: r.ID}
		})
		items := make([]Restore, len(list))
		for i := range list {
			items[i] = toRestore(&list[i], false)
		}
		return &struct{ Body *Page[Restore] }{cursorPage(items, in.PageSize, next)}, nil
	})

	type pathIn struct {
		ID string `path:"id" maxLength:"64" doc:"The restore id."`
	}
	handle(s, Read, huma.Operation{
		OperationID: "get-restore", Method: http.MethodGet, Path: "/api/v1/restores/{id}", Tags: tags,
		Summary: "Get a restore", Description: "One restore, with the entries it could not write.",
		Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *pathIn) (*restoreOut, error) {
		r, err := rs.Get(ctx, in.ID)
		if err != nil {
			return nil, err
		}
		return newRestoreOut(r), nil
	})

	handle(s, Operate, huma.Operation{
		OperationID: "delete-restore", Method: http.MethodDelete, Path: "/api/v1/restores/{id}", Tags: tags,
		Summary: "Delete a restore record",
		Description: "Deletes a finished restore from the history; the files it wrote stay. Only an admin or the owner " +
			"of the restore's target client may (403 client_not_owned). A queued or running restore is 409 " +
			"restore_active: cancel it first.",
		Errors: []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *pathIn) (*struct{ Body CommandResult }, error) {
		r, err := rs.Delete(ctx, principalFrom(ctx), in.ID)
		if err != nil {
			return nil, err
		}
		return &struct{ Body CommandResult }{CommandResult{Message: "Restore record deleted.", Success: true, ID: r.ID}}, nil
	})

	handle(s, Operate, huma.Operation{
		OperationID: "cancel-restore", Method: http.MethodPost, Path: "/api/v1/restores/{id}/cancel", Tags: tags,
		Summary: "Cancel a restore",
		Description: "A queued restore is canceled at once; a running one is marked cancel_requested and its agent is " +
			"told to stop (it then reports the restore canceled). A finished restore cannot be canceled (409).",
		Errors: []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *pathIn) (*struct{ Body CommandResult }, error) {
		r, err := rs.Cancel(ctx, principalFrom(ctx), in.ID)
		if err != nil {
			return nil, err
		}
		msg := "Restore canceled."
		if r.State == coffer.JobRunning {
			msg = "Cancel requested: the agent is told to stop the restore."
		}
		return &struct{ Body CommandResult }{CommandResult{Message: msg, Success: true, ID: r.ID}}, nil
	})
}

func (s *Server) registerAgentRestores() {
	tags := []string{"agent"}
	rs := s.opts.Restores

	type startIn struct {
		Body protocol.StartRestoreRequest
	}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-start-restore", Method: http.MethodPost, Path: "/api/v1/agent/restores", Tags: tags,
		Summary: "Start a restore",
		Description: "With restore_id, starts the restore the server queued for this client (again, harmlessly, if it " +
			"already runs). Without, creates and starts a restore of backup_id — a backup of this client — to " +
			"destination on this machine. Returns the job and the repository's id key.",
		DefaultStatus: http.StatusCreated, Errors: []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *startIn) (*struct{ Body protocol.StartRestoreResponse }, error) {
		res, err := rs.StartRestore(ctx, principalFrom(ctx), in.Body)
		if err != nil {
			return nil, err
		}
		return &struct{ Body protocol.StartRestoreResponse }{*res}, nil
	})

	type progressIn struct {
		ID   string `path:"id" maxLength:"64" doc:"The restore id."`
		Body protocol.RestoreProgress
	}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-restore-progress", Method: http.MethodPost, Path: "/api/v1/agent/restores/{id}/progress", Tags: tags,
		Summary: "Report restore progress",
		Description: "Records the counts so far. cancel in the answer tells the agent to stop: the restore was canceled, " +
			"or is no longer running on the server.",
		Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *progressIn) (*struct{ Body protocol.ProgressResponse }, error) {
		res, err := rs.Progress(ctx, principalFrom(ctx), in.ID, in.Body)
		if err != nil {
			return nil, err
		}
		return &struct{ Body protocol.ProgressResponse }{*res}, nil
	})

	type finishIn struct {
		ID   string `path:"id" maxLength:"64" doc:"The restore id."`
		Body protocol.FinishRestoreRequest
	}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-finish-restore", Method: http.MethodPost, Path: "/api/v1/agent/restores/{id}/finish", Tags: tags,
		Summary: "Finish a restore",
		Description: "The restore ran to its end: succeeded, or partial when errors lists entries that could not be " +
			"written. Sending the same report again returns the restore unchanged.",
		Errors: []int{http.StatusNotFound, http.StatusConflict}, MaxBodyBytes: maxRestoreReportBytes,
	}, func(ctx context.Context, in *finishIn) (*restoreOut, error) {
		r, err := rs.Finish(ctx, principalFrom(ctx), in.ID, in.Body)
		if err != nil {
			return nil, err
		}
		return newRestoreOut(r), nil
	})

	type failIn struct {
		ID   string `path:"id" maxLength:"64" doc:"The restore id."`
		Body protocol.FailRequest
	}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-fail-restore", Method: http.MethodPost, Path: "/api/v1/agent/restores/{id}/fail", Tags: tags,
		Summary:     "Fail a restore",
		Description: "The restore failed, or was canceled (state canceled) after the agent was told to stop.",
		Errors:      []int{http.StatusNotFound, http.StatusConflict}, MaxBodyBytes: maxRestoreReportBytes,
	}, func(ctx context.Context, in *failIn) (*struct{ Body CommandResult }, error) {
		r, err := rs.Fail(ctx, principalFrom(ctx), in.ID, in.Body)
		if err != nil {
			return nil, err
		}
		return &struct{ Body CommandResult }{CommandResult{Message: "Restore " + string(r.State) + ".", Success: true, ID: r.ID}}, nil
	})
}

func (s *Server) registerAgentBlobReads() {
	tags := []string{"agent"}
	rs := s.opts.Restores

	type locateIn struct {
		Body protocol.LocateRequest
	}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-locate-blobs", Method: http.MethodPost, Path: "/api/v1/agent/blobs/locate", Tags: tags,
		Summary: "Locate blobs",
		Description: "Where the repository keeps the given blobs (ids it lacks are left out), so that a restoring agent " +
			"can ask for blobs that lie together in one read. Only for a running restore of this client.",
		Errors: []int{http.StatusNotFound, http.StatusConflict}, MaxBodyBytes: maxLocateBytes,
	}, func(ctx context.Context, in *locateIn) (*struct{ Body protocol.LocateResponse }, error) {
		res, err := rs.Locate(ctx, principalFrom(ctx), in.Body)
		if err != nil {
			return nil, err
		}
		return &struct{ Body protocol.LocateResponse }{*res}, nil
	})

	frames := map[string]*huma.MediaType{protocol.MediaType: {Schema: &huma.Schema{Type: "string", Format: "binary",
		Description: "Frames back to back: type (1 byte: 1 data, 2 tree, 255 error), blob id (32 bytes), plaintext " +
			"length (4 bytes, big-endian), payload length (4 bytes, big-endian), payload (zstd when shorter than the " +
			"plaintext, else the plaintext; for an error frame a UTF-8 message)."}}}

	type readIn struct {
		Body protocol.ReadRequest
	}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-read-blobs", Method: http.MethodPost, Path: "/api/v1/agent/blobs/read", Tags: tags,
		Summary: "Read blobs",
		Description: "Streams the requested blobs as frames (" + protocol.MediaType + "), one per distinct id, in no " +
			"particular order: each blob's payload as stored before encryption, which the agent decompresses and " +
			"checks against its id. Only the ids of the request count — the server looks every blob up itself. A blob " +
			"the repository lacks or cannot read comes as an error frame. At most 4096 blobs whose lengths, as " +
			"/blobs/locate reports them, add up to at most 64 MiB (the max_upload_bytes of the repository parameters " +
			"the restore started with); more is refused with 400 read_too_large. Only for a running restore of this client.",
		Errors: []int{http.StatusNotFound, http.StatusConflict}, MaxBodyBytes: maxReadRequestBytes,
		Responses: map[string]*huma.Response{"200": {Description: "A stream of blob frames.", Content: frames}},
	}, func(ctx context.Context, in *readIn) (*huma.StreamResponse, error) {
		batch, err := rs.Read(ctx, principalFrom(ctx), in.Body)
		if err != nil {
			return nil, err
		}
		return s.streamFrames(batch), nil
	})

	type blobIn struct {
		ID        string `path:"id" minLength:"64" maxLength:"64" doc:"The hex blob id."`
		RestoreID string `query:"restore_id" required:"true" maxLength:"64" doc:"The running restore the blob is for."`
		Type      string `query:"type" required:"true" enum:"tree,data" doc:"The blob's type."`
	}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-get-blob", Method: http.MethodGet, Path: "/api/v1/agent/blobs/{id}", Tags: tags,
		Summary: "Read one blob",
		Description: "One blob as a single frame (see POST /api/v1/agent/blobs/read) — how a restoring agent fetches " +
			"trees. 404 blob_not_found when the repository holds no blob of that id and type. Only for a running " +
			"restore of this client.",
		Errors:    []int{http.StatusNotFound, http.StatusConflict},
		Responses: map[string]*huma.Response{"200": {Description: "One blob frame.", Content: frames}},
	}, func(ctx context.Context, in *blobIn) (*huma.StreamResponse, error) {
		t := blob.Data
		if in.Type == "tree" {
			t = blob.Tree
		}
		batch, err := rs.Blob(ctx, principalFrom(ctx), in.RestoreID, t, in.ID)
		if err != nil {
			return nil, err
		}
		return s.streamFrames(batch), nil
	})
}

// streamFrames answers with the frames of batch. A failure once the
// status is sent (the agent went away, or storage failed mid-stream)
// aborts the connection, so that the agent sees a broken response rather
// than a short, well-formed one.
func (s *Server) streamFrames(batch *restores.ReadBatch) *huma.StreamResponse {
	return &huma.StreamResponse{Body: func(hctx huma.Context) {
		r, w := humago.Unwrap(hctx)
		hctx.SetHeader("Content-Type", protocol.MediaType)
		hctx.SetHeader("Cache-Control", "no-store")
		hctx.SetStatus(http.StatusOK)
		fw := &deadlineWriter{w: w, rc: http.NewResponseController(w), timeout: s.opts.WriteTimeout}
		if err := batch.Stream(r.Context(), fw); err != nil {
			if info := requestInfoFrom(r.Context()); info != nil {
				info.setErr(err)
			}
			s.log.Warn("stream blobs", "err", err, "blobs", batch.Len(), "request_id", RequestID(r.Context()))
			panic(http.ErrAbortHandler)
		}
	}}
}

// deadlineWriter gives every write a fresh deadline, so that the server's
// write timeout cuts a stuck agent, not a long transfer.
type deadlineWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	timeout time.Duration
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.w.Write(p)
}
