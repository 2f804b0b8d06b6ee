package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/s3"
	"github.com/cofferhq/coffer/internal/engine/blobstore/s3/s3test"
)

// faultProxy sits between a backend and the test server and can answer
// requests itself instead of passing them on.
type faultProxy struct {
	*httptest.Server
	fault atomic.Pointer[fault]
}

// A fault handles r itself and reports true, or reports false to let it
// through.
type fault func(w http.ResponseWriter, r *http.Request) bool

func newFaultProxy(t *testing.T, endpoint string) *faultProxy {
	t.Helper()
	p := &faultProxy{}
	forward := reverseProxy(t, endpoint)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := p.fault.Load(); f != nil && (*f)(w, r) {
			return
		}
		forward.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *faultProxy) set(f fault) {
	if f == nil {
		p.fault.Store(nil)
		return
	}
	p.fault.Store(&f)
}

func (p *faultProxy) endpoint() string { return strings.TrimPrefix(p.URL, "http://") }

// s3Error answers with an S3 error document.
func s3Error(status int, code string) fault {
	return func(w http.ResponseWriter, r *http.Request) bool {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected by the test</Message></Error>`, code)
		return true
	}
}

// hangUp drops the connection without an answer.
func hangUp(w http.ResponseWriter, r *http.Request) bool { panic(http.ErrAbortHandler) }

// only applies f to requests that match.
func only(match func(*http.Request) bool, f fault) fault {
	return func(w http.ResponseWriter, r *http.Request) bool { return match(r) && f(w, r) }
}

func isCompletion(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Query().Has("uploadId")
}

func isPart(r *http.Request) bool {
	return r.Method == http.MethodPut && r.URL.Query().Has("partNumber")
}

// openBehind returns a backend on a fresh bucket that talks to the server
// through a fault proxy, its client retrying maxRetries times.
func openBehind(t *testing.T, maxRetries int) (*s3.Backend, *faultProxy, s3test.Server, string) {
	t.Helper()
	srv := s3test.Require(t)
	bucket := srv.Bucket(t)
	p := newFaultProxy(t, srv.Endpoint)
	cfg := srv.Config(bucket, "coffer/flaky")
	cfg.Endpoint = p.endpoint()
	cfg.MaxRetries = maxRetries
	return s3test.OpenConfig(t, cfg), p, srv, bucket
}

// ops runs every Backend operation on name and returns their errors.
func ops(ctx context.Context, b *s3.Backend, name string) map[string]error {
	small := randomBytes(10, 1000)
	big := randomBytes(11, bigSize)
	errs := map[string]error{
		"put":           b.Put(ctx, name, bytes.NewReader(small), int64(len(small))),
		"put multipart": b.Put(ctx, name+".big", bytes.NewReader(big), int64(len(big))),
		"delete":        b.Delete(ctx, name),
		"list": b.List(ctx, name, func(blobstore.ObjectInfo) error {
			return errors.New("listed an object through a failing server")
		}),
	}
	_, errs["stat"] = b.Stat(ctx, name)
	rc, err := b.Open(ctx, name, 0, -1)
	if err == nil {
		rc.Close()
	}
	errs["open"] = err
	rc, err = b.Open(ctx, name, 10, 10)
	if err == nil {
		rc.Close()
	}
	errs["open range"] = err
	return errs
}

// TestFailuresWorthRetrying checks that server errors, throttling and broken
// connections come back marked Transient, naming the object and the
// location, once the client's own retries are off.
func TestFailuresWorthRetrying(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		fault fault
	}{
		{"503 ServiceUnavailable", s3Error(503, "ServiceUnavailable")},
		{"503 SlowDown", s3Error(503, "SlowDown")},
		{"500 InternalError", s3Error(500, "InternalError")},
		{"408 RequestTimeout", s3Error(408, "RequestTimeout")},
		{"429 without a body", func(w http.ResponseWriter, r *http.Request) bool {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(429)
			return true
		}},
		{"502 from a load balancer", func(w http.ResponseWriter, r *http.Request) bool {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			io.WriteString(w, "<html><body>502 Bad Gateway</body></html>")
			return true
		}},
		{"connection dropped", hangUp},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, p, _, _ := openBehind(t, 1)
			p.set(tt.fault)
			for op, err := range ops(ctxT(t), b, "packs/ab/flaky") {
				if err == nil {
					t.Errorf("%s succeeded through a failing server", op)
					continue
				}
				if !blobstore.IsTransient(err) {
					t.Errorf("%s: %v: not marked Transient", op, err)
				}
				if errors.Is(err, blobstore.ErrNotFound) || errors.Is(err, blobstore.ErrExists) {
					t.Errorf("%s: %v: a server failure must not look like an answer", op, err)
				}
				if !strings.Contains(err.Error(), "packs/ab/flaky") || !strings.Contains(err.Error(), b.Location()) {
					t.Errorf("%s: %q does not name the object and %s", op, err, b.Location())
				}
			}
		})
	}
}

// TestFailuresNotWorthRetrying checks the permanent side of the line.
func TestFailuresNotWorthRetrying(t *testing.T) {
	t.Parallel()
	b, p, _, _ := openBehind(t, 1)
	ctx := ctxT(t)
	for _, tt := range []struct {
		fault fault
		is    error
	}{
		{s3Error(403, "AccessDenied"), s3.ErrAccessDenied},
		{s3Error(403, "SignatureDoesNotMatch"), s3.ErrAccessDenied},
		{s3Error(403, "InvalidAccessKeyId"), s3.ErrAccessDenied},
		{s3Error(404, "NoSuchBucket"), s3.ErrNoSuchBucket},
		{s3Error(400, "InvalidArgument"), nil},
	} {
		p.set(tt.fault)
		for op, err := range ops(ctx, b, "config") {
			if op == "stat" && tt.is == s3.ErrNoSuchBucket && errors.Is(err, blobstore.ErrNotFound) {
				continue // a HEAD's answer has no body to say which 404 it is
			}
			if err == nil || blobstore.IsTransient(err) || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Errorf("%s: %v, want a permanent error matching %v", op, err, tt.is)
			}
		}
	}
	p.set(nil)
}

// TestClientRetriesRideOutFlakes checks that with the client's own retries
// on, a server that fails every other request does not fail the operations.
func TestClientRetriesRideOutFlakes(t *testing.T) {
	t.Parallel()
	b, p, _, _ := openBehind(t, 0)
	ctx := ctxT(t)
	var n atomic.Int64
	flaky := s3Error(503, "SlowDown")
	p.set(func(w http.ResponseWriter, r *http.Request) bool {
		return n.Add(1)%2 == 0 && flaky(w, r)
	})
	big := randomBytes(12, bigSize)
	if err := b.Put(ctx, "packs/cd/big", bytes.NewReader(big), int64(len(big))); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if err := b.Put(ctx, "config", bytes.NewReader(big[:100]), 100); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if got := readAll(t, b, "packs/cd/big", 0, -1); !bytes.Equal(got, big) {
		t.Fatal("multipart object came back different")
	}
	if _, err := b.Stat(ctx, "config"); err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if n.Load() < 10 {
		t.Errorf("only %d requests: the fault was not exercised", n.Load())
	}
}

// requireEmpty checks that the bucket holds no object and no unfinished
// multipart upload.
func requireEmpty(t *testing.T, srv s3test.Server, bucket string) {
	t.Helper()
	ctx := ctxT(t)
	c := srv.Client(t)
	for obj := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		t.Errorf("object left in the bucket: %q (%v)", obj.Key, obj.Err)
	}
	for up := range c.ListIncompleteUploads(ctx, bucket, "", true) {
		t.Errorf("unfinished upload left in the bucket: %q %s (%v)", up.Key, up.UploadID, up.Err)
	}
}

// TestInterruptedMultipartLeavesNothing interrupts multipart uploads in
// different places; none may leave an object, or parts, behind.
func TestInterruptedMultipartLeavesNothing(t *testing.T) {
	t.Parallel()
	big := randomBytes(13, bigSize)
	t.Run("caller cancels", func(t *testing.T) {
		b, _, srv, bucket := openBehind(t, 0)
		ctx, cancel := context.WithCancel(ctxT(t))
		r := &cancelAfter{ReadSeeker: bytes.NewReader(big), limit: s3.MinPartSize + 1<<20, cancel: cancel}
		err := b.Put(ctx, "packs/ef/big", r, int64(len(big)))
		if !errors.Is(err, context.Canceled) || blobstore.IsTransient(err) {
			t.Fatalf("Put: %v, want a permanent context.Canceled", err)
		}
		requireEmpty(t, srv, bucket)
	})
	t.Run("completion fails", func(t *testing.T) {
		b, p, srv, bucket := openBehind(t, 1)
		p.set(only(isCompletion, s3Error(503, "ServiceUnavailable")))
		err := b.Put(ctxT(t), "packs/ef/big", bytes.NewReader(big), int64(len(big)))
		if !blobstore.IsTransient(err) {
			t.Fatalf("Put: %v, want a Transient error", err)
		}
		requireEmpty(t, srv, bucket)
	})
	t.Run("connection drops during a part", func(t *testing.T) {
		b, p, srv, bucket := openBehind(t, 1)
		var parts atomic.Int64
		p.set(only(func(r *http.Request) bool { return isPart(r) && parts.Add(1) == 2 }, hangUp))
		err := b.Put(ctxT(t), "packs/ef/big", bytes.NewReader(big), int64(len(big)))
		if !blobstore.IsTransient(err) {
			t.Fatalf("Put: %v, want a Transient error", err)
		}
		requireEmpty(t, srv, bucket)
	})
}

type cancelAfter struct {
	io.ReadSeeker
	read, limit int64
	cancel      func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.ReadSeeker.Read(p)
	if c.read += int64(n); c.read > c.limit {
		c.cancel()
	}
	return n, err
}

// TestMultipartLosesRace lets another writer create the object while a
// multipart Put is uploading its parts: the Put's completion must fail with
// ErrExists and leave the other writer's object in place.
func TestMultipartLosesRace(t *testing.T) {
	t.Parallel()
	b, p, srv, bucket := openBehind(t, 1)
	other := []byte("the other writer won")
	key := "coffer/flaky/packs/12/raced"
	var raced atomic.Bool
	p.set(func(w http.ResponseWriter, r *http.Request) bool {
		if isCompletion(r) && !raced.Swap(true) {
			_, err := srv.Client(t).PutObject(r.Context(), bucket, key, bytes.NewReader(other), int64(len(other)), minio.PutObjectOptions{})
			if err != nil {
				t.Errorf("the other writer: %v", err)
			}
		}
		return false
	})
	big := randomBytes(14, bigSize)
	err := b.Put(ctxT(t), "packs/12/raced", bytes.NewReader(big), int64(len(big)))
	if !raced.Load() {
		t.Fatal("the Put did not complete a multipart upload")
	}
	if !errors.Is(err, blobstore.ErrExists) {
		t.Fatalf("Put: %v, want ErrExists", err)
	}
	if got := readAll(t, b, "packs/12/raced", 0, -1); !bytes.Equal(got, other) {
		t.Fatalf("the object holds %d bytes, not the other writer's", len(got))
	}
	for up := range srv.Client(t).ListIncompleteUploads(ctxT(t), bucket, "", true) {
		t.Errorf("unfinished upload left in the bucket: %q (%v)", up.Key, up.Err)
	}
}

// TestStatBeforePut checks the fallback for servers that ignore
// If-None-Match: with StatBeforePut, Put of an existing name fails with
// ErrExists before it sends any data.
func TestStatBeforePut(t *testing.T) {
	t.Parallel()
	srv := s3test.Require(t)
	p := newFaultProxy(t, srv.Endpoint)
	cfg := srv.Config(srv.Bucket(t), "")
	cfg.Endpoint = p.endpoint()
	cfg.StatBeforePut = true
	b := s3test.OpenConfig(t, cfg)
	ctx := ctxT(t)
	if err := b.Put(ctx, "locks/one", bytes.NewReader([]byte("first")), 5); err != nil {
		t.Fatal(err)
	}
	var puts atomic.Int64
	p.set(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut || r.Method == http.MethodPost {
			puts.Add(1)
		}
		return false
	})
	if err := b.Put(ctx, "locks/one", bytes.NewReader([]byte("second")), 6); !errors.Is(err, blobstore.ErrExists) {
		t.Fatalf("Put: %v, want ErrExists", err)
	}
	if n := puts.Load(); n != 0 {
		t.Errorf("%d uploads sent for an object Stat found", n)
	}
}
