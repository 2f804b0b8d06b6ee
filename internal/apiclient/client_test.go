package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/protocol"
)

var fastRetry = Retry{Attempts: 5, Min: time.Millisecond, Max: 2 * time.Millisecond}

func newClient(t *testing.T, h http.Handler) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := New(Options{Server: srv.URL, Credential: "cfr_a_secret", Retry: fastRetry, UserAgent: "test-agent"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func envelope(code, detail string, meta map[string]any) map[string]any {
	return map[string]any{"code": code, "detail": detail, "metadata": meta, "correlation_id": "req-1"}
}

func TestNewServerURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://h:8080":          "http://h:8080/api/v1",
		"https://h/":             "https://h/api/v1",
		"https://h/api/v1":       "https://h/api/v1",
		"https://h/prefix/":      "https://h/prefix/api/v1",
		" https://h/api/v1/  ":   "https://h/api/v1",
		"https://h/x/api/v1/":    "https://h/x/api/v1",
		"http://127.0.0.1:55/ab": "http://127.0.0.1:55/ab/api/v1",
	} {
		c, err := New(Options{Server: in})
		if err != nil || c.base != want {
			t.Errorf("New(%q): base %q, %v; want %q", in, c.base, err, want)
		}
	}
	for _, bad := range []string{"", "h:8080", "ftp://h", "https://"} {
		if _, err := New(Options{Server: bad}); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
}

func TestErrorEnvelope(t *testing.T) {
	c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer cfr_a_secret" || r.Header.Get("User-Agent") != "test-agent" {
			t.Errorf("headers %v", r.Header)
		}
		writeJSON(w, http.StatusConflict, envelope("missing_blobs", "the snapshot references 2 blobs the repository lacks",
			map[string]any{protocol.MissingBlobsMetadataKey: []string{"aa", "bb"}}))
	}))
	_, err := c.Commit(context.Background(), "b1", protocol.CommitRequest{RootTree: strings.Repeat("0", 64)})
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err %v (%T), want *Error", err, err)
	}
	if e.Status != 409 || e.Code != "missing_blobs" || e.CorrelationID != "req-1" || len(e.Metadata[protocol.MissingBlobsMetadataKey].([]any)) != 2 {
		t.Errorf("error %+v", e)
	}
	want := "server refused POST /api/v1/agent/backups/b1/commit: the snapshot references 2 blobs the repository lacks (missing_blobs)"
	if e.Error() != want {
		t.Errorf("Error() = %q\nwant      %q", e.Error(), want)
	}
	if !IsCode(err, "missing_blobs") || !IsStatus(err, 409) || IsCode(err, "other") {
		t.Error("IsCode/IsStatus")
	}
}

func TestNonJSONError(t *testing.T) {
	c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, "<html><body>\n<h1>Access   denied</h1></body></html>")
	}))
	err := c.FailBackup(context.Background(), "b1", protocol.FailRequest{State: coffer.JobFailed})
	var e *Error
	if !errors.As(err, &e) || e.Status != 403 || e.Code != "" {
		t.Fatalf("err %v", err)
	}
	for _, s := range []string{"403 Forbidden", "proxy", "<h1>Access denied</h1>"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%q lacks %q", err, s)
		}
	}
}

