package storage

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSealCredentials(t *testing.T) {
	master := bytes.Repeat([]byte{7}, 32)
	s, err := newSealer(master)
	if err != nil {
		t.Fatal(err)
	}
	c := Credentials{AccessKey: "AKIAEXAMPLE", SecretKey: "wJalrXUtnFEMI/K7MDENG"}
	sealed, err := s.seal("repo-1", c)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(c.SecretKey)) || bytes.Contains(sealed, []byte(c.AccessKey)) || bytes.Contains(sealed, master) {
		t.Fatal("sealed credentials contain them in the clear")
	}
	if got, err := s.open("repo-1", sealed); err != nil || got != c {
		t.Fatalf("open = %v, %v", got, err)
	}
	if again, _ := s.seal("repo-1", c); bytes.Equal(again, sealed) {
		t.Error("two seals are equal: the nonce is not fresh")
	}
	// Moved to another repository's row, changed, or under another key: refused.
	if _, err := s.open("repo-2", sealed); err != errUnseal {
		t.Errorf("open for another repository: %v", err)
	}
	damaged := bytes.Clone(sealed)
	damaged[len(damaged)-1] ^= 1
	if _, err := s.open("repo-1", damaged); err != errUnseal {
		t.Errorf("open damaged: %v", err)
	}
	other, _ := newSealer(bytes.Repeat([]byte{8}, 32))
	if _, err := other.open("repo-1", sealed); err != errUnseal {
		t.Errorf("open with another master key: %v", err)
	}
	for _, bad := range [][]byte{{1}, {2, 0, 0}, sealed[:10]} {
		if _, err := s.open("repo-1", bad); err != errUnseal {
			t.Errorf("open %x: %v", bad, err)
		}
	}
	// None seals to nothing and opens as none.
	if none, err := s.seal("repo-1", Credentials{}); none != nil || err != nil {
		t.Errorf("seal none = %x, %v", none, err)
	}
	if got, err := s.open("repo-1", nil); err != nil || !got.Empty() {
		t.Errorf("open nil = %v, %v", got, err)
	}
	if _, err := newSealer(master[:16]); err == nil {
		t.Error("a short master key was accepted")
	}
}

func TestCredentialsNeverPrinted(t *testing.T) {
	c := Credentials{AccessKey: "AKIAEXAMPLE", SecretKey: "very-secret"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "creds", c)
	for _, out := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %s", c, c, c), buf.String()} {
		if strings.Contains(out, "very-secret") || strings.Contains(out, "AKIAEXAMPLE") {
			t.Errorf("printed: %s", out)
		}
	}
}
