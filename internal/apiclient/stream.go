package apiclient

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cofferhq/coffer/internal/protocol"
)

// StreamIdleTimeout is how long a command stream may stay silent (no
// event, no heartbeat comment) before the client takes the connection for
// dead and closes it.
const StreamIdleTimeout = 2 * time.Minute

// errIdle ends a stream that stayed silent too long.
var errIdle = fmt.Errorf("command stream: nothing received for %s: taking the connection for dead", StreamIdleTimeout)

// maxEventSize bounds one server-sent event.
const maxEventSize = 1 << 20

// ErrStreamClosed is returned by CommandStream.Next when the server ended
// the stream; the caller connects again.
var ErrStreamClosed = errors.New("the server closed the command stream")

// CommandStream is an open GET /agent/stream: server-sent events named
// "command" whose data is a protocol.Command. It is not safe for
// concurrent use.
type CommandStream struct {
	c      *Client
	body   io.ReadCloser
	r      *bufio.Reader
	cancel context.CancelCauseFunc
	idle   *time.Timer
	ctx    context.Context
}

// MalformedEventError is a command event whose data is not a command; the
// stream stays usable.
type MalformedEventError struct {
	Data string
	Err  error
}

// Error describes the event, shortened.
func (e *MalformedEventError) Error() string {
	return fmt.Sprintf("command stream: ignoring a malformed command event (%v): %.200s", e.Err, e.Data)
}

// Unwrap returns the decoding error.
func (e *MalformedEventError) Unwrap() error { return e.Err }

// OpenStream connects to the command stream. Not retried: the caller
// reconnects with its own backoff. On a reconnection it sends the id of
// the last event received as Last-Event-ID.
func (c *Client) OpenStream(ctx context.Context) (*CommandStream, error) {
	sctx, cancel := context.WithCancelCause(ctx)
	r := request{method: http.MethodGet, path: "/agent/stream", accept: "text/event-stream"}
	c.mu.Lock()
	if c.lastEventID != "" {
		r.header = http.Header{"Last-Event-Id": {c.lastEventID}}
	}
	c.mu.Unlock()
	resp, err := c.send(sctx, r)
	if err != nil {
		cancel(nil)
		return nil, unwrapNet(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		resp.Body.Close()
		cancel(nil)
		return nil, fmt.Errorf("%s: the server answered with %q, not an event stream (is a proxy in the way?)", r.op(), ct)
	}
	s := &CommandStream{c: c, body: resp.Body, r: bufio.NewReaderSize(resp.Body, 16<<10), cancel: cancel, ctx: sctx}
	s.idle = time.AfterFunc(StreamIdleTimeout, func() { cancel(errIdle) })
	return s, nil
}

// Close ends the stream.
func (s *CommandStream) Close() error {
	s.idle.Stop()
	s.cancel(nil)
	return s.body.Close()
}

// Next returns the next command. It returns ErrStreamClosed when the
// server ends the stream, a *MalformedEventError (the stream goes on) for
// a command it cannot decode, an *Error with status 401 when the server
// says the credential is no longer valid, and the connection's error
// otherwise (a silent stream is cut after StreamIdleTimeout).
func (s *CommandStream) Next() (protocol.Command, error) {
	var event, id string
	var data strings.Builder
	hasID := false
	for {
		line, err := s.readLine()
		if err != nil {
			if cause := context.Cause(s.ctx); cause != nil {
				return protocol.Command{}, cause
			}
			if err == io.EOF {
				return protocol.Command{}, ErrStreamClosed
			}
			return protocol.Command{}, fmt.Errorf("command stream: %w", err)
		}
		s.idle.Reset(StreamIdleTimeout)
		if line == "" { // dispatch
			if hasID {
				s.c.mu.Lock()
				s.c.lastEventID = id
				s.c.mu.Unlock()
			}
			ev, d := event, strings.TrimSuffix(data.String(), "\n")
			event, hasID = "", false
			data.Reset()
			switch {
			case ev == "unauthorized":
				return protocol.Command{}, &Error{Status: http.StatusUnauthorized, Code: "unauthorized", op: "GET /api/v1/agent/stream",
					Detail: "the server ended the command stream: the credential is no longer valid (was the client deleted?)"}
			case ev != "command" || d == "":
				continue
			}
			var cmd protocol.Command
			if err := json.Unmarshal([]byte(d), &cmd); err != nil {
				return protocol.Command{}, &MalformedEventError{Data: d, Err: err}
			}
			return cmd, nil
		}
		if strings.HasPrefix(line, ":") {
			continue // a comment: the server's heartbeat
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			event = value
		case "data":
			if data.Len()+len(value) > maxEventSize {
				return protocol.Command{}, fmt.Errorf("command stream: an event exceeds %d bytes", maxEventSize)
			}
			data.WriteString(value)
			data.WriteByte('\n')
		case "id":
			if !strings.ContainsRune(value, 0) {
				id, hasID = value, true
			}
		}
	}
}

// readLine returns one line without its end (LF, CRLF or CR-LF).
func (s *CommandStream) readLine() (string, error) {
	var b []byte
	for {
		chunk, err := s.r.ReadSlice('\n')
		b = append(b, chunk...)
		if len(b) > maxEventSize {
			return "", fmt.Errorf("a line exceeds %d bytes", maxEventSize)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(b) > 0 {
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
		line := strings.TrimSuffix(string(b[:len(b)-1]), "\r")
		return line, nil
	}
}

// Stream connects to the command stream and calls fn with each command
// until the stream ends, ctx ends, or fn fails; it returns why (see
// CommandStream.Next), skipping malformed events. The caller reconnects.
func (c *Client) Stream(ctx context.Context, fn func(protocol.Command) error) error {
	s, err := c.OpenStream(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	for {
		cmd, err := s.Next()
		var me *MalformedEventError
		if errors.As(err, &me) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if err := fn(cmd); err != nil {
			return err
		}
	}
}
