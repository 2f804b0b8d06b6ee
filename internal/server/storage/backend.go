package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/local"
	"github.com/cofferhq/coffer/internal/engine/blobstore/retry"
	"github.com/cofferhq/coffer/internal/engine/blobstore/s3"
	"github.com/cofferhq/coffer/internal/engine/repository"
)

// Location is where a repository's objects live: a local directory, or
// an S3 bucket and prefix with the credentials to reach it.
type Location struct {
	Path string     // kind local: the directory
	S3   *s3.Config // kind s3
}

// OpenBackend opens the storage at loc: a local directory (created if
// missing; packs are written past the page cache, see local.Options), or
// an S3 bucket, checked to answer and wrapped in the retry
// decorator. The server's default repository and every configured one are
// opened here. S3 errors say what failed (s3.ErrAccessDenied,
// s3.ErrNoSuchBucket, an unreachable endpoint marked blobstore.Transient).
func OpenBackend(ctx context.Context, loc Location) (blobstore.Backend, error) {
	if loc.S3 == nil {
		return local.NewWithOptions(loc.Path, local.Options{DirectWrites: true})
	}
	b, err := s3.New(ctx, *loc.S3)
	if err != nil {
		return nil, err
	}
	return retry.New(b, retry.Options{}), nil
}

// errStop ends a listing early.
var errStop = errors.New("stop")

// holdsObjects reports whether b has any object under prefix.
func holdsObjects(ctx context.Context, b blobstore.Backend, prefix string) (bool, error) {
	found := false
	err := b.List(ctx, prefix, func(blobstore.ObjectInfo) error { found = true; return errStop })
	if err != nil && !errors.Is(err, errStop) {
		return false, err
	}
	return found, nil
}

// IndexLooksLost reports whether repo's index knows no pack while its
// storage holds some: the sign of a database that was lost or replaced,
// or of a repository another server wrote.
func IndexLooksLost(ctx context.Context, repo *repository.Repository) (bool, error) {
	indexed := false
	err := repo.Index().Packs(ctx, func(repository.PackInfo) error { indexed = true; return errStop })
	if err != nil && !errors.Is(err, errStop) {
		return false, err
	}
	if indexed {
		return false, nil
	}
	return holdsObjects(ctx, repo.Backend(), "packs/")
}

// probe proves that b can be written, read back and deleted, with an
// object of its own under locks/ (the place for transient objects).
func probe(ctx context.Context, b blobstore.Backend) error {
	var id [8]byte
	rand.Read(id[:])
	name := "locks/coffer-probe-" + hex.EncodeToString(id[:])
	data := make([]byte, 64)
	rand.Read(data)
	if err := b.Put(ctx, name, bytes.NewReader(data), int64(len(data))); err != nil {
		return fmt.Errorf("write a test object: %w", err)
	}
	rc, err := b.Open(ctx, name, 0, -1)
	if err != nil {
		b.Delete(context.WithoutCancel(ctx), name)
		return fmt.Errorf("read the test object back: %w", err)
	}
	got, err := io.ReadAll(io.LimitReader(rc, int64(len(data))+1))
	rc.Close()
	if err == nil && !bytes.Equal(got, data) {
		err = errors.New("it came back with other bytes than were written")
	}
	if err != nil {
		b.Delete(context.WithoutCancel(ctx), name)
		return fmt.Errorf("read the test object back: %w", err)
	}
	if err := b.Delete(ctx, name); err != nil {
		return fmt.Errorf("delete the test object: %w", err)
	}
	if _, err := b.Stat(ctx, name); !errors.Is(err, blobstore.ErrNotFound) {
		if err == nil {
			err = errors.New("it is still there")
		}
		return fmt.Errorf("delete the test object: %w", err)
	}
	return nil
}

// accessError turns a failure to reach or use storage into an error that
// says which: credentials refused, bucket missing, server unreachable or
// too slow, or the location unusable for another reason. what names the
// step ("open the storage"), where the location.
func accessError(err error, what, where string) error {
	if err == nil {
		return nil
	}
	var ce *coffer.Error
	if errors.As(err, &ce) {
		return err
	}
	var out *coffer.Error
	switch {
	case errors.Is(err, s3.ErrAccessDenied):
		out = coffer.Errorf(coffer.KindInvalid, "storage_access_denied",
			"%s at %s: the server refused the credentials or their permissions (%v): check the access key, the secret and the bucket's policy",
			what, where, err)
	case errors.Is(err, s3.ErrNoSuchBucket):
		out = coffer.Errorf(coffer.KindInvalid, "bucket_not_found", "%s at %s: %v", what, where, err)
	case errors.Is(err, context.DeadlineExceeded):
		out = coffer.Errorf(coffer.KindTimeout, "storage_timeout",
			"%s at %s: the storage did not answer in time: check the endpoint's address and that the server runs", what, where)
	case blobstore.IsTransient(err):
		out = coffer.Errorf(coffer.KindUnavailable, "storage_unreachable",
			"%s at %s: the storage cannot be reached (%v): check the endpoint's url, port and https setting and that the server runs",
			what, where, err)
	default:
		out = coffer.Errorf(coffer.KindInvalid, "storage_unusable", "%s at %s: %v", what, where, err)
	}
	return out.With("location", where).Wrap(err)
}

// isAccessFailure reports whether err is storage failing, as opposed to
// what it returned being wrong.
func isAccessFailure(err error) bool {
	return errors.Is(err, s3.ErrAccessDenied) || errors.Is(err, s3.ErrNoSuchBucket) ||
		errors.Is(err, context.DeadlineExceeded) || blobstore.IsTransient(err)
}

// configError explains a config object the master key does not open:
// made with another master key ("repository_key_mismatch"), or damaged
// or not Coffer's ("repository_config_invalid").
func configError(ctx context.Context, b blobstore.Backend, master []byte, err error) error {
	where := b.Location()
	if isAccessFailure(err) {
		return accessError(err, "read the repository config", where)
	}
	var cfg struct {
		Keys struct {
			MasterKeyID string `json:"master_key_id"`
		} `json:"keys"`
	}
	info, serr := b.Stat(ctx, repository.ConfigName)
	if serr == nil && info.Size <= 1<<20 {
		if data, rerr := blobstore.ReadRange(ctx, b, repository.ConfigName, 0, info.Size); rerr == nil &&
			json.Unmarshal(data, &cfg) == nil && cfg.Keys.MasterKeyID != "" && cfg.Keys.MasterKeyID != repository.MasterKeyID(master) {
			return coffer.Errorf(coffer.KindConflict, "repository_key_mismatch",
				"the Coffer repository at %s was made with another master key (%s; this server's is %s): this server cannot read it; attach it to the server that holds that key",
				where, cfg.Keys.MasterKeyID, repository.MasterKeyID(master)).With("location", where).Wrap(err)
		}
	}
	return coffer.Errorf(coffer.KindConflict, "repository_config_invalid",
		"the object named config at %s is not a Coffer repository config this server can use (%v)", where, err).
		With("location", where).Wrap(err)
}
