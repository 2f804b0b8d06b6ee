package s3

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestNormalizePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"":                "",
		"/":               "",
		"coffer":          "coffer/",
		"/coffer//repo1/": "coffer/repo1/",
		"a/b/c":           "a/b/c/",
	} {
		got, err := normalizePrefix(in)
		if err != nil || got != want {
			t.Errorf("normalizePrefix(%q) = %q, %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"..", "a/../b", "./a", "with space", "ünïcode"} {
		if got, err := normalizePrefix(in); err == nil {
			t.Errorf("normalizePrefix(%q) = %q, want an error", in, got)
		}
	}
}

func TestExactReader(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 100)
	for _, tt := range []struct {
		name   string
		actual int
		size   int64
		ok     bool
	}{
		{"exact", 1000, 1000, true},
		{"empty", 0, 0, true},
		{"fewer", 999, 1000, false},
		{"more", 1000, 999, false},
		{"one extra after empty", 1, 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &exactReader{r: bytes.NewReader(data[:tt.actual]), n: tt.size, left: tt.size}
			for pass := range 2 { // a retry rewinds and reads again
				var got bytes.Buffer
				_, err := io.Copy(&got, r)
				if tt.ok && (err != nil || got.Len() != int(tt.size)) {
					t.Fatalf("pass %d: %d bytes, %v", pass, got.Len(), err)
				}
				if !tt.ok {
					if !errors.Is(err, errSize) {
						t.Fatalf("pass %d: %v, want errSize", pass, err)
					}
					if int64(got.Len()) >= tt.size && tt.size > 0 {
						t.Fatalf("pass %d: all %d bytes passed before the error", pass, got.Len())
					}
				}
				if _, err := r.Seek(0, io.SeekStart); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestParseContentRange(t *testing.T) {
	start, end, total, err := parseContentRange("bytes 10-19/1000")
	if err != nil || start != 10 || end != 19 || total != 1000 {
		t.Errorf("= %d, %d, %d, %v", start, end, total, err)
	}
	for _, bad := range []string{"", "bytes */1000", "bytes 10-19/*", "bytes 19-10/1000", "bytes 10-1000/1000", "bytes -1-5/10", "items 1-2/3"} {
		if _, _, _, err := parseContentRange(bad); err == nil {
			t.Errorf("parseContentRange(%q) accepted", bad)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	f.Add("bytes 0-99/1234")
	f.Add("bytes 5-5/6")
	f.Fuzz(func(t *testing.T, s string) {
		start, end, total, err := parseContentRange(s)
		if err == nil && !(0 <= start && start <= end && end < total) {
			t.Fatalf("%q parsed as inconsistent %d-%d/%d", s, start, end, total)
		}
	})
}
