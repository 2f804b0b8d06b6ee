package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/cofferhq/coffer/internal/protocol"
)

// fakeServer implements the agent routes in memory over a real engine
// repository: uploads go through Writer.SavePayload (so every blob is
// verified as the real server does), commits through Writer.Commit, and
// restores read with Repository.ReadPayloads.
type fakeServer struct {
	t    *testing.T
	repo *repository.Repository
	srv  *httptest.Server

	maxUpload int64
	maxCheck  int

	mu       sync.Mutex
	seq      int
	backups  map[string]*fakeBackup
	restores map[string]*fakeRestore
	cancel   map[string]bool // job ids whose next progress answer says cancel
	// hooks, when set, run before the route's own handling; a true
	// result means the hook answered.
	commitHook func(id string, w http.ResponseWriter) bool
	uploadHook func(r *http.Request) bool
	// tamper, when set, may change a payload before it is served.
	tamper     func(id blob.ID, payload []byte)
	listings   chan protocol.ListDirResult
	heartbeats chan protocol.HeartbeatRequest
	commands   chan []protocol.Command // each element: one stream connection's commands
	streams    atomic.Int32
	logs       []protocol.LogLine // shipped log lines, under mu

	// Upload statistics.
	uploads, inflight, maxInflight atomic.Int64
	maxBody                        atomic.Int64
}

type fakeBackup struct {
	job       protocol.BackupJob
	w         *repository.Writer
	state     coffer.JobState
	commit    protocol.CommitRequest
	fail      protocol.FailRequest
	root      blob.ID
	snapshots int
	progress  int
}

type fakeRestore struct {
	job    protocol.RestoreJob
	state  coffer.JobState
	finish protocol.FinishRestoreRequest
	fail   protocol.FailRequest
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	s := &fakeServer{t: t, repo: repotest.New(t, repotest.Options{}), maxUpload: 32 << 20, maxCheck: 1000,
		backups: map[string]*fakeBackup{}, restores: map[string]*fakeRestore{}, cancel: map[string]bool{},
		listings: make(chan protocol.ListDirResult, 10), heartbeats: make(chan protocol.HeartbeatRequest, 100),
		commands: make(chan []protocol.Command, 10)}
	mux := http.NewServeMux()
	route := func(pattern string, h func(w http.ResponseWriter, r *http.Request) (any, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer cfr_a_test" {
				writeJSON(w, 401, map[string]any{"code": "authentication_required", "detail": "bad credential"})
				return
			}
			out, err := h(w, r)
			if err != nil {
				writeJSON(w, 400, map[string]any{"code": "bad", "detail": err.Error()})
				return
			}
			if out != nil {
				writeJSON(w, 200, out)
			}
		})
	}
	route("POST /api/v1/agent/backups", s.startBackup)
	route("POST /api/v1/agent/blobs/check", s.check)
	route("POST /api/v1/agent/blobs", s.upload)
	route("POST /api/v1/agent/backups/{id}/progress", s.backupProgress)
	route("POST /api/v1/agent/backups/{id}/commit", s.commit)
	route("POST /api/v1/agent/backups/{id}/fail", s.failBackup)
	route("POST /api/v1/agent/restores", s.startRestore)
	route("POST /api/v1/agent/restores/{id}/progress", s.restoreProgress)
	route("POST /api/v1/agent/restores/{id}/finish", s.finishRestore)
	route("POST /api/v1/agent/restores/{id}/fail", s.failRestore)
	route("POST /api/v1/agent/blobs/locate", s.locate)
	route("POST /api/v1/agent/blobs/read", s.read)
	route("GET /api/v1/agent/blobs/{id}", s.blob)
	route("POST /api/v1/agent/heartbeat", s.heartbeat)
	route("POST /api/v1/agent/fs/{id}", s.listDir)
	route("GET /api/v1/agent/stream", s.stream)
	route("POST /api/v1/agent/logs", s.shipLogs)
	s.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		s.srv.CloseClientConnections()
		s.srv.Close()
		for _, b := range s.backups {
			if b.w != nil {
				b.w.Close()
			}
		}
	})
	return s
}

func (s *fakeServer) shipLogs(w http.ResponseWriter, r *http.Request) (any, error) {
	var b protocol.LogBatch
	if err := decode(r, &b); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logs = append(s.logs, b.Lines...)
	return protocol.LogBatchResponse{Success: true, Accepted: len(b.Lines)}, nil
}

