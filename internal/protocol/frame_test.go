package protocol

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/cofferhq/coffer/internal/engine/blob"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	ids := []blob.ID{{1}, {2}, {3}}
	if err := WriteFrame(&buf, blob.Data, ids[0], 10, []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(&buf, blob.Tree, ids[1], 100, []byte("short")); err != nil {
		t.Fatal(err)
	}
	if err := WriteErrorFrame(&buf, ids[2], "blob is damaged"); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(&buf, blob.Data, ids[0], 3, []byte("four")); err == nil {
		t.Fatal("a payload longer than its plaintext was written")
	}
	fr := NewFrameReader(&buf)
	f, err := fr.Read()
	if err != nil || f.Type != blob.Data || f.ID != ids[0] || f.RawLen != 10 || string(f.Payload) != "0123456789" {
		t.Fatalf("frame 1 = %+v, %v", f, err)
	}
	f, err = fr.Read()
	if err != nil || f.Type != blob.Tree || f.ID != ids[1] || f.RawLen != 100 || string(f.Payload) != "short" {
		t.Fatalf("frame 2 = %+v, %v", f, err)
	}
	f, err = fr.Read()
	if err != nil || f.ID != ids[2] || f.Err != "blob is damaged" || len(f.Payload) != 0 {
		t.Fatalf("error frame = %+v, %v", f, err)
	}
	if _, err := fr.Read(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestFrameReaderRefusesMalformed(t *testing.T) {
	frame := func(typ byte, raw, n uint32, payload []byte) []byte {
		var b bytes.Buffer
		b.WriteByte(typ)
		b.Write(make([]byte, blob.IDSize))
		b.Write([]byte{byte(raw >> 24), byte(raw >> 16), byte(raw >> 8), byte(raw)})
		b.Write([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
		b.Write(payload)
		return b.Bytes()
	}
	for name, in := range map[string][]byte{
		"truncated header":      frame(1, 4, 4, nil)[:10],
		"truncated payload":     frame(1, 4, 4, []byte("ab")),
		"unknown type":          frame(9, 4, 4, []byte("abcd")),
		"payload over raw":      frame(1, 2, 4, []byte("abcd")),
		"raw over maximum":      frame(1, blob.MaxSize+1, 4, []byte("abcd")),
		"error message too big": frame(0xFF, 0, 5000, nil),
	} {
		if _, err := NewFrameReader(bytes.NewReader(in)).Read(); !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: %v, want ErrBadFrame", name, err)
		}
	}
}

func FuzzFrameReader(f *testing.F) {
	var ok bytes.Buffer
	WriteFrame(&ok, blob.Data, blob.ID{7}, 5, []byte("hello"))
	WriteErrorFrame(&ok, blob.ID{8}, "gone")
	f.Add(ok.Bytes())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		fr := NewFrameReader(bytes.NewReader(in))
		for range 100 {
			fm, err := fr.Read()
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrBadFrame) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if fm.Err == "" && (len(fm.Payload) > fm.RawLen || fm.RawLen > blob.MaxSize || !fm.Type.Valid()) {
				t.Fatalf("accepted an invalid frame %+v", fm)
			}
		}
	})
}
