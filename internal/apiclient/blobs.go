package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/protocol"
)

// acceptFrames is the Accept header of the routes that answer with frames
// (their errors still come as JSON).
const acceptFrames = protocol.MediaType + ", application/octet-stream, application/json;q=0.5"

// ReadBlobs reads the blobs req lists (POST /agent/blobs/read) and calls fn
// once per blob, in the order the server sends them, with its frame (whose
// Payload is valid only during the call; a frame with Err set reports a
// blob the server could not read). When the response breaks off, the blobs
// not yet received are asked for again, as for any retry. fn's error ends
// the read and is returned. The caller checks each payload against its id
// (blob.Codec.DecodePayload): the server is not trusted with content.
func (c *Client) ReadBlobs(ctx context.Context, req protocol.ReadRequest, fn func(protocol.Frame) error) error {
	pending := make(map[blob.ID]bool, len(req.IDs))
	for _, h := range req.IDs {
		id, err := blob.ParseID(h)
		if err != nil {
			return fmt.Errorf("read blobs: %w", err)
		}
		pending[id] = true
	}
	remaining := req.IDs
	for attempt := 1; ; attempt++ {
		body, err := json.Marshal(protocol.ReadRequest{RestoreID: req.RestoreID, IDs: remaining})
		if err != nil {
			return fmt.Errorf("read blobs: %w", err)
		}
		r := c.post("/agent/blobs/read", true)
		r.body, r.contentType, r.accept = body, "application/json", acceptFrames
		got := 0
		resp, err := c.send(ctx, r)
		if err == nil {
			got, err = readFrames(r.op(), resp.Body, pending, fn)
			resp.Body.Close()
			if stop, ok := err.(*errStop); ok {
				return stop.err
			}
			if err == nil && len(pending) == 0 {
				return nil
			}
			if err == nil {
				err = &netError{fmt.Errorf("%s: the response ended with %d of %d blobs not sent", r.op(), len(pending), len(req.IDs))}
			}
		}
		if got > 0 {
			attempt = 1 // progress: a flaky connection gets its full retries again
		}
		wait, ok := c.retryable(r, err, attempt)
		if !ok || ctx.Err() != nil {
			return unwrapNet(err)
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
		remaining = slices.DeleteFunc(slices.Clone(remaining), func(h string) bool {
			id, _ := blob.ParseID(h)
			return !pending[id]
		})
	}
}

// errStop carries fn's error out of readFrames unretried.
type errStop struct{ err error }

func (e *errStop) Error() string { return e.err.Error() }

// readFrames passes the frames of body to fn, removing each from pending,
// and returns how many it passed. A broken stream is a *netError (the
// caller retries the rest); a blob that was not asked for is an error.
func readFrames(op string, body io.Reader, pending map[blob.ID]bool, fn func(protocol.Frame) error) (int, error) {
	fr := protocol.NewFrameReader(body)
	n := 0
	for {
		f, err := fr.Read()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, &netError{fmt.Errorf("%s: %w", op, err)}
		}
		if !pending[f.ID] {
			return n, fmt.Errorf("%s: the server sent blob %s, which was not asked for or was sent before", op, f.ID)
		}
		delete(pending, f.ID)
		n++
		if err := fn(f); err != nil {
			return n, &errStop{err}
		}
	}
}

// Blob reads one blob (GET /agent/blobs/{id}) for restore restoreID. The
// returned frame's Payload is the caller's; it is not checked against id
// (blob.Codec.DecodePayload does that).
func (c *Client) Blob(ctx context.Context, restoreID string, t blob.Type, id blob.ID) (protocol.Frame, error) {
	r := request{method: http.MethodGet, path: "/agent/blobs/" + id.String(), retry: true, accept: acceptFrames,
		query: url.Values{"restore_id": {restoreID}, "type": {t.String()}}}
	var out protocol.Frame
	err := c.call(ctx, r, func(resp *http.Response) error {
		b, err := io.ReadAll(io.LimitReader(resp.Body, blob.MaxSize+protocol.FrameHeaderSize+1))
		if err != nil {
			return &netError{fmt.Errorf("%s: read response: %w", r.op(), err)}
		}
		fr := protocol.NewFrameReader(bytes.NewReader(b))
		f, err := fr.Read()
		if err == io.EOF {
			err = errors.New("empty response")
		}
		if err != nil {
			return &netError{fmt.Errorf("%s: %w", r.op(), err)}
		}
		if f.ID != id {
			return fmt.Errorf("%s: the server sent blob %s instead", r.op(), f.ID)
		}
		if f.Err != "" {
			return fmt.Errorf("%s: the server could not read the blob: %s", r.op(), f.Err)
		}
		out = f // fr is read no more: its buffer, and so the payload, is ours
		return nil
	})
	return out, err
}