func TestRetries(t *testing.T) {
	t.Run("503 then success", func(t *testing.T) {
		var n atomic.Int32
		c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var req protocol.HeartbeatRequest
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Hostname != "h" {
				t.Errorf("attempt %d: body %+v, %v", n.Load(), req, err)
			}
			if n.Add(1) < 3 {
				writeJSON(w, 503, envelope("unavailable", "database down", nil))
				return
			}
			writeJSON(w, 200, protocol.HeartbeatResponse{Success: true, HeartbeatSeconds: 7})
		}))
		resp, err := c.Heartbeat(context.Background(), protocol.HeartbeatRequest{MachineInfo: protocol.MachineInfo{Hostname: "h"}})
		if err != nil || resp.HeartbeatSeconds != 7 || n.Load() != 3 {
			t.Fatalf("resp %+v, err %v, attempts %d", resp, err, n.Load())
		}
	})
	t.Run("gives up", func(t *testing.T) {
		var n atomic.Int32
		c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			writeJSON(w, 502, envelope("bad_gateway", "upstream", nil))
		}))
		_, err := c.CheckBlobs(context.Background(), protocol.CheckBlobsRequest{BackupID: "b"})
		if !IsStatus(err, 502) || n.Load() != int32(fastRetry.Attempts) {
			t.Fatalf("err %v after %d attempts", err, n.Load())
		}
	})
	for _, status := range []int{400, 401, 404, 409, 413, 500} {
		t.Run(fmt.Sprintf("no retry on %d", status), func(t *testing.T) {
			var n atomic.Int32
			c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n.Add(1)
				writeJSON(w, status, envelope("some_code", "no", nil))
			}))
			_, err := c.BackupProgress(context.Background(), "b", protocol.BackupProgress{})
			if !IsStatus(err, status) || n.Load() != 1 {
				t.Fatalf("err %v after %d attempts", err, n.Load())
			}
		})
	}
	t.Run("not idempotent", func(t *testing.T) {
		var n atomic.Int32
		c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			writeJSON(w, 503, envelope("unavailable", "down", nil))
		}))
		ctx := context.Background()
		c.Enroll(ctx, protocol.EnrollRequest{Token: "t"})
		c.StartBackup(ctx, protocol.StartBackupRequest{Paths: []string{"/"}})
		c.StartRestore(ctx, protocol.StartRestoreRequest{BackupID: "b"})
		if n.Load() != 3 {
			t.Fatalf("%d requests, want 3 (no retries)", n.Load())
		}
		n.Store(0)
		c.StartBackup(ctx, protocol.StartBackupRequest{BackupID: "b"})
		if n.Load() != int32(fastRetry.Attempts) {
			t.Fatalf("starting a queued backup: %d requests, want %d", n.Load(), fastRetry.Attempts)
		}
	})
	t.Run("Retry-After", func(t *testing.T) {
		var n atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				w.Header().Set("Retry-After", "0")
				writeJSON(w, 429, envelope("rate_limited", "slow down", nil))
				return
			}
			writeJSON(w, 200, protocol.ProgressResponse{Success: true})
		}))
		defer srv.Close()
		// A backoff of an hour: only Retry-After lets the retry come at once.
		c, _ := New(Options{Server: srv.URL, Credential: "c", Retry: Retry{Attempts: 3, Min: time.Hour, Max: time.Hour}})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := c.RestoreProgress(ctx, "r", protocol.RestoreProgress{}); err != nil || n.Load() != 2 {
			t.Fatalf("err %v after %d attempts", err, n.Load())
		}
	})
	t.Run("network error", func(t *testing.T) {
		var n atomic.Int32
		c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close()
				}
				return
			}
			writeJSON(w, 200, protocol.UploadResponse{Success: true, Stored: 2, StoredBytes: 10})
		}))
		resp, err := c.Upload(context.Background(), "b", []byte("frames"))
		if err != nil || resp.Stored != 2 || n.Load() != 2 {
			t.Fatalf("resp %+v, err %v, attempts %d", resp, err, n.Load())
		}
	})
	t.Run("context canceled", func(t *testing.T) {
		c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 503, envelope("unavailable", "down", nil))
		}))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := c.Heartbeat(ctx, protocol.HeartbeatRequest{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v", err)
		}
	})
}