// shipped returns the log lines shipped so far.
func (s *fakeServer) shipped() []protocol.LogLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]protocol.LogLine(nil), s.logs...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// decode reads a JSON body strictly, as the real server does.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func (s *fakeServer) params() protocol.RepositoryParams {
	cp := s.repo.Config().ChunkerParams()
	k := s.repo.Codec().IDKey()
	return protocol.RepositoryParams{ID: "repo-1", ChunkerMin: cp.Min, ChunkerAvg: cp.Avg, ChunkerMax: cp.Max,
		IDKey: k[:], Compression: "fastest", MaxUploadBytes: s.maxUpload, MaxCheckIDs: s.maxCheck}
}

// agent returns an Agent of this server with its state in a temp dir.
func (s *fakeServer) agent(t *testing.T) *Agent {
	t.Helper()
	a, err := New(Options{StateDir: t.TempDir(), State: &State{Server: s.srv.URL, ClientID: "c1", Name: "test", Credential: "cfr_a_test"},
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	a.progressEvery = 20 * time.Millisecond
	return a
}

// testWriter sends log lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func (s *fakeServer) startBackup(w http.ResponseWriter, r *http.Request) (any, error) {
	var req protocol.StartBackupRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.backups[req.BackupID]
	if req.BackupID != "" && b == nil {
		writeJSON(w, 404, map[string]any{"code": "backup_not_found", "detail": "no such backup"})
		return nil, nil
	}
	if b == nil {
		s.seq++
		b = &fakeBackup{job: protocol.BackupJob{ID: fmt.Sprintf("b%d", s.seq), Paths: req.Paths, Exclude: req.Exclude,
			Full: req.Full, OneFileSystem: req.OneFileSystem}}
		s.backups[b.job.ID] = b
	}
	var err error
	if b.w, err = s.repo.NewWriter(r.Context(), repository.WriterOptions{}); err != nil {
		return nil, err
	}
	b.state, b.job.State = coffer.JobRunning, coffer.JobRunning
	return protocol.StartBackupResponse{Backup: b.job, Repository: s.params()}, nil
}

// queue adds a backup the server queued (for a command).
func (s *fakeServer) queue(paths ...string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	id := fmt.Sprintf("q%d", s.seq)
	s.backups[id] = &fakeBackup{job: protocol.BackupJob{ID: id, Paths: paths}, state: coffer.JobQueued}
	return id
}

func (s *fakeServer) backup(id string) *fakeBackup {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.backups[id]
	if b == nil {
		s.t.Fatalf("no backup %s", id)
	}
	return b
}

func (s *fakeServer) writer(id string) (*repository.Writer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.backups[id]
	if b == nil || b.state != coffer.JobRunning {
		return nil, fmt.Errorf("backup %q is not running", id)
	}
	return b.w, nil
}

func (s *fakeServer) check(w http.ResponseWriter, r *http.Request) (any, error) {
	var req protocol.CheckBlobsRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if len(req.IDs) > s.maxCheck {
		return nil, fmt.Errorf("%d ids, more than %d", len(req.IDs), s.maxCheck)
	}
	bw, err := s.writer(req.BackupID)
	if err != nil {
		return nil, err
	}
	ids := make([]blob.ID, len(req.IDs))
	for i, h := range req.IDs {
		if ids[i], err = blob.ParseID(h); err != nil {
			return nil, err
		}
	}
	missing, err := bw.Missing(r.Context(), ids)
	if err != nil {
		return nil, err
	}
	out := protocol.CheckBlobsResponse{Missing: []string{}}
	for _, id := range missing {
		out.Missing = append(out.Missing, id.String())
	}
	return out, nil
}

func (s *fakeServer) upload(w http.ResponseWriter, r *http.Request) (any, error) {
	if s.uploadHook != nil && s.uploadHook(r) {
		return nil, nil
	}
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for m := s.maxInflight.Load(); n > m && !s.maxInflight.CompareAndSwap(m, n); m = s.maxInflight.Load() {
	}
	s.uploads.Add(1)
	if r.Header.Get("Content-Type") != protocol.MediaType {
		return nil, fmt.Errorf("content type %q", r.Header.Get("Content-Type"))
	}
	bw, err := s.writer(r.URL.Query().Get("backup_id"))
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, s.maxUpload+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > s.maxUpload {
		return nil, fmt.Errorf("body of more than %d bytes", s.maxUpload)
	}
	for m := s.maxBody.Load(); int64(len(body)) > m && !s.maxBody.CompareAndSwap(m, int64(len(body))); m = s.maxBody.Load() {
	}
	fr := protocol.NewFrameReader(bytes.NewReader(body))
	out := protocol.UploadResponse{Success: true}
	for {
		f, err := fr.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		stored, err := bw.SavePayload(r.Context(), f.Type, f.ID, f.Payload, f.RawLen)
		if err != nil {
			return nil, err
		}
		if stored {
			out.Stored++
			out.StoredBytes += int64(len(f.Payload))
		} else {
			out.Duplicates++
		}
	}
}

func (s *fakeServer) backupProgress(w http.ResponseWriter, r *http.Request) (any, error) {
	var p protocol.BackupProgress
	if err := decode(r, &p); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := r.PathValue("id")
	b := s.backups[id]
	if b == nil || b.state != coffer.JobRunning {
		writeJSON(w, 409, map[string]any{"code": "backup_not_running", "detail": "not running"})
		return nil, nil
	}
	b.progress++
	return protocol.ProgressResponse{Success: true, Cancel: s.cancel[id]}, nil
}

func (s *fakeServer) commit(w http.ResponseWriter, r *http.Request) (any, error) {
	id := r.PathValue("id")
	var req protocol.CommitRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if s.commitHook != nil && s.commitHook(id, w) {
		return nil, nil
	}
	bw, err := s.writer(id)
	if err != nil {
		return nil, err
	}
	root, err := blob.ParseID(req.RootTree)
	if err != nil {
		return nil, err
	}
	_, err = bw.Commit(r.Context(), &tree.Snapshot{Version: tree.SnapshotVersion, Time: req.StartedAt, Tree: root, Hostname: "h",
		Paths: []string{"/"}, BackupID: id, Parent: req.ParentID})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.backups[id]
	b.commit, b.root = req, root
	b.state = coffer.JobSucceeded
	if len(req.Errors) > 0 {
		b.state = coffer.JobPartial
	}
	b.snapshots++
	return map[string]any{"backup": map[string]any{"id": id, "state": b.state, "snapshot_id": "s-" + id}}, nil
}

func (s *fakeServer) failBackup(w http.ResponseWriter, r *http.Request) (any, error) {
	var req protocol.FailRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.backups[r.PathValue("id")]
	if b == nil || b.state.Final() {
		writeJSON(w, 409, map[string]any{"code": "backup_finished", "detail": "finished"})
		return nil, nil
	}
	b.state, b.fail = req.State, req
	return map[string]any{"message": "ok", "success": true}, nil
}

func (s *fakeServer) startRestore(w http.ResponseWriter, r *http.Request) (any, error) {
	var req protocol.StartRestoreRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.restores[req.RestoreID]
	if rs == nil {
		b := s.backups[req.BackupID]
		if b == nil || b.root.IsZero() {
			return nil, fmt.Errorf("no committed backup %q", req.BackupID)
		}
		s.seq++
		rs = &fakeRestore{job: protocol.RestoreJob{ID: fmt.Sprintf("r%d", s.seq), BackupID: req.BackupID, RootTree: b.root.String(),
			Paths: req.Paths, Destination: req.Destination, Overwrite: req.Overwrite}}
		s.restores[rs.job.ID] = rs
	}
	rs.state, rs.job.State = coffer.JobRunning, coffer.JobRunning
	return protocol.StartRestoreResponse{Restore: rs.job, Repository: s.params()}, nil
}

func (s *fakeServer) restore(id string) *fakeRestore {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restores[id]
}

func (s *fakeServer) restoreProgress(w http.ResponseWriter, r *http.Request) (any, error) {
	var p protocol.RestoreProgress
	if err := decode(r, &p); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return protocol.ProgressResponse{Success: true, Cancel: s.cancel[r.PathValue("id")]}, nil
}

func (s *fakeServer) finishRestore(w http.ResponseWriter, r *http.Request) (any, error) {
	var req protocol.FinishRestoreRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.restores[r.PathValue("id")]
	rs.finish, rs.state = req, coffer.JobSucceeded
	if len(req.Errors) > 0 {
		rs.state = coffer.JobPartial
	}
	return map[string]any{"restore": map[string]any{"id": rs.job.ID, "state": rs.state}}, nil
}

func (s *fakeServer) failRestore(w http.ResponseWriter, r *http.Request) (any, error) {
	var req protocol.FailRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.restores[r.PathValue("id")]
	rs.fail, rs.state = req, req.State
	return map[string]any{"message": "ok", "success": true}, nil
}

func (s *fakeServer) locate(w http.ResponseWriter, r *http.Request) (any, error) {
	var req protocol.LocateRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	ids := make([]blob.ID, len(req.IDs))
	for i, h := range req.IDs {
		var err error
		if ids[i], err = blob.ParseID(h); err != nil {
			return nil, err
		}
	}
	locs, err := s.repo.Locate(r.Context(), ids)
	if err != nil {
		return nil, err
	}
	out := protocol.LocateResponse{Locations: []protocol.BlobLocation{}}
	for id, loc := range locs {
		out.Locations = append(out.Locations, wireLocation(id, loc))
	}
	return out, nil
}

// readPayloads serves blobs as the real server does: it looks the ids up,
// reads payloads through
// Repository.ReadPayloads and writes them as frames (error frames for
// failures and for ids it lacks).
func (s *fakeServer) readPayloads(ctx context.Context, w io.Writer, hexIDs []string) error {
	ids := make([]blob.ID, len(hexIDs))
	for i, h := range hexIDs {
		var err error
		if ids[i], err = blob.ParseID(h); err != nil {
			return err
		}
	}
	locs, err := s.repo.Locate(ctx, ids)
	if err != nil {
		return err
	}
	byType := map[blob.Type][]repository.BlobRequest{}
	for _, id := range ids {
		loc, ok := locs[id]
		if !ok {
			if err := protocol.WriteErrorFrame(w, id, "blob not found"); err != nil {
				return err
			}
			continue
		}
		byType[loc.Type] = append(byType[loc.Type], repository.BlobRequest{ID: id, Loc: loc})
	}
	for t, reqs := range byType {
		err := s.repo.ReadPayloads(ctx, t, reqs, func(i int, payload []byte, err error) error {
			if err != nil {
				return protocol.WriteErrorFrame(w, reqs[i].ID, err.Error())
			}
			if s.tamper != nil {
				s.tamper(reqs[i].ID, payload)
			}
			return protocol.WriteFrame(w, t, reqs[i].ID, int(reqs[i].Loc.RawLength), payload)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *fakeServer) read(w http.ResponseWriter, r *http.Request) (any, error) {
	var req protocol.ReadRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	w.Header().Set("Content-Type", protocol.MediaType)
	return nil, s.readPayloads(r.Context(), w, req.IDs)
}

func (s *fakeServer) blob(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := blob.ParseID(r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	locs, err := s.repo.Locate(r.Context(), []blob.ID{id})
	if err != nil {
		return nil, err
	}
	loc, ok := locs[id]
	if !ok || loc.Type.String() != r.URL.Query().Get("type") || s.restore(r.URL.Query().Get("restore_id")) == nil {
		writeJSON(w, 404, map[string]any{"code": "blob_not_found", "detail": "no such blob"})
		return nil, nil
	}
	w.Header().Set("Content-Type", protocol.MediaType)
	return nil, s.readPayloads(r.Context(), w, []string{id.String()})
}

func (s *fakeServer) heartbeat(w http.ResponseWriter, r *http.Request) (any, error) {
	var req protocol.HeartbeatRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	select {
	case s.heartbeats <- req:
	default:
	}
	return protocol.HeartbeatResponse{Success: true, ServerTime: time.Now(), HeartbeatSeconds: 1}, nil
}

func (s *fakeServer) listDir(w http.ResponseWriter, r *http.Request) (any, error) {
	var res protocol.ListDirResult
	if err := decode(r, &res); err != nil {
		return nil, err
	}
	s.listings <- res
	return map[string]any{"message": "ok", "success": true}, nil
}

// stream sends the commands of the next element of s.commands, then a
// heartbeat comment now and then until the client leaves; an element
// that is nil ends the connection at once (the agent reconnects).
func (s *fakeServer) stream(w http.ResponseWriter, r *http.Request) (any, error) {
	s.streams.Add(1)
	w.Header().Set("Content-Type", "text/event-stream")
	rc := http.NewResponseController(w)
	io.WriteString(w, ": hello\n\n")
	rc.Flush()
	for {
		select {
		case cmds := <-s.commands:
			if cmds == nil {
				return nil, nil
			}
			for i, c := range cmds {
				b, _ := json.Marshal(c)
				fmt.Fprintf(w, "id: %d\nevent: command\ndata: %s\n\n", i, b)
			}
			rc.Flush()
		case <-time.After(50 * time.Millisecond):
			io.WriteString(w, ": heartbeat\n\n")
			rc.Flush()
		case <-r.Context().Done():
			return nil, nil
		}
	}
}
