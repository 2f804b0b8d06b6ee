// Package s3 is a blobstore.Backend on S3-compatible object storage (AWS S3,
// Versity Gateway, Ceph RGW, Garage, MinIO, Backblaze B2, Wasabi, …) through
// the minio-go client.
//
// Objects live in one bucket under an optional key prefix, so several
// repositories can share a bucket. Put is create-only: it sends
// "If-None-Match: *" on single-part uploads and on the completion of
// multipart ones, and the server refuses to replace an existing key with 412
// Precondition Failed, which Put reports as blobstore.ErrExists. AWS S3
// (since 2024), Versity Gateway, MinIO and Ceph RGW (Squid) honour it.
//
// A server that ignores the header would let a Put replace an object. For
// those, Config.StatBeforePut makes Put ask Stat first and report ErrExists
// without uploading. That narrows the window but cannot close it: two
// writers that both Stat before either PUT completes both write, and the
// last one wins. Packs are content-addressed, so the loser wrote the same
// bytes; but the create-once promise for the repository config and locks
// then holds only with a single writer at a time.
//
// minio-go retries each HTTP request a few times itself (Config.MaxRetries),
// which matters for multipart uploads: a failed part is resent alone. What
// still fails is marked blobstore.Transient when it is worth retrying later
// (network errors, 5xx, throttling) and left permanent otherwise (wrong
// credentials, missing bucket, not found, exists).
package s3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

// Part sizes and retry defaults.
const (
	// DefaultPartSize is the multipart part size when Config.PartSize is 0:
	// a default-sized pack (16 MiB) goes up in one PUT.
	DefaultPartSize = 16 << 20
	// MinPartSize is the smallest part S3 accepts (except for the last).
	MinPartSize = 5 << 20
	// MaxPartSize is the largest part S3 accepts.
	MaxPartSize = 5 << 30
	// DefaultMaxRetries is how many times minio-go tries one HTTP request
	// when Config.MaxRetries is 0. It stays small because a retry decorator
	// usually wraps the backend.
	DefaultMaxRetries = 3
)

// Addressing selects how requests name the bucket.
type Addressing int

const (
	// AddressingAuto lets minio-go choose: virtual-host style for AWS and
	// the providers known to support it, path style for everything else.
	AddressingAuto Addressing = iota
	// AddressingPath puts the bucket in the path: https://host/bucket/key.
	// Self-hosted servers (Versity, Garage, MinIO, Ceph) usually want it.
	AddressingPath
	// AddressingVirtualHost puts the bucket in the host name:
	// https://bucket.host/key.
	AddressingVirtualHost
)

// Config describes where a Backend keeps its objects and how it reaches them.
type Config struct {
	// Endpoint is the server's host[:port], without a scheme:
	// "s3.eu-west-1.amazonaws.com", "storage.lan:7070".
	Endpoint string
	// UseTLS selects https.
	UseTLS bool
	// Region is the bucket's region. Empty asks the server once per
	// bucket (GetBucketLocation); servers without regions accept any.
	Region string
	// Bucket must exist: New does not create it.
	Bucket string
	// Prefix is prepended to every object name, so "coffer/repo1" stores
	// "config" at key "coffer/repo1/config". Leading, trailing and repeated
	// slashes are ignored; empty uses the whole bucket.
	Prefix string
	// AccessKey is the credentials' key id; empty, with an empty
	// SecretKey, sends anonymous requests.
	AccessKey string
	// SecretKey is the credentials' secret. It is never logged, printed
	// (String, LogValue) or put in an error.
	SecretKey string
	// Addressing selects path-style or virtual-host-style requests.
	Addressing Addressing
	// PartSize is the multipart part size: objects up to this size go up
	// in one PUT, larger ones in parts of this size. 0 means
	// DefaultPartSize; otherwise it must be in [MinPartSize, MaxPartSize].
	// Each upload in flight holds one part in memory.
	PartSize int64
	// MaxRetries is how many times minio-go tries one HTTP request (for a
	// multipart upload, each part) before returning its error. 0 means
	// DefaultMaxRetries; 1 turns its retries off.
	MaxRetries int
	// StatBeforePut makes Put ask Stat first and fail with
	// blobstore.ErrExists without uploading when the object is there. Set
	// it for servers that ignore "If-None-Match: *" (see the package doc
	// for the race that remains); multipart uploads always ask first.
	StatBeforePut bool
	// Transport, when set, carries every request, and TLSConfig is ignored.
	Transport http.RoundTripper
	// TLSConfig, when set, configures https connections, e.g. RootCAs for
	// a server whose certificate a private CA signed.
	TLSConfig *tls.Config
}

// String describes c without its secret key, so a logged or printed Config
// never leaks it.
func (c Config) String() string {
	secret := ""
	if c.SecretKey != "" {
		secret = "[redacted]"
	}
	return fmt.Sprintf("{Endpoint:%s UseTLS:%t Region:%s Bucket:%s Prefix:%s AccessKey:%s SecretKey:%s PartSize:%d}",
		c.Endpoint, c.UseTLS, c.Region, c.Bucket, c.Prefix, c.AccessKey, secret, c.PartSize)
}

// LogValue is Config's slog form, without the secret key.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("endpoint", c.Endpoint),
		slog.Bool("tls", c.UseTLS),
		slog.String("bucket", c.Bucket),
		slog.String("prefix", c.Prefix),
		slog.String("access_key", c.AccessKey),
	)
}

