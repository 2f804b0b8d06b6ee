package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cofferhq/coffer/internal/engine/blob"
)

// Blobs travel in frames, back to back, in the bodies of POST
// /api/v1/agent/blobs (agent → server) and POST /api/v1/agent/blobs/read
// (server → agent):
//
//	type     1 byte   1 data, 2 tree (blob.Type)
//	id      32 bytes  the blob id
//	raw      4 bytes  big-endian plaintext length
//	length   4 bytes  big-endian payload length
//	payload  length bytes: zstd-compressed plaintext when length < raw,
//	         else the plaintext itself (length == raw)
//
// The receiver decompresses, re-hashes and compares with id before trusting
// a frame (Frame.Verify). A read response may carry a failure instead of a
// blob: type 0xFF, then the id, raw 0, and a UTF-8 message as payload.

// FrameHeaderSize is the size of a frame's fixed part.
const FrameHeaderSize = 1 + blob.IDSize + 4 + 4

// errorFrame is the type byte of a frame that reports a failed blob.
const errorFrame = 0xFF

// MediaType is the content type of a frame stream.
const MediaType = "application/vnd.coffer.blobs"

// Frame is one blob on the wire.
type Frame struct {
	Type    blob.Type
	ID      blob.ID
	RawLen  int
	Payload []byte // valid until the next Read
	// Err is set (and Payload empty) for a failed blob in a read response.
	Err string
}

// WriteFrame writes one frame.
func WriteFrame(w io.Writer, t blob.Type, id blob.ID, rawLen int, payload []byte) error {
	if len(payload) > rawLen || rawLen > blob.MaxSize {
		return fmt.Errorf("frame %s: payload %d bytes for plaintext %d", id.Short(), len(payload), rawLen)
	}
	var h [FrameHeaderSize]byte
	h[0] = byte(t)
	copy(h[1:], id[:])
	binary.BigEndian.PutUint32(h[1+blob.IDSize:], uint32(rawLen))
	binary.BigEndian.PutUint32(h[1+blob.IDSize+4:], uint32(len(payload)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// WriteErrorFrame writes a frame saying blob id could not be read.
func WriteErrorFrame(w io.Writer, id blob.ID, msg string) error {
	if len(msg) > 4096 {
		msg = msg[:4096]
	}
	var h [FrameHeaderSize]byte
	h[0] = errorFrame
	copy(h[1:], id[:])
	binary.BigEndian.PutUint32(h[1+blob.IDSize+4:], uint32(len(msg)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := io.WriteString(w, msg)
	return err
}

// ErrBadFrame marks a malformed frame stream.
var ErrBadFrame = errors.New("malformed blob frame")

// FrameReader reads frames from a stream.
type FrameReader struct {
	r   *bufio.Reader
	buf []byte
}

// NewFrameReader returns a reader of the frames in r.
func NewFrameReader(r io.Reader) *FrameReader {
	return &FrameReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// Reset makes fr read from r, keeping its buffers.
func (fr *FrameReader) Reset(r io.Reader) { fr.r.Reset(r) }

// Read returns the next frame, io.EOF after the last, or an error
// matching ErrBadFrame. The frame's Payload is valid until the next call.
func (fr *FrameReader) Read() (Frame, error) {
	var h [FrameHeaderSize]byte
	if _, err := io.ReadFull(fr.r, h[:]); err != nil {
		if err == io.EOF {
			return Frame{}, io.EOF
		}
		return Frame{}, fmt.Errorf("%w: truncated header: %v", ErrBadFrame, err)
	}
	var f Frame
	copy(f.ID[:], h[1:])
	raw := binary.BigEndian.Uint32(h[1+blob.IDSize:])
	n := binary.BigEndian.Uint32(h[1+blob.IDSize+4:])
	if h[0] == errorFrame {
		if n > 4096 {
			return Frame{}, fmt.Errorf("%w: error message of %d bytes", ErrBadFrame, n)
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(fr.r, msg); err != nil {
			return Frame{}, fmt.Errorf("%w: truncated error frame: %v", ErrBadFrame, err)
		}
		f.Err = string(msg)
		return f, nil
	}
	f.Type = blob.Type(h[0])
	if !f.Type.Valid() {
		return Frame{}, fmt.Errorf("%w: unknown blob type %d", ErrBadFrame, h[0])
	}
	if raw > blob.MaxSize || n > raw {
		return Frame{}, fmt.Errorf("%w: blob %s: payload %d bytes for plaintext %d (max %d)", ErrBadFrame, f.ID.Short(), n, raw, blob.MaxSize)
	}
	f.RawLen = int(raw)
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, n)
	}
	f.Payload = fr.buf[:n]
	if _, err := io.ReadFull(fr.r, f.Payload); err != nil {
		return Frame{}, fmt.Errorf("%w: blob %s truncated: %v", ErrBadFrame, f.ID.Short(), err)
	}
	return f, nil
}
