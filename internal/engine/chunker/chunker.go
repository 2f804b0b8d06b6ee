package chunker

import (
	"fmt"
	"io"

	cdc "github.com/PlakarKorp/go-cdc-chunkers"
	_ "github.com/PlakarKorp/go-cdc-chunkers/chunkers/fastcdc" // registers "fastcdc-v1.0.0"
)

// Algorithm names the function from (Params, input) to chunk boundaries that
// this package implements. A repository config records it next to Params; a
// different algorithm means a new repository format version.
const Algorithm = "fastcdc-v1.0.0"

// Chunker splits one stream into content-defined chunks. It reads ahead at
// most BufferSize(p) bytes, so memory is bounded whatever the stream's size.
// A Chunker is not safe for concurrent use; run one per goroutine and Reset
// it between files to reuse its buffer.
type Chunker struct {
	c   *cdc.Chunker
	p   Params
	err error // sticky: io.EOF after the last chunk, or the reader's error
}

// BufferSize returns the buffer size New allocates for p: 2×Max. Any buffer
// of at least p.Max bytes works (see NewBuffer); the extra room lets the
// chunker refill in larger reads and move less data.
func BufferSize(p Params) int { return 2 * p.Max }

// New returns a Chunker reading r with its own buffer of BufferSize(p)
// bytes. It fails when p is not valid (see Params.Validate).
func New(r io.Reader, p Params) (*Chunker, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return newChunker(r, p, make([]byte, BufferSize(p)))
}

// NewBuffer is New with a buffer supplied by the caller, at least p.Max bytes
// long, for callers that pool buffers across chunkers. The Chunker owns buf
// until the caller stops using the Chunker; chunks returned by Next alias it.
func NewBuffer(r io.Reader, p Params, buf []byte) (*Chunker, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return newChunker(r, p, buf)
}

// newChunker skips the repository bounds of Params.Validate, so tests can
// use small parameters.
func newChunker(r io.Reader, p Params, buf []byte) (*Chunker, error) {
	if err := p.validShape(); err != nil {
		return nil, err
	}
	if len(buf) < p.Max {
		return nil, fmt.Errorf("chunker buffer of %d bytes: need at least max (%d)", len(buf), p.Max)
	}
	opts := &cdc.ChunkerOpts{MinSize: p.Min, NormalSize: p.Avg, MaxSize: p.Max}
	c, err := cdc.NewChunkerBuffer(Algorithm, r, opts, buf)
	if err != nil {
		return nil, fmt.Errorf("chunker %s %s: %w", Algorithm, p, err)
	}
	return &Chunker{c: c, p: p}, nil
}

// Params returns the parameters the Chunker cuts with.
func (c *Chunker) Params() Params { return c.p }

// Reset makes the Chunker read a new stream from r, keeping its parameters
// and buffer. Chunks returned before are invalid afterwards.
func (c *Chunker) Reset(r io.Reader) {
	c.c.Reset(r)
	c.err = nil
}

// Next returns the next chunk of the stream, or io.EOF after the last one.
// Every chunk is non-empty and at most Max bytes long; every chunk but the
// last is at least Min bytes long. An empty stream has no chunks. An error
// from the reader is returned unchanged, and again by every later call.
//
// The returned slice aliases the Chunker's buffer and is valid only until
// the next call to Next or Reset: hash it, or copy it (for example into a
// pooled buffer) before handing it to another goroutine. This is what keeps
// chunking free of per-chunk allocations.
func (c *Chunker) Next() ([]byte, error) {
	if c.err != nil {
		return nil, c.err
	}
	chunk, err := c.c.Next()
	switch {
	case err == nil:
		return chunk, nil
	case err == io.EOF:
		// The library returns the last chunk together with io.EOF when it
		// is shorter than Min, and a trailing empty chunk for an empty
		// stream; callers see each chunk with a nil error, then io.EOF.
		c.err = io.EOF
		if len(chunk) > 0 {
			return chunk, nil
		}
		return nil, io.EOF
	default:
		c.err = err
		return nil, err
	}
}
