// Package s3test gives tests a fresh bucket on the test S3-compatible server.
//
// The server is named by COFFER_TEST_S3_ENDPOINT (host:port) with the
// credentials in COFFER_TEST_S3_ACCESS_KEY and COFFER_TEST_S3_SECRET_KEY;
// make test (scripts/test.sh) starts a Versity Gateway and sets them. Without
// the endpoint, tests that need S3 skip — unless CI is set, where a missing
// server is a failure, never a silent skip.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/cofferhq/coffer/internal/engine/blobstore/s3"
)

// The environment variables that name the test server.
const (
	EnvEndpoint  = "COFFER_TEST_S3_ENDPOINT"
	EnvAccessKey = "COFFER_TEST_S3_ACCESS_KEY"
	EnvSecretKey = "COFFER_TEST_S3_SECRET_KEY"
)

// Server is the test S3 server: plain HTTP, path-style addressing.
type Server struct {
	Endpoint  string
	AccessKey string
	SecretKey string
}

// Require returns the test server, or skips the test (fails it under CI)
// when there is none.
func Require(t testing.TB) Server {
	t.Helper()
	srv := Server{
		Endpoint:  os.Getenv(EnvEndpoint),
		AccessKey: os.Getenv(EnvAccessKey),
		SecretKey: os.Getenv(EnvSecretKey),
	}
	if srv.Endpoint == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set: under CI the S3 tests must run (use make test, which starts a server)", EnvEndpoint)
		}
		t.Skipf("S3 test skipped: set %s (and the keys) or run make test", EnvEndpoint)
	}
	return srv
}

// Client returns a minio-go client of the server, for arranging what the
// backend under test should find and checking what it left.
func (srv Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(srv.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, ""),
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatalf("s3 client for %s: %v", srv.Endpoint, err)
	}
	return c
}

// Bucket creates a uniquely named, empty bucket and removes it, with every
// object and unfinished upload in it, when the test ends.
func (srv Server) Bucket(t testing.TB) string {
	t.Helper()
	c := srv.Client(t)
	b := make([]byte, 6)
	rand.Read(b)
	name := "coffer-test-" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("create test bucket %s at %s (is the server at %s running?): %v", name, srv.Endpoint, EnvEndpoint, err)
	}
	t.Cleanup(func() {
		if err := removeBucket(c, name); err != nil {
			t.Errorf("remove test bucket %s: %v", name, err)
		}
	})
	return name
}

func removeBucket(c *minio.Client, bucket string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for up := range c.ListIncompleteUploads(ctx, bucket, "", true) {
		if up.Err != nil {
			return up.Err
		}
		if err := c.RemoveIncompleteUpload(ctx, bucket, up.Key); err != nil {
			return err
		}
	}
	objects := c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true, WithVersions: true})
	var errs []error
	for res := range c.RemoveObjects(ctx, bucket, objects, minio.RemoveObjectsOptions{}) {
		errs = append(errs, res.Err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return c.RemoveBucket(ctx, bucket)
}

// Config returns a backend configuration for a fresh bucket on the server,
// with prefix as the key prefix.
func Config(t testing.TB, prefix string) s3.Config {
	t.Helper()
	srv := Require(t)
	return srv.Config(srv.Bucket(t), prefix)
}

// Config returns a backend configuration for bucket on the server.
func (srv Server) Config(bucket, prefix string) s3.Config {
	return s3.Config{
		Endpoint:   srv.Endpoint,
		Bucket:     bucket,
		Prefix:     prefix,
		AccessKey:  srv.AccessKey,
		SecretKey:  srv.SecretKey,
		Addressing: s3.AddressingPath,
		PartSize:   s3.MinPartSize,
	}
}

// Open returns a backend on a fresh bucket, closed when the test ends. Its
// part size is the smallest S3 allows, so modest objects exercise multipart
// uploads.
func Open(t testing.TB) *s3.Backend {
	t.Helper()
	return OpenConfig(t, Config(t, "coffer/test"))
}

// OpenConfig returns a backend for cfg, closed when the test ends.
func OpenConfig(t testing.TB, cfg s3.Config) *s3.Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := s3.New(ctx, cfg)
	if err != nil {
		t.Fatalf("open s3 backend: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}
