package chunker

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The generators below make deterministic test and benchmark inputs. The
// "text" and "mixed" kinds are shaped like the reference corpus of
// shared/bench/gendata (source-like text, log lines, database pages,
// semi-compressible binaries, incompressible media) so that benchmarks see
// the low-entropy data a backup mostly chunks, not only random bytes.

// randomData returns n pseudo-random bytes determined by seed.
func randomData(n int, seed uint64) []byte {
	b := make([]byte, n)
	fillRandom(rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)), b)
	return b
}

func fillRandom(r *rand.Rand, b []byte) {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for v := r.Uint64(); i < len(b); i++ {
		b[i] = byte(v)
		v >>= 8
	}
}

// textData returns n bytes of source-like text and log lines, half and half
// in segments of 64 KiB to 4 MiB.
func textData(n int, seed uint64) []byte {
	g := newCorpusGen(seed)
	b := make([]byte, 0, n+64<<10)
	for len(b) < n {
		seg := len(b) + g.logUniform(64<<10, 4<<20)
		line := g.textLine
		if g.r.IntN(2) == 0 {
			line = g.logLine
		}
		for len(b) < seg && len(b) < n {
			b = line(b)
		}
	}
	return b[:n]
}

// mixedData returns n bytes shaped like the reference corpus by bytes:
// segments of 128 KiB to 16 MiB (its medium and large files), of which about
// 35 % random, 22 % text, 13 % logs, 15 % database pages and 15 %
// semi-compressible binary.
func mixedData(n int, seed uint64) []byte {
	g := newCorpusGen(seed)
	b := make([]byte, 0, n+64<<10)
	for len(b) < n {
		seg := len(b) + g.logUniform(128<<10, 16<<20)
		var next func([]byte) []byte
		switch v := g.r.IntN(100); {
		case v < 35:
			next = g.randomBlock
		case v < 57:
			next = g.textLine
		case v < 70:
			next = g.logLine
		case v < 85:
			next = g.dbPage
		default:
			next = g.binBlock
		}
		for len(b) < seg && len(b) < n {
			b = next(b)
		}
	}
	return b[:n]
}

var (
	vocab = strings.Fields(`func return if else for range var const type struct interface package import
map string int int64 uint32 byte bool error nil true false err ctx := = == != <= >= + - * / && ||
( ) { } [ ] , . ; the a of to and in is that it as with be on not this by are or from at which but
have an they you were their one all we can has there been more when will would who so no time data
file path buffer size count index value key result config server client request response handler
context logger message payload chunk hash store repo snapshot tree blob pack read write open close`)
	syllables = strings.Fields(`get set buf cnt idx val key res cfg srv cli req resp hdl ctx log msg
load save parse emit walk scan push pop next prev head tail node list item elem data meta info
Alpha Beta Gamma Delta Store Index Cache Queue Pool Batch Stream Reader Writer Chunk Block Tree`)
	components = strings.Fields(`api scheduler storage indexer http grpc db cache auth worker uploader gc`)
	levels     = []string{"DEBUG", "INFO ", "INFO ", "INFO ", "INFO ", "WARN ", "ERROR"}
	opcodes    = []byte{0x00, 0x48, 0x89, 0x8b, 0xe8, 0xff, 0x0f, 0x85, 0x84, 0xc3, 0x24, 0x44, 0x01, 0x74, 0xeb, 0x4c}
)

type corpusGen struct {
	r      *rand.Rand
	idents []string
	ts     int64
	page   uint64
	ctr    uint64
}

func newCorpusGen(seed uint64) *corpusGen {
	g := &corpusGen{r: rand.New(rand.NewPCG(seed, 0x5eed)), ts: 1_700_000_000_000}
	for range 12 + g.r.IntN(24) {
		g.idents = append(g.idents, syllables[g.r.IntN(len(syllables))]+syllables[g.r.IntN(len(syllables))])
	}
	return g
}

func (g *corpusGen) logUniform(lo, hi int) int {
	l, h := math.Log(float64(lo)), math.Log(float64(hi))
	return int(math.Exp(l + g.r.Float64()*(h-l)))
}

func (g *corpusGen) word() string {
	if g.r.IntN(10) < 3 {
		return g.idents[g.r.IntN(len(g.idents))]
	}
	return vocab[g.r.IntN(len(vocab))]
}