func TestRoutes(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/agent/enroll", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Error("enroll sent a credential")
		}
		// The server rejects unknown fields: the body is exactly the protocol struct.
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		var req protocol.EnrollRequest
		if err := dec.Decode(&req); err != nil || req.Token != "cfr_e_x" || req.OS != "linux" {
			t.Errorf("enroll body %+v %v", req, err)
		}
		writeJSON(w, 201, protocol.EnrollResponse{Client: protocol.AgentClient{ID: "c1", Name: "n"}, Credential: "cfr_a_new"})
	})
	mux.HandleFunc("POST /api/v1/agent/blobs", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Type") != protocol.MediaType || r.URL.Query().Get("backup_id") != "b 1" || string(b) != "xyz" {
			t.Errorf("upload %v %q %q", r.Header, r.URL.RawQuery, b)
		}
		writeJSON(w, 200, protocol.UploadResponse{Success: true, Stored: 1})
	})
	mux.HandleFunc("GET /api/v1/agent/backups", func(w http.ResponseWriter, r *http.Request) {
		type page struct {
			Items      []protocol.BackupSummary `json:"items"`
			Pagination map[string]any           `json:"pagination"`
		}
		if r.URL.Query().Get("cursor") == "" {
			writeJSON(w, 200, page{[]protocol.BackupSummary{{ID: "b2"}}, map[string]any{"cursor": "next1", "total": -1}})
			return
		}
		writeJSON(w, 200, page{[]protocol.BackupSummary{{ID: "b1"}}, map[string]any{"cursor": nil}})
	})
	mux.HandleFunc("GET /api/v1/agent/backups/{id}/tree", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "b1" || r.URL.Query().Get("path") != "home/u" {
			t.Errorf("tree %s", r.URL)
		}
		writeJSON(w, 200, map[string]any{"items": []protocol.TreeEntry{{Name: "a", Type: "file"}}, "total": 1})
	})
	mux.HandleFunc("POST /api/v1/agent/backups/{id}/commit", func(w http.ResponseWriter, r *http.Request) {
		var raw map[string]any
		json.NewDecoder(r.Body).Decode(&raw)
		if errs, ok := raw["errors"].([]any); !ok || len(errs) != 0 {
			t.Errorf("commit sent errors %v, want []", raw["errors"])
		}
		writeJSON(w, 200, map[string]any{"backup": map[string]any{"id": "b1", "state": "partial", "snapshot_id": "s1", "extra": 1}})
	})
	mux.HandleFunc("POST /api/v1/agent/restores/{id}/finish", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"restore": map[string]any{"id": r.PathValue("id"), "state": "succeeded"}})
	})
	mux.HandleFunc("POST /api/v1/agent/fs/{id}", func(w http.ResponseWriter, r *http.Request) {
		var res protocol.ListDirResult
		json.NewDecoder(r.Body).Decode(&res)
		if r.PathValue("id") != "cmd1" || res.Path != "/etc" || len(res.Entries) != 1 {
			t.Errorf("list dir %s %+v", r.URL, res)
		}
		writeJSON(w, 200, map[string]any{"message": "ok", "success": true})
	})
	c := newClient(t, mux)
	ctx := context.Background()

	en, err := c.Enroll(ctx, protocol.EnrollRequest{Token: "cfr_e_x", MachineInfo: protocol.MachineInfo{OS: "linux"}})
	if err != nil || en.Credential != "cfr_a_new" {
		t.Fatalf("enroll %+v %v", en, err)
	}
	if _, err := c.Upload(ctx, "b 1", []byte("xyz")); err != nil {
		t.Fatal(err)
	}
	items, next, err := c.Backups(ctx, "", 10)
	if err != nil || len(items) != 1 || items[0].ID != "b2" || next != "next1" {
		t.Fatalf("backups %+v %q %v", items, next, err)
	}
	items, next, err = c.Backups(ctx, next, 10)
	if err != nil || len(items) != 1 || items[0].ID != "b1" || next != "" {
		t.Fatalf("backups page 2 %+v %q %v", items, next, err)
	}
	entries, err := c.Tree(ctx, "b1", "home/u")
	if err != nil || len(entries) != 1 || entries[0].Name != "a" {
		t.Fatalf("tree %+v %v", entries, err)
	}
	job, err := c.Commit(ctx, "b1", protocol.CommitRequest{})
	if err != nil || job.State != coffer.JobPartial || job.SnapshotID != "s1" {
		t.Fatalf("commit %+v %v", job, err)
	}
	job, err = c.FinishRestore(ctx, "r1", protocol.FinishRestoreRequest{})
	if err != nil || job.ID != "r1" || job.State != coffer.JobSucceeded {
		t.Fatalf("finish %+v %v", job, err)
	}
	err = c.CompleteListDir(ctx, "cmd1", protocol.ListDirResult{Path: "/etc", Entries: []protocol.DirEntry{{Name: "x"}}})
	if err != nil {
		t.Fatal(err)
	}
}

func TestNoCredential(t *testing.T) {
	c, _ := New(Options{Server: "http://127.0.0.1:1"})
	_, err := c.Heartbeat(context.Background(), protocol.HeartbeatRequest{})
	if err == nil || !strings.Contains(err.Error(), "enroll") {
		t.Fatalf("err %v", err)
	}
}