// Errors New and the object operations return, matched with errors.Is. They
// are permanent: retrying does not help until someone changes the
// configuration or the server.
var (
	// ErrAccessDenied means the server refused the credentials or their
	// permissions (AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch).
	ErrAccessDenied = errors.New("access denied")
	// ErrNoSuchBucket means the configured bucket does not exist.
	ErrNoSuchBucket = errors.New("no such bucket")
)

// Backend is a blobstore.Backend on one bucket and key prefix. It is safe
// for concurrent use.
type Backend struct {
	client    *minio.Client
	bucket    string
	prefix    string // "" or ending in "/"
	partSize  uint64
	statFirst bool   // Config.StatBeforePut
	endpoint  string // scheme://host:port, for messages
	location  string
	transport *http.Transport // built here, so closed here; nil otherwise
}

var _ blobstore.Backend = (*Backend)(nil)

// New returns a Backend for cfg after checking that the endpoint answers,
// the bucket exists and the credentials may list it. Its errors say which of
// those failed: ErrAccessDenied, ErrNoSuchBucket, a TLS mismatch, or (marked
// blobstore.Transient) an unreachable endpoint.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	b, err := newBackend(cfg)
	if err != nil {
		return nil, err
	}
	if err := b.check(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func newBackend(cfg Config) (*Backend, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("s3: no endpoint configured")
	}
	if strings.Contains(cfg.Endpoint, "://") || strings.Contains(cfg.Endpoint, "/") {
		return nil, fmt.Errorf("s3: endpoint %q must be host[:port], without a scheme or path (https is UseTLS)", cfg.Endpoint)
	}
	if err := s3utils.CheckValidBucketNameStrict(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("s3: bucket %q: %w", cfg.Bucket, err)
	}
	prefix, err := normalizePrefix(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	partSize := cfg.PartSize
	if partSize == 0 {
		partSize = DefaultPartSize
	}
	if partSize < MinPartSize || partSize > MaxPartSize {
		return nil, fmt.Errorf("s3: part size %d is outside [%d, %d] (5 MiB to 5 GiB)", partSize, MinPartSize, MaxPartSize)
	}
	retries := cfg.MaxRetries
	if retries <= 0 {
		retries = DefaultMaxRetries
	}
	lookup := minio.BucketLookupAuto
	switch cfg.Addressing {
	case AddressingAuto:
	case AddressingPath:
		lookup = minio.BucketLookupPath
	case AddressingVirtualHost:
		lookup = minio.BucketLookupDNS
	default:
		return nil, fmt.Errorf("s3: unknown addressing %d", cfg.Addressing)
	}

	b := &Backend{bucket: cfg.Bucket, prefix: prefix, partSize: uint64(partSize), statFirst: cfg.StatBeforePut}
	scheme := "http"
	if cfg.UseTLS {
		scheme = "https"
	}
	b.endpoint = scheme + "://" + cfg.Endpoint
	b.location = "s3:" + b.endpoint + "/" + cfg.Bucket
	if prefix != "" {
		b.location += "/" + strings.TrimSuffix(prefix, "/")
	}

	transport := cfg.Transport
	if transport == nil {
		t, err := minio.DefaultTransport(cfg.UseTLS)
		if err != nil {
			return nil, fmt.Errorf("s3: http transport: %w", err)
		}
		if cfg.TLSConfig != nil {
			t.TLSClientConfig = cfg.TLSConfig.Clone()
		}
		b.transport, transport = t, t
	}
	b.client, err = minio.New(cfg.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       cfg.UseTLS,
		Transport:    transport,
		Region:       cfg.Region,
		BucketLookup: lookup,
		MaxRetries:   retries,
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("s3: endpoint %q: %w", cfg.Endpoint, err)
	}
	return b, nil
}

// normalizePrefix turns "/coffer//repo1/" into "coffer/repo1/" and rejects
// what could not be an object name's leading directories.
func normalizePrefix(p string) (string, error) {
	var parts []string
	for el := range strings.SplitSeq(p, "/") {
		if el != "" {
			parts = append(parts, el)
		}
	}
	if len(parts) == 0 {
		return "", nil
	}
	joined := strings.Join(parts, "/")
	if err := blobstore.ValidName(joined); err != nil {
		return "", fmt.Errorf("s3: prefix %q: letters, digits and \"._-\" between slashes only, no \".\" or \"..\"", p)
	}
	return joined + "/", nil
}

// check lists at most one key under the prefix: it needs the endpoint, the
// bucket and the permission List needs, and reads nothing.
func (b *Backend) check(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	objects := b.client.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Prefix: b.prefix, MaxKeys: 1})
	var err error
	for obj := range objects {
		err = obj.Err
		break
	}
	cancel()
	for range objects { // let minio-go's lister goroutine finish
	}
	if err != nil {
		return b.setupError(err)
	}
	return nil
}

// Location returns "s3:http(s)://endpoint/bucket/prefix".
func (b *Backend) Location() string { return b.location }

// Close releases idle connections. The Backend must not be used after.
func (b *Backend) Close() error {
	if b.transport != nil {
		b.transport.CloseIdleConnections()
	}
	return nil
}

// key returns the object key of name.
func (b *Backend) key(name string) string { return b.prefix + name }
