package benchcorpus

import (
	"encoding/binary"
	"math/rand/v2"
	"path"
	"slices"
	"strconv"
)

// kind is what a file's bytes look like, which decides how well they
// compress and deduplicate.
type kind uint8

const (
	kindEmpty  kind = iota
	kindText        // source-like text, ≈3.4× with zstd
	kindLog         // log lines, ≈3.4×
	kindDB          // database pages, ≈4.2×
	kindBinary      // semi-compressible machine code, ≈1.6×
	kindRandom      // incompressible
)

// kindOf guesses a kind from a file name, for files Mutate rewrites.
func kindOf(name string) kind {
	switch path.Ext(name) {
	case ".log":
		return kindLog
	case ".db", ".sqlite":
		return kindDB
	case ".so", ".bin":
		return kindBinary
	case ".jpg", ".gz", ".img", ".mkv":
		return kindRandom
	}
	return kindText
}

// vocab is the seed's word list, shared read-only by every generator.
type vocab struct {
	words      []string // Zipf-like: early words are drawn far more often
	components []string
	messages   [][]string
}

var (
	keywords  = []string{"func", "return", "if", "err", "nil", "for", "range", "var", "const", "type", "struct", "else", "switch", "case", "import", "package", "string", "int", "byte", "true", "false", "defer", "go", "select", "make", "len", "append"}
	syllables = []string{"ab", "ac", "ad", "al", "an", "ar", "as", "at", "be", "ca", "ce", "ch", "co", "da", "de", "di", "do", "el", "en", "er", "es", "fo", "ge", "ha", "he", "in", "io", "is", "it", "la", "le", "li", "lo", "ma", "me", "mi", "mo", "na", "ne", "no", "nt", "on", "or", "ou", "pa", "pe", "po", "ra", "re", "ri", "ro", "sa", "se", "si", "so", "st", "ta", "te", "th", "ti", "to", "tr", "un", "ur", "va", "ve", "wa", "xe", "za"}
	levels    = []string{"INFO ", "INFO ", "INFO ", "INFO ", "INFO ", "DEBUG", "DEBUG", "WARN ", "ERROR", "INFO "}
	puncts    = []string{" ", " ", " ", ", ", ".", "(", ")", " = ", " := ", " == ", "[", "]", "; ", "->", " + "}
)

func newVocab(seed uint64) *vocab {
	r := rand.New(rand.NewPCG(seed, 0x766f636162))
	v := &vocab{words: append([]string(nil), keywords...)}
	seen := map[string]bool{}
	for _, w := range keywords {
		seen[w] = true
	}
	for len(v.words) < 4096 {
		var b []byte
		for n := 1 + r.IntN(4); n > 0; n-- {
			b = append(b, syllables[r.IntN(len(syllables))]...)
		}
		if r.IntN(5) == 0 {
			b = append(b, '_')
			b = append(b, syllables[r.IntN(len(syllables))]...)
		}
		if w := string(b); !seen[w] {
			seen[w] = true
			v.words = append(v.words, w)
		}
	}
	for range 24 {
		v.components = append(v.components, v.words[30+r.IntN(400)])
	}
	for range 64 {
		msg := make([]string, 2+r.IntN(6))
		for i := range msg {
			msg[i] = v.words[r.IntN(800)]
		}
		v.messages = append(v.messages, msg)
	}
	return v
}

// word draws a word, skewed towards the start of the list.
func (v *vocab) word(u uint64) string {
	// The product of uniform numbers is skewed towards zero.
	a, b, c := u&0xfff, (u>>12)&0xfff, (u>>24)&0xfff
	return v.words[(a*b*c)>>24]
}

// generator appends n bytes of one kind. A generator is not safe for
// concurrent use; make one per goroutine and segment.
type generator struct {
	v   *vocab
	r   *rand.PCG
	cha *rand.ChaCha8
	// log and database state, so that consecutive lines and pages look
	// related as they do in real files.
	clock uint64
	row   uint32
	page  uint32
	lines [][]byte // text lines to repeat
}

func newGenerator(v *vocab, seed, stream uint64) *generator {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	binary.LittleEndian.PutUint64(key[8:], stream)
	binary.LittleEndian.PutUint64(key[16:], 0x636f66666572) // "coffer"
	g := &generator{v: v, r: rand.NewPCG(seed^0x9e3779b97f4a7c15, stream), cha: rand.NewChaCha8(key)}
	g.clock = 1_767_225_600_000_000 + g.r.Uint64()%(1<<36) // µs in 2026
	return g
}

