package apiclient

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/protocol"
)

// Enroll exchanges a one-time enrollment token for a client credential
// (POST /agent/enroll). It needs no credential and is never retried: the
// token works once.
func (c *Client) Enroll(ctx context.Context, req protocol.EnrollRequest) (*protocol.EnrollResponse, error) {
	var out protocol.EnrollResponse
	err := c.callJSON(ctx, request{method: http.MethodPost, path: "/agent/enroll", noAuth: true}, req, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Heartbeat reports that the agent is alive, with its machine and its
// running jobs.
func (c *Client) Heartbeat(ctx context.Context, req protocol.HeartbeatRequest) (*protocol.HeartbeatResponse, error) {
	var out protocol.HeartbeatResponse
	if err := c.callJSON(ctx, c.post("/agent/heartbeat", true), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CompleteListDir answers a list_dir command (POST /agent/fs/{request_id}).
func (c *Client) CompleteListDir(ctx context.Context, requestID string, res protocol.ListDirResult) error {
	return c.callJSON(ctx, c.post("/agent/fs/"+url.PathEscape(requestID), true), res, nil)
}

// StartBackup starts a backup: the queued one req.BackupID names (retried:
// starting it twice is refused, not duplicated), or an ad-hoc one (not
// retried: each call creates a backup).
func (c *Client) StartBackup(ctx context.Context, req protocol.StartBackupRequest) (*protocol.StartBackupResponse, error) {
	var out protocol.StartBackupResponse
	if err := c.callJSON(ctx, c.post("/agent/backups", req.BackupID != ""), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CheckBlobs returns which of req.IDs the repository lacks.
func (c *Client) CheckBlobs(ctx context.Context, req protocol.CheckBlobsRequest) (*protocol.CheckBlobsResponse, error) {
	var out protocol.CheckBlobsResponse
	if err := c.callJSON(ctx, c.post("/agent/blobs/check", true), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Upload sends blob frames (protocol.WriteFrame, back to back) for backup
// backupID. Every blob is stored when it returns; sending the same frames
// again stores nothing twice.
func (c *Client) Upload(ctx context.Context, backupID string, frames []byte) (protocol.UploadResponse, error) {
	var out protocol.UploadResponse
	r := c.post("/agent/blobs", true)
	r.query = url.Values{"backup_id": {backupID}}
	r.body, r.contentType = frames, protocol.MediaType
	err := c.callJSON(ctx, r, nil, &out)
	return out, err
}

// BackupProgress reports a running backup's progress. A response with
// Cancel set means the backup was canceled on the server.
func (c *Client) BackupProgress(ctx context.Context, backupID string, p protocol.BackupProgress) (*protocol.ProgressResponse, error) {
	var out protocol.ProgressResponse
	if err := c.callJSON(ctx, c.post("/agent/backups/"+url.PathEscape(backupID)+"/progress", true), p, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Job is what the agent reads of a backup or restore the server returns.
type Job struct {
	ID         string          `json:"id"`
	State      coffer.JobState `json:"state"`
	SnapshotID string          `json:"snapshot_id,omitempty"`
}

// Commit finishes a backup with its root tree and returns the backup as
// the server recorded it (succeeded or partial). An *Error with code
// "missing_blobs" lists in Metadata[protocol.MissingBlobsMetadataKey]
// blobs the snapshot references that the repository lacks.
func (c *Client) Commit(ctx context.Context, backupID string, req protocol.CommitRequest) (*Job, error) {
	var out struct {
		Backup *Job `json:"backup"`
	}
	if req.Errors == nil {
		req.Errors = []coffer.PathError{}
	}
	if err := c.callJSON(ctx, c.post("/agent/backups/"+url.PathEscape(backupID)+"/commit", true), req, &out); err != nil {
		return nil, err
	}
	if out.Backup == nil {
		return nil, fmt.Errorf("commit backup %s: the server's answer has no backup", backupID)
	}
	return out.Backup, nil
}

// FailBackup ends a backup as failed or canceled.
func (c *Client) FailBackup(ctx context.Context, backupID string, req protocol.FailRequest) error {
	return c.callJSON(ctx, c.post("/agent/backups/"+url.PathEscape(backupID)+"/fail", true), req, nil)
}

// Backups returns a page of this client's backups, newest first, and the
// cursor of the next page ("" after the last). pageSize 0 takes the
// server's default.
func (c *Client) Backups(ctx context.Context, cursor string, pageSize int) ([]protocol.BackupSummary, string, error) {
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if pageSize > 0 {
		q.Set("page_size", strconv.Itoa(pageSize))
	}
	var out struct {
		Items      []protocol.BackupSummary `json:"items"`
		Pagination struct {
			Cursor *string `json:"cursor"`
		} `json:"pagination"`
	}
	r := request{method: http.MethodGet, path: "/agent/backups", query: q, retry: true}
	if err := c.callJSON(ctx, r, nil, &out); err != nil {
		return nil, "", err
	}
	next := ""
	if out.Pagination.Cursor != nil {
		next = *out.Pagination.Cursor
	}
	return out.Items, next, nil
}

// Tree lists the directory at path (slash-separated, relative to the
// backup's root; "" for the root) in one of this client's backups.
func (c *Client) Tree(ctx context.Context, backupID, path string) ([]protocol.TreeEntry, error) {
	var out struct {
		Items []protocol.TreeEntry `json:"items"`
	}
	r := request{method: http.MethodGet, path: "/agent/backups/" + url.PathEscape(backupID) + "/tree", retry: true}
	if path != "" {
		r.query = url.Values{"path": {path}}
	}
	if err := c.callJSON(ctx, r, nil, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}

// StartRestore starts a restore: the queued one req.RestoreID names
// (retried), or a new one of req.BackupID to this machine (not retried).
func (c *Client) StartRestore(ctx context.Context, req protocol.StartRestoreRequest) (*protocol.StartRestoreResponse, error) {
	var out protocol.StartRestoreResponse
	if err := c.callJSON(ctx, c.post("/agent/restores", req.RestoreID != ""), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RestoreProgress reports a running restore's progress.
func (c *Client) RestoreProgress(ctx context.Context, restoreID string, p protocol.RestoreProgress) (*protocol.ProgressResponse, error) {
	var out protocol.ProgressResponse
	if err := c.callJSON(ctx, c.post("/agent/restores/"+url.PathEscape(restoreID)+"/progress", true), p, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// FinishRestore ends a restore that ran to its end; the server records it
// succeeded, or partial when req lists errors. The returned job is nil when
// the server's answer does not include the restore.
func (c *Client) FinishRestore(ctx context.Context, restoreID string, req protocol.FinishRestoreRequest) (*Job, error) {
	var out struct {
		Restore *Job `json:"restore"`
	}
	if req.Errors == nil {
		req.Errors = []coffer.PathError{}
	}
	if err := c.callJSON(ctx, c.post("/agent/restores/"+url.PathEscape(restoreID)+"/finish", true), req, &out); err != nil {
		return nil, err
	}
	return out.Restore, nil
}

// FailRestore ends a restore as failed or canceled.
func (c *Client) FailRestore(ctx context.Context, restoreID string, req protocol.FailRequest) error {
	return c.callJSON(ctx, c.post("/agent/restores/"+url.PathEscape(restoreID)+"/fail", true), req, nil)
}

// Locate returns where the repository keeps the indexed ids among req.IDs.
func (c *Client) Locate(ctx context.Context, req protocol.LocateRequest) ([]protocol.BlobLocation, error) {
	var out protocol.LocateResponse
	if err := c.callJSON(ctx, c.post("/agent/blobs/locate", true), req, &out); err != nil {
		return nil, err
	}
	return out.Locations, nil
}

func (c *Client) post(path string, retry bool) request {
	return request{method: http.MethodPost, path: path, retry: retry}
}

// ShipLogs sends a batch of the agent's log lines (POST /agent/logs). It
// is not retried: the caller keeps the batch and sends it again later, so
// a batch whose answer was lost may be stored twice.
func (c *Client) ShipLogs(ctx context.Context, batch protocol.LogBatch) (*protocol.LogBatchResponse, error) {
	var out protocol.LogBatchResponse
	if err := c.callJSON(ctx, c.post("/agent/logs", false), batch, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
