package masterkey

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "master.key")
	key, created, err := LoadOrCreate(path)
	if err != nil || !created || len(key) != Size {
		t.Fatalf("first LoadOrCreate = %x, %v, %v; want a new %d-byte key", key, created, err, Size)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %#o, want 0600", fi.Mode().Perm())
	}
	again, created, err := LoadOrCreate(path)
	if err != nil || created || !bytes.Equal(again, key) {
		t.Fatalf("second LoadOrCreate = %x, %v, %v; want the same key, not created", again, created, err)
	}
}

func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := LoadOrCreate(filepath.Join(dir, "good.key")); err != nil {
		t.Fatal(err)
	}
	content, err := os.ReadFile(filepath.Join(dir, "good.key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"readable by others", string(content), 0o644, "chmod 600"},
		{"not a key", "hello\n", 0o600, "not a Coffer master key"},
		{"truncated", string(content[:40]), 0o600, "damaged"},
		{"not hex", header + strings.Repeat("zz", Size) + "\n", 0o600, "damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.WriteFile(path, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want an error mentioning %q", err, tc.want)
			}
			if _, _, err := LoadOrCreate(path); err == nil {
				t.Fatalf("LoadOrCreate accepted a bad existing file")
			}
		})
	}
}