// appendKind appends exactly n bytes of kind k to dst.
func (g *generator) appendKind(dst []byte, k kind, n int) []byte {
	start := len(dst)
	switch k {
	case kindEmpty:
		return dst
	case kindRandom:
		dst = grow(dst, n)
		g.cha.Read(dst[start:])
		return dst
	}
	for len(dst)-start < n {
		switch k {
		case kindText:
			dst = g.textLine(dst)
		case kindLog:
			dst = g.logLine(dst)
		case kindDB:
			dst = g.dbPage(dst)
		case kindBinary:
			dst = g.binaryBlock(dst)
		}
	}
	return dst[:start+n]
}

// grow extends b by n bytes (of any value).
func grow(b []byte, n int) []byte {
	return slices.Grow(b, n)[:len(b)+n]
}

var tabs = []byte("\t\t\t\t\t\t")

// repeatPercent is how often a text line repeats an earlier one.
const repeatPercent = 40

// textLine appends a line of source-like text: indentation, then words,
// punctuation and the odd number.
func (g *generator) textLine(b []byte) []byte {
	u := g.r.Uint64()
	// Code repeats itself: many lines recur (idioms, closing braces,
	// error checks), which is where most of its compressibility lies.
	if g.lines == nil {
		g.lines = make([][]byte, 64)
	}
	slot := &g.lines[(u>>54)%uint64(len(g.lines))]
	if len(*slot) > 0 && (u>>40)%100 < repeatPercent {
		return append(b, *slot...)
	}
	start := len(b)
	b = g.freshLine(b, u)
	*slot = append((*slot)[:0], b[start:]...)
	return b
}

func (g *generator) freshLine(b []byte, u uint64) []byte {
	b = append(b, tabs[:u%4]...)
	u >>= 2
	words := 2 + int(u%9)
	u >>= 4
	if u%9 == 0 {
		b = append(b, "// "...)
	}
	for i := range words {
		w := g.r.Uint64()
		b = append(b, g.v.word(w)...)
		switch {
		case (w>>36)%13 == 0:
			b = strconv.AppendUint(b, (w>>40)%1000, 10)
		case i < words-1:
			b = append(b, puncts[(w>>50)%uint64(len(puncts))]...)
		}
	}
	if u%5 == 0 {
		b = append(b, " {"...)
	}
	return append(b, '\n')
}

const hexDigits = "0123456789abcdef"

// logLine appends one line of an application log.
func (g *generator) logLine(b []byte) []byte {
	u := g.r.Uint64()
	g.clock += u % 5000
	sec, usec := int64(g.clock/1e6), g.clock%1e6
	b = appendTime(b, sec)
	b = append(b, '.')
	b = appendPadded(b, usec, 6)
	b = append(b, "Z "...)
	b = append(b, levels[(u>>16)%uint64(len(levels))]...)
	b = append(b, " ["...)
	b = append(b, g.v.components[(u>>20)%uint64(len(g.v.components))]...)
	b = append(b, "] "...)
	for _, w := range g.v.messages[(u>>28)%uint64(len(g.v.messages))] {
		b = append(b, w...)
		b = append(b, ' ')
	}
	b = append(b, "req="...)
	id := g.r.Uint64()
	for i := range 16 {
		b = append(b, hexDigits[(id>>(4*i))&15])
	}
	b = append(b, " span="...)
	span := g.r.Uint64()
	for i := range 8 {
		b = append(b, hexDigits[(span>>(4*i))&15])
	}
	b = append(b, " peer=10."...)
	b = strconv.AppendUint(b, span>>32&255, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, span>>40&255, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, span>>48&255, 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, 1024+(id>>48)%60000, 10)
	b = append(b, " user="...)
	b = strconv.AppendUint(b, (u>>36)%500, 10)
	b = append(b, " status="...)
	b = strconv.AppendUint(b, []uint64{200, 200, 200, 204, 301, 404, 500}[(u>>46)%7], 10)
	b = append(b, " bytes="...)
	b = strconv.AppendUint(b, g.r.Uint64()%1000000, 10)
	b = append(b, " took="...)
	b = strconv.AppendUint(b, (u>>50)%3000, 10)
	return append(b, "ms\n"...)
}