func (g *corpusGen) textLine(b []byte) []byte {
	v := g.r.Uint64()
	for range v % 4 {
		b = append(b, '\t')
	}
	switch (v >> 8) % 16 {
	case 0:
		return append(b, '\n')
	case 1, 2:
		b = append(b, "// "...)
	case 3:
		b = append(b, g.idents[int(v>>20)%len(g.idents)]...)
		b = append(b, " := "...)
		b = strconv.AppendUint(b, (v>>24)%100000, 10)
		b = append(b, " + "...)
	}
	for i := range 3 + int((v>>16)%8) {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, g.word()...)
	}
	switch (v >> 32) % 5 {
	case 0:
		b = append(b, " {"...)
	case 1:
		b = append(b, ')')
	}
	return append(b, '\n')
}

func (g *corpusGen) logLine(b []byte) []byte {
	v := g.r.Uint64()
	g.ts += int64(v % 250)
	b = time.UnixMilli(g.ts).UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z ")
	b = append(b, levels[(v>>8)%uint64(len(levels))]...)
	b = append(b, " ["...)
	b = append(b, components[(v>>12)%uint64(len(components))]...)
	b = append(b, "] "...)
	for range 3 + int((v>>16)%7) {
		b = append(b, vocab[g.r.IntN(len(vocab))]...)
		b = append(b, ' ')
	}
	b = append(b, "req_id="...)
	b = strconv.AppendUint(b, (v>>20)&0xffffff, 16)
	b = append(b, " latency="...)
	b = strconv.AppendUint(b, (v>>44)%5000, 10)
	b = append(b, "ms\n"...)
	return b
}

// dbPage appends one 8 KiB database-like page: a header, rows, zero padding.
func (g *corpusGen) dbPage(b []byte) []byte {
	start := len(b)
	g.page++
	b = binary.LittleEndian.AppendUint64(b, g.page)
	b = binary.LittleEndian.AppendUint64(b, g.r.Uint64())
	for fill := 4096 + g.r.IntN(3000); len(b)-start < fill; {
		g.ctr++
		b = binary.LittleEndian.AppendUint64(b, g.ctr)
		b = binary.LittleEndian.AppendUint32(b, uint32(g.r.IntN(1000)))
		w := vocab[g.r.IntN(len(vocab))]
		b = append(b, byte(len(w)))
		b = append(b, w...)
		b = append(b, g.idents[g.r.IntN(len(g.idents))]...)
		b = append(b, 0)
	}
	b = append(b, make([]byte, 8192)...)
	return b[:start+8192]
}

// binBlock appends one 4 KiB block of executable-like binary.
func (g *corpusGen) binBlock(b []byte) []byte {
	start := len(b)
	b = append(b, make([]byte, 4096)...)
	blk := b[start:]
	switch v := g.r.IntN(20); {
	case v < 7:
		fillRandom(g.r, blk)
	case v < 10: // zero padding
	case v < 15: // machine-code-like: a skewed small alphabet with noise
		for i := range blk {
			if x := g.r.Uint32(); x&7 == 0 {
				blk[i] = byte(x >> 3)
			} else {
				blk[i] = opcodes[(x>>3)&0xf]
			}
		}
	default: // tables of records
		for i := 0; i+16 <= len(blk); i += 16 {
			g.ctr++
			binary.LittleEndian.PutUint64(blk[i:], g.ctr*24+0x400000)
			binary.LittleEndian.PutUint32(blk[i+8:], uint32(g.ctr%97))
			binary.LittleEndian.PutUint32(blk[i+12:], g.r.Uint32()%16)
		}
	}
	return b
}

func (g *corpusGen) randomBlock(b []byte) []byte {
	start := len(b)
	b = append(b, make([]byte, 64<<10)...)
	fillRandom(g.r, b[start:])
	return b
}

// testSize scales an input size for the mode the tests run in: the full
// size normally, a quarter with -short, an eighth under the race detector
// (which slows the chunking loop down some thirty times).
func testSize(full int) int {
	switch {
	case raceEnabled:
		return full / 8
	case testing.Short():
		return full / 4
	}
	return full
}
