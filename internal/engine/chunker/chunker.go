package chunker

import (
	"fmt"
	"io"
	"math/bits"

	"github.com/PlakarKorp/go-cdc-chunkers/chunkers/fastcdc"
)

// Algorithm names the function from (Params, input) to chunk boundaries that
// this package implements. A repository config records it next to Params; a
// different algorithm means a new repository format version.
const Algorithm = "fastcdc-v1.0.0"

// gear is the table of the Gear rolling hash: the one of
// github.com/PlakarKorp/go-cdc-chunkers (copied by value here, so nothing
// else in the process can change it), which defines Algorithm.
var gear = fastcdc.G

// Chunker splits one stream into content-defined chunks. It reads ahead at
// most len(buffer) bytes, so memory is bounded whatever the stream's size.
// A Chunker is not safe for concurrent use; run one per goroutine and Reset
// it between files to reuse its buffer.
type Chunker struct {
	p            Params
	maskS, maskL uint64 // cut masks before and after Avg bytes

	src  io.Reader
	buf  []byte
	r, w int   // unconsumed data is buf[r:w]
	cut  int   // length of the chunk the last Next returned, consumed by the next
	rerr error // the reader's error (io.EOF at the end), once it returned one
	err  error // sticky: io.EOF after the last chunk, or the reader's error
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
	c := &Chunker{p: p, buf: buf}
	c.maskS, c.maskL = masks(p)
	c.Reset(r)
	return c, nil
}

// masks returns the cut masks of normalized FastCDC (level 2) for p: a
// chunk shorter than Avg ends where the rolling hash has log2(Avg)+2 chosen
// bits zero, a longer one where log2(Avg)-2 of them are, which pulls chunk
// lengths towards Avg. The bits are spread evenly from the top of the word.
// (The library keeps fixed masks for its own defaults, 2/8/64 KiB, which
// only tests can ask for here.)
func masks(p Params) (maskS, maskL uint64) {
	if p == (Params{Min: 2 << 10, Avg: 8 << 10, Max: 64 << 10}) {
		return 0x0003590703530000, 0x0000d90003530000
	}
	const level = 2
	avgBits := bits.TrailingZeros(uint(p.Avg)) // Avg is a power of two
	return spacedMask(avgBits + level), spacedMask(avgBits - level)
}

// spacedMask returns a 64-bit mask of ones bits spaced 64/ones apart,
// starting at the top bit.
func spacedMask(ones int) uint64 {
	if ones >= 64 {
		return ^uint64(0)
	}
	if ones <= 0 {
		return 0
	}
	var mask uint64
	step := 64 / ones
	for i := range ones {
		mask |= 1 << (63 - i*step)
	}
	return mask
}

// Params returns the parameters the Chunker cuts with.
func (c *Chunker) Params() Params { return c.p }

// Reset makes the Chunker read a new stream from r, keeping its parameters
// and buffer. Chunks returned before are invalid afterwards.
func (c *Chunker) Reset(r io.Reader) {
	c.src = r
	c.r, c.w, c.cut = 0, 0, 0
	c.rerr, c.err = nil, nil
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
	c.r += c.cut
	c.cut = 0
	if c.w-c.r < c.p.Max && c.rerr == nil {
		c.fill()
	}
	n := min(c.w-c.r, c.p.Max)
	if n < c.p.Max && c.rerr != io.EOF {
		// A read error before the end of the stream: what is buffered
		// would be a wrong last chunk.
		c.err = c.rerr
		return nil, c.err
	}
	if n == 0 {
		c.err = io.EOF
		return nil, c.err
	}
	data := c.buf[c.r : c.r+n]
	c.cut = cutPoint(data, c.p.Min, c.p.Avg, c.maskS, c.maskL)
	return data[:c.cut], nil
}

// maxEmptyReads bounds how many (0, nil) reads in a row fill accepts before
// it gives up with io.ErrNoProgress, as bufio.Reader does.
const maxEmptyReads = 100

// fill reads until Max bytes are buffered or the reader returns an error
// (io.EOF included), first moving the unconsumed bytes to the front of the
// buffer when fewer than Max bytes of room are left after them.
func (c *Chunker) fill() {
	if len(c.buf)-c.r < c.p.Max {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	for empty := 0; c.w-c.r < c.p.Max; {
		m, err := c.src.Read(c.buf[c.w:])
		c.w += m
		if err != nil {
			c.rerr = err
			return
		}
		if m > 0 {
			empty = 0
		} else if empty++; empty >= maxEmptyReads {
			c.rerr = io.ErrNoProgress
			return
		}
	}
}

// cutPoint returns the length of the chunk at the start of data, which
// holds at most Max bytes: all of it when it is no longer than min;
// otherwise the first position from min on where the Gear hash of the bytes
// from min has the bits of maskS (before avg) or maskL (from avg) all zero;
// all of it if there is none.
func cutPoint(data []byte, min, avg int, maskS, maskL uint64) int {
	n := len(data)
	if n <= min {
		return n
	}
	normal := avg
	if n < normal {
		normal = n
	}
	i, fp, found := scan(&gear, data[:normal], min, 0, maskS)
	if !found {
		i, _, found = scan(&gear, data, normal, fp, maskL)
	}
	if !found {
		return n
	}
	return i
}

// scan rolls the Gear hash fp over data from position i on and returns the
// first position whose byte leaves the bits of mask all zero, with found
// set; or len(data) and the hash so far. It is the hot loop of a backup:
// each step is fp = fp<<1 + g[byte], a chain of two dependent operations a
// byte, so it takes two bytes at a time, fp<<2 + (g[b0]<<1 + g[b1]), which
// halves the chain, and checks the hash after the first byte off the chain.
func scan(g *[256]uint64, data []byte, i int, fp, mask uint64) (int, uint64, bool) {
	for ; i+4 <= len(data); i += 4 {
		b := data[i : i+4 : i+4]
		g0, g2 := g[b[0]], g[b[2]]
		fp1 := fp<<1 + g0
		fp2 := fp<<2 + (g0<<1 + g[b[1]])
		fp3 := fp2<<1 + g2
		fp4 := fp2<<2 + (g2<<1 + g[b[3]])
		if fp1&mask == 0 {
			return i, fp1, true
		}
		if fp2&mask == 0 {
			return i + 1, fp2, true
		}
		if fp3&mask == 0 {
			return i + 2, fp3, true
		}
		if fp4&mask == 0 {
			return i + 3, fp4, true
		}
		fp = fp4
	}
	for ; i < len(data); i++ {
		if fp = fp<<1 + g[data[i]]; fp&mask == 0 {
			return i, fp, true
		}
	}
	return i, fp, false
}