// frames encodes blobs (id → content) as a frame stream, content stored as is.
func frames(t *testing.T, blobs ...[]byte) ([]byte, []blob.ID) {
	t.Helper()
	var buf bytes.Buffer
	var ids []blob.ID
	for _, b := range blobs {
		id := blob.ID{byte(len(ids) + 1)}
		ids = append(ids, id)
		if err := protocol.WriteFrame(&buf, blob.Data, id, len(b), b); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes(), ids
}

func TestReadBlobs(t *testing.T) {
	contents := [][]byte{[]byte("one"), []byte("two"), []byte("three"), []byte("four")}
	_, ids := frames(t, contents...)
	var requests [][]string
	c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req protocol.ReadRequest
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || req.RestoreID != "r1" {
			t.Errorf("read body %+v %v", req, err)
		}
		var asked []string
		asked = append(asked, req.IDs...)
		requests = append(requests, asked)
		w.Header().Set("Content-Type", protocol.MediaType)
		switch len(requests) {
		case 1:
			// Blob 3 first, then an error frame for blob 1, then blob 2 cut short.
			var buf bytes.Buffer
			protocol.WriteFrame(&buf, blob.Data, ids[2], 5, contents[2])
			protocol.WriteErrorFrame(&buf, ids[0], "pack gone")
			protocol.WriteFrame(&buf, blob.Data, ids[1], 3, contents[1])
			w.Write(buf.Bytes()[:buf.Len()-2])
		default:
			// The rest, in reverse order.
			protocol.WriteFrame(w, blob.Data, ids[3], 4, contents[3])
			protocol.WriteFrame(w, blob.Data, ids[1], 3, contents[1])
		}
	}))
	var req protocol.ReadRequest
	req.RestoreID = "r1"
	for _, id := range ids {
		req.IDs = append(req.IDs, id.String())
	}
	got := map[blob.ID]string{}
	err := c.ReadBlobs(context.Background(), req, func(f protocol.Frame) error {
		if _, dup := got[f.ID]; dup {
			t.Errorf("blob %s twice", f.ID.Short())
		}
		got[f.ID] = string(f.Payload) + f.Err
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[blob.ID]string{ids[0]: "pack gone", ids[1]: "two", ids[2]: "three", ids[3]: "four"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	if len(requests) != 2 || len(requests[1]) != 2 || requests[1][0] != ids[1].String() || requests[1][1] != ids[3].String() {
		t.Errorf("requests %v: the retry should ask for blobs 2 and 4 only", requests)
	}

	// fn's error ends the read, unretried.
	requests = nil
	stop := errors.New("stop")
	if err := c.ReadBlobs(context.Background(), req, func(protocol.Frame) error { return stop }); err != stop || len(requests) != 1 {
		t.Errorf("err %v after %d requests", err, len(requests))
	}
}

func TestReadBlobsUnrequested(t *testing.T) {
	c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protocol.WriteFrame(w, blob.Data, blob.ID{9}, 1, []byte("x"))
	}))
	req := protocol.ReadRequest{IDs: []string{blob.ID{1}.String()}}
	err := c.ReadBlobs(context.Background(), req, func(protocol.Frame) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "not asked for") {
		t.Fatalf("err %v", err)
	}
}

func TestBlob(t *testing.T) {
	data, ids := frames(t, []byte("tree bytes"))
	var n atomic.Int32
	c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/api/v1/agent/blobs/") || r.URL.Query().Get("restore_id") != "r1" || r.URL.Query().Get("type") != "tree" {
			t.Errorf("request %s", r.URL)
		}
		if n.Add(1) == 1 {
			w.Write(data[:10]) // truncated: retried
			return
		}
		w.Write(data)
	}))
	f, err := c.Blob(context.Background(), "r1", blob.Tree, ids[0])
	if err != nil || string(f.Payload) != "tree bytes" || f.RawLen != 10 || n.Load() != 2 {
		t.Fatalf("frame %+v, err %v, attempts %d", f, err, n.Load())
	}
	if _, err := c.Blob(context.Background(), "r1", blob.Tree, blob.ID{7}); err == nil || !strings.Contains(err.Error(), "instead") {
		t.Fatalf("wrong blob: err %v", err)
	}
}