// appendTime appends sec as an RFC 3339 date and time (UTC), without
// allocating: log files are large.
func appendTime(b []byte, sec int64) []byte {
	days, rem := sec/86400, sec%86400
	// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
	z := days + 719468
	era := z / 146097
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y := yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d := doy - (153*mp+2)/5 + 1
	m := mp + 3
	if m > 12 {
		m -= 12
		y++
	}
	b = appendPadded(b, uint64(y), 4)
	b = append(b, '-')
	b = appendPadded(b, uint64(m), 2)
	b = append(b, '-')
	b = appendPadded(b, uint64(d), 2)
	b = append(b, 'T')
	b = appendPadded(b, uint64(rem/3600), 2)
	b = append(b, ':')
	b = appendPadded(b, uint64(rem/60%60), 2)
	b = append(b, ':')
	return appendPadded(b, uint64(rem%60), 2)
}

func appendPadded(b []byte, v uint64, width int) []byte {
	start := len(b)
	b = strconv.AppendUint(b, v, 10)
	for len(b)-start < width {
		b = append(b, 0)
		copy(b[start+1:], b[start:])
		b[start] = '0'
	}
	return b
}

const pageSize = 4096

// dbPage appends one 4 KiB page of a row store: a header, fixed-width rows
// of small integers, timestamps and names, and free space left zero.
func (g *generator) dbPage(b []byte) []byte {
	start := len(b)
	b = grow(b, pageSize)
	p := b[start:]
	clear(p)
	g.page++
	u := g.r.Uint64()
	p[0] = 0x0d
	binary.LittleEndian.PutUint32(p[4:], g.page)
	binary.LittleEndian.PutUint32(p[8:], uint32(u)) // checksum
	rows := 28 + int((u>>32)%22)
	binary.LittleEndian.PutUint16(p[2:], uint16(rows))
	off := 16
	for range rows {
		if off+64 > pageSize {
			break
		}
		w := g.r.Uint64()
		g.row++
		g.clock += w % 1000
		r := p[off : off+64]
		binary.LittleEndian.PutUint32(r[0:], g.row)
		r[4] = byte(w % 4)
		binary.LittleEndian.PutUint32(r[8:], uint32((w>>8)%100000))
		binary.LittleEndian.PutUint64(r[16:], g.clock)
		copy(r[24:48], g.v.word(w>>24))
		binary.LittleEndian.PutUint16(r[48:], uint16(w>>48)%512)
		x := g.r.Uint64()
		binary.LittleEndian.PutUint32(r[52:], uint32(x))
		binary.LittleEndian.PutUint32(r[56:], uint32(x>>32))
		off += 64
	}
	return b
}

// opcodes are the common bytes of x86-64 machine code, which code-like
// blocks draw most of their bytes from.
var opcodes = []byte{0x48, 0x8b, 0x89, 0x0f, 0xe8, 0x00, 0xff, 0x83, 0xc7, 0x45, 0x4c, 0x85, 0x74, 0x75, 0xc3, 0x90}

// binaryBlock appends 4 KiB of a shared library: a compressed section or
// key material (random), padding, machine code (a skewed alphabet with
// noise) or a relocation table (regular records).
func (g *generator) binaryBlock(b []byte) []byte {
	start := len(b)
	b = grow(b, 4096)
	blk := b[start:]
	switch u := g.r.Uint64(); u % 10 {
	case 0, 1, 2:
		g.cha.Read(blk)
	case 3:
		clear(blk)
	case 5, 6, 7:
		for i := 0; i < len(blk); i += 8 {
			x := g.r.Uint64()
			for j := range 8 {
				if x&7 == 0 {
					blk[i+j] = byte(x >> 8)
				} else {
					blk[i+j] = opcodes[(x>>3)&15]
				}
				x >>= 8
			}
		}
	default:
		base := u >> 40 << 12
		for i := 0; i+16 <= len(blk); i += 16 {
			g.row++
			binary.LittleEndian.PutUint64(blk[i:], base+uint64(g.row)*8)
			binary.LittleEndian.PutUint32(blk[i+8:], uint32(g.row%251)<<8|7)
			binary.LittleEndian.PutUint32(blk[i+12:], uint32(g.r.Uint64()%64))
		}
	}
	return b
}
