// Package blobstore is the storage engine's plugin boundary: a Backend
// stores named, immutable objects (pack files, snapshot manifests, the
// repository config) on local disk, in S3-compatible object storage, or in
// memory for tests. Cross-cutting concerns — retries, bandwidth and
// concurrency limits — are decorators that wrap a Backend (retry/, limit/).
// Every implementation passes one conformance suite (storetest/).
//
// The engine never overwrites an object: packs are content-addressed and
// everything else is written once. Put therefore creates, and refuses to
// replace what exists; that makes concurrent writers of the same pack
// harmless and a repository config impossible to clobber.
package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// Backend stores named bytes. Implementations are safe for concurrent use.
//
// Names are relative, slash-separated paths of letters, digits and
// "._-" (ValidName); "packs/ab/ab12…", "snapshots/…", "config".
//
// Errors name the object and the backend's location. ErrNotFound and
// ErrExists are matched with errors.Is; errors worth retrying (network
// failures, timeouts, throttling, server errors) are marked with Transient
// so the retry decorator can tell them from permanent ones (bad
// credentials, missing bucket, not found, exists).
type Backend interface {
	// Location describes where objects live ("local:/srv/repo",
	// "s3:https://host/bucket/prefix"), for messages and logs. It never
	// contains credentials.
	Location() string

	// Put stores size bytes read from data under name, atomically: a
	// reader sees the whole object or none of it, never a torn one, and
	// once Put returns nil the object is durable (fsync'd / PUT completed)
	// and visible to Stat, Open and List (read-after-write). If name
	// already exists, Put returns an error matching ErrExists and leaves
	// the existing object unchanged. data may be read more than once
	// (Seek to the start before each attempt); reading fewer or more than
	// size bytes is an error and stores nothing.
	Put(ctx context.Context, name string, data io.ReadSeeker, size int64) error

	// Open returns a reader of length bytes of the object starting at
	// offset; length < 0 reads to the end. A range that goes past the end
	// of the object is an error (ErrRange), not a short read. A missing
	// object is ErrNotFound.
	Open(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error)

	// Stat returns the object's size and modification time, or ErrNotFound.
	Stat(ctx context.Context, name string) (ObjectInfo, error)

	// Delete removes the object. Deleting a missing object is not an error.
	Delete(ctx context.Context, name string) error

	// List calls fn for every object whose name starts with prefix, in no
	// particular order. An error from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error

	// Close releases the backend's resources.
	Close() error
}

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// Sentinel errors; backends wrap them with the object's name.
var (
	ErrNotFound = errors.New("object not found")
	ErrExists   = errors.New("object already exists")
	ErrRange    = errors.New("range outside the object")
)

// transientError marks an error worth retrying.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// Transient marks err as worth retrying (nil stays nil).
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &transientError{err}
}

// IsTransient reports whether err, or an error it wraps, was marked Transient.
func IsTransient(err error) bool {
	var t *transientError
	return errors.As(err, &t)
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$`)

// ValidName reports an error unless name is a relative, slash-separated path
// of letters, digits and "._-" without "." or ".." elements.
func ValidName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("invalid object name %q", name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == "." || el == ".." {
			return fmt.Errorf("invalid object name %q", name)
		}
	}
	return nil
}

// ReadRange reads exactly length bytes of name from offset.
func ReadRange(ctx context.Context, b Backend, name string, offset, length int64) ([]byte, error) {
	rc, err := b.Open(ctx, name, offset, length)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	buf := make([]byte, length)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, fmt.Errorf("read %s [%d, +%d) from %s: %w", name, offset, length, b.Location(), err)
	}
	return buf, nil
}
