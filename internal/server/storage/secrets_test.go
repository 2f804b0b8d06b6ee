package storage

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/internal/engine/blobstore/s3"
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

// TestFingerprint: a change of any setting that reaches the storage —
// the secret key included — changes the fingerprint.
func TestFingerprint(t *testing.T) {
	base := s3.Config{Endpoint: "s3.lan:9000", UseTLS: true, Region: "eu", Bucket: "b", Prefix: "p", AccessKey: "a",
		SecretKey: "s", Addressing: s3.AddressingPath}
	fp := fingerprint(Location{S3: &base})
	same := base
	if fingerprint(Location{S3: &same}) != fp {
		t.Fatal("equal settings, different fingerprints")
	}
	for name, change := range map[string]func(*s3.Config){
		"endpoint":   func(c *s3.Config) { c.Endpoint = "s3.lan:9001" },
		"tls":        func(c *s3.Config) { c.UseTLS = false },
		"region":     func(c *s3.Config) { c.Region = "us" },
		"bucket":     func(c *s3.Config) { c.Bucket = "c" },
		"prefix":     func(c *s3.Config) { c.Prefix = "q" },
		"access key": func(c *s3.Config) { c.AccessKey = "b" },
		"secret key": func(c *s3.Config) { c.SecretKey = "t" },
		"addressing": func(c *s3.Config) { c.Addressing = s3.AddressingVirtualHost },
	} {
		c := base
		change(&c)
		if fingerprint(Location{S3: &c}) == fp {
			t.Errorf("a new %s kept the fingerprint", name)
		}
	}
	if fingerprint(Location{Path: "/a"}) == fingerprint(Location{Path: "/b"}) {
		t.Error("two directories, one fingerprint")
	}
}
