package svgchart

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

func (c *canvas) s(str string) { c.b = append(c.b, str...) }

// f writes a coordinate rounded to a tenth of a pixel.
func (c *canvas) f(v float64) { c.b = appendCoord(c.b, v) }

// text writes a user-supplied string as escaped character data.
func (c *canvas) text(str string) { c.b = appendEscaped(c.b, str) }

func appendCoord(b []byte, v float64) []byte {
	tenths := math.Round(v * 10)
	if !(math.Abs(tenths) < 1e15) { // NaN or absurd: keep the document well-formed
		return append(b, '0')
	}
	n := int64(tenths)
	if n < 0 {
		b = append(b, '-')
		n = -n
	}
	b = strconv.AppendInt(b, n/10, 10)
	if d := n % 10; d != 0 {
		b = append(b, '.', byte('0'+d))
	}
	return b
}

// appendEscaped appends s escaped for XML text or a quoted attribute value.
// Bytes that XML 1.0 cannot carry (control characters, invalid UTF-8,
// U+FFFE, U+FFFF) become U+FFFD, so any input yields a well-formed document.
func appendEscaped(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		r, size := rune(s[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(s[i:])
		}
		var esc string
		switch {
		case r == '&':
			esc = "&amp;"
		case r == '<':
			esc = "&lt;"
		case r == '>':
			esc = "&gt;"
		case r == '"':
			esc = "&#34;"
		case r == '\'':
			esc = "&#39;"
		case r == '\r':
			esc = "&#13;"
		case r == '\n' || r == '\t':
		case r < 0x20 || r == 0xFFFE || r == 0xFFFF || (r == utf8.RuneError && size == 1):
			esc = "\uFFFD"
		}
		if esc != "" {
			b = append(b, s[start:i]...)
			b = append(b, esc...)
			start = i + size
		}
		i += size
	}
	return append(b, s[start:]...)
}

// classToken keeps the characters of s that are safe in a class name or id
// ([A-Za-z0-9_-]); the result starts with a letter or is empty.
func classToken(s string) string {
	if isClassToken(s) {
		return s
	}
	var sb strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9', r == '-', r == '_':
			if sb.Len() == 0 {
				continue
			}
		default:
			continue
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

func isClassToken(s string) bool {
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z':
		case i > 0 && (ch >= '0' && ch <= '9' || ch == '-' || ch == '_'):
		default:
			return false
		}
	}
	return true
}

// classList sanitizes a space-separated list of class names.
func classList(s string) string {
	var out []string
	for f := range strings.FieldsSeq(s) {
		if t := classToken(f); t != "" {
			out = append(out, t)
		}
	}
	return strings.Join(out, " ")
}

func runeCount(s string) int { return utf8.RuneCountInString(s) }
