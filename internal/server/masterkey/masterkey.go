// Package masterkey loads the server's master key: the 256-bit secret that
// wraps every repository's keys (and, later, the storage credentials kept in
// the database). Losing it loses every encrypted repository; anyone holding
// it and a repository can read that repository. It lives in a file readable
// only by its owner, by default in the data directory, created on the first
// start.
package masterkey

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Size is the length of a master key in bytes.
const Size = 32

const header = "coffer-master-key-v1 "

// Load reads the master key file at path. The file must be readable by its
// owner only: a key others can read is refused, not used.
func Load(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("master key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("master key file %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("master key file %s has mode %#o: it must be readable by its owner only (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("master key file: %w", err)
	}
	return parse(path, raw)
}

func parse(path string, raw []byte) ([]byte, error) {
	s := strings.TrimSpace(string(raw))
	rest, ok := strings.CutPrefix(s, header)
	if !ok {
		return nil, fmt.Errorf("master key file %s does not start with %q: not a Coffer master key", path, strings.TrimSpace(header))
	}
	key, err := hex.DecodeString(strings.TrimSpace(rest))
	if err != nil || len(key) != Size {
		return nil, fmt.Errorf("master key file %s is damaged: want %d hex-encoded bytes after the header", path, Size)
	}
	return key, nil
}

// LoadOrCreate loads the master key at path, or creates a new random one
// there (mode 0600, in a directory created 0700) when the file does not
// exist. created reports which happened.
func LoadOrCreate(path string) (key []byte, created bool, err error) {
	key, err = Load(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create master key directory: %w", err)
	}
	key = make([]byte, Size)
	rand.Read(key)
	content := header + hex.EncodeToString(key) + "\n"
	// O_EXCL: two servers starting on one data directory at once must not
	// each write their own key; the loser reads the winner's.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		key, err = Load(path)
		return key, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("create master key file: %w", err)
	}
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(path)
		return nil, false, fmt.Errorf("write master key file %s: %w", path, err)
	}
	return key, true, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
