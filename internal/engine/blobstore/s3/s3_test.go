package s3_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/s3"
	"github.com/cofferhq/coffer/internal/engine/blobstore/s3/s3test"
)

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	good := s3.Config{Endpoint: "127.0.0.1:1", Bucket: "bucket", AccessKey: "a", SecretKey: "s"}
	tests := []struct {
		name string
		edit func(*s3.Config)
		want string
	}{
		{"no endpoint", func(c *s3.Config) { c.Endpoint = "" }, "no endpoint"},
		{"scheme in endpoint", func(c *s3.Config) { c.Endpoint = "https://s3.example.com" }, "without a scheme"},
		{"short bucket", func(c *s3.Config) { c.Bucket = "ab" }, `bucket "ab"`},
		{"uppercase bucket", func(c *s3.Config) { c.Bucket = "Backups" }, `bucket "Backups"`},
		{"dot-dot prefix", func(c *s3.Config) { c.Prefix = "coffer/../x" }, `prefix "coffer/../x"`},
		{"space in prefix", func(c *s3.Config) { c.Prefix = "my repo" }, `prefix "my repo"`},
		{"tiny part size", func(c *s3.Config) { c.PartSize = 1 << 20 }, "part size"},
		{"unknown addressing", func(c *s3.Config) { c.Addressing = 7 }, "addressing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.edit(&cfg)
			_, err := s3.New(ctxT(t), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestConfigHidesSecret(t *testing.T) {
	t.Parallel()
	cfg := s3.Config{Endpoint: "h:1", Bucket: "bkt", AccessKey: "AKID", SecretKey: "hunter2-very-secret"}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("open", "s3", cfg)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%s", cfg), logged.String()} {
		if strings.Contains(s, cfg.SecretKey) {
			t.Errorf("secret in %q", s)
		}
		if !strings.Contains(s, "AKID") {
			t.Errorf("access key missing from %q", s)
		}
	}
}

func TestLocation(t *testing.T) {
	t.Parallel()
	srv := s3test.Require(t)
	bucket := srv.Bucket(t)
	tests := []struct{ prefix, want string }{
		{"", "s3:http://" + srv.Endpoint + "/" + bucket},
		{"coffer", "s3:http://" + srv.Endpoint + "/" + bucket + "/coffer"},
		{"/coffer//repo1/", "s3:http://" + srv.Endpoint + "/" + bucket + "/coffer/repo1"},
	}
	for _, tt := range tests {
		b := s3test.OpenConfig(t, srv.Config(bucket, tt.prefix))
		if got := b.Location(); got != tt.want {
			t.Errorf("prefix %q: Location() = %q, want %q", tt.prefix, got, tt.want)
		}
		if strings.Contains(b.Location(), srv.SecretKey) || strings.Contains(b.Location(), srv.AccessKey) {
			t.Errorf("Location() %q holds a credential", b.Location())
		}
	}
}

// TestNewExplainsFailures checks that each way of misconfiguring the backend
// gets its own message, against the real server.
func TestNewExplainsFailures(t *testing.T) {
	t.Parallel()
	srv := s3test.Require(t)
	bucket := srv.Bucket(t)

	t.Run("wrong secret", func(t *testing.T) {
		cfg := srv.Config(bucket, "")
		cfg.SecretKey = "not-the-secret-42"
		err := newErr(t, cfg)
		t.Log(err)
		want := fmt.Sprintf("s3: access denied for bucket %s at endpoint http://%s: check the access key and secret", bucket, srv.Endpoint)
		if !errors.Is(err, s3.ErrAccessDenied) || !strings.Contains(err.Error(), want) {
			t.Errorf("New: %v\nwant ErrAccessDenied saying %q", err, want)
		}
		if strings.Contains(err.Error(), cfg.SecretKey) {
			t.Errorf("error %q shows the secret", err)
		}
		if blobstore.IsTransient(err) {
			t.Errorf("wrong credentials are not worth retrying: %v", err)
		}
	})
	t.Run("wrong access key", func(t *testing.T) {
		cfg := srv.Config(bucket, "")
		cfg.AccessKey = "nobody"
		if err := newErr(t, cfg); !errors.Is(err, s3.ErrAccessDenied) {
			t.Errorf("New: %v, want ErrAccessDenied", err)
		}
	})
	t.Run("missing bucket", func(t *testing.T) {
		cfg := srv.Config("coffer-no-such-bucket", "")
		err := newErr(t, cfg)
		t.Log(err)
		want := fmt.Sprintf("bucket coffer-no-such-bucket does not exist at http://%s: create it or fix the name", srv.Endpoint)
		if !errors.Is(err, s3.ErrNoSuchBucket) || !strings.Contains(err.Error(), want) || blobstore.IsTransient(err) {
			t.Errorf("New: %v\nwant permanent ErrNoSuchBucket saying %q", err, want)
		}
	})
	t.Run("nothing listening", func(t *testing.T) {
		cfg := srv.Config(bucket, "")
		cfg.Endpoint = closedPort(t)
		start := time.Now()
		err := newErr(t, cfg)
		t.Log(err)
		want := "s3: cannot reach http://" + cfg.Endpoint + ": "
		if !strings.Contains(err.Error(), want) || !blobstore.IsTransient(err) {
			t.Errorf("New: %v\nwant a Transient error saying %q", err, want)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("New took %v to give up on a closed port", d)
		}
	})
	t.Run("TLS to a plain HTTP server", func(t *testing.T) {
		cfg := srv.Config(bucket, "")
		cfg.UseTLS = true
		err := newErr(t, cfg)
		t.Log(err)
		if !strings.Contains(err.Error(), "TLS mismatch") || !strings.Contains(err.Error(), "plain HTTP") || blobstore.IsTransient(err) {
			t.Errorf("New: %v, want a permanent TLS mismatch", err)
		}
	})

	// An https front for the gateway, its certificate signed by a CA the
	// system does not know.
	front := httptest.NewUnstartedServer(reverseProxy(t, srv.Endpoint))
	front.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes fail on purpose
	front.StartTLS()
	t.Cleanup(front.Close)
	frontHost := strings.TrimPrefix(front.URL, "https://")

	t.Run("plain HTTP to a TLS server", func(t *testing.T) {
		cfg := srv.Config(bucket, "")
		cfg.Endpoint = frontHost
		err := newErr(t, cfg)
		t.Log(err)
		if !strings.Contains(err.Error(), "TLS mismatch") || !strings.Contains(err.Error(), "expects https") {
			t.Errorf("New: %v, want a TLS mismatch", err)
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		cfg := srv.Config(bucket, "")
		cfg.Endpoint, cfg.UseTLS = frontHost, true
		err := newErr(t, cfg)
		t.Log(err)
		if !strings.Contains(err.Error(), "is not trusted") || blobstore.IsTransient(err) {
			t.Errorf("New: %v, want a permanent untrusted-certificate error", err)
		}
	})
	t.Run("custom CA", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AddCert(front.Certificate())
		cfg := srv.Config(bucket, "coffer")
		cfg.Endpoint, cfg.UseTLS = frontHost, true
		cfg.TLSConfig = &tls.Config{RootCAs: pool}
		b := s3test.OpenConfig(t, cfg)
		ctx := ctxT(t)
		if err := b.Put(ctx, "config", bytes.NewReader([]byte("over tls")), 8); err != nil {
			t.Fatalf("Put over TLS: %v", err)
		}
		got, err := blobstore.ReadRange(ctx, b, "config", 0, 8)
		if err != nil || string(got) != "over tls" {
			t.Fatalf("ReadRange over TLS = %q, %v", got, err)
		}
	})
}

func newErr(t *testing.T, cfg s3.Config) error {
	t.Helper()
	b, err := s3.New(ctxT(t), cfg)
	if err == nil {
		b.Close()
		t.Fatalf("New(%v) succeeded", cfg)
	}
	return err
}

// closedPort returns a local address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// reverseProxy forwards to the S3 server at endpoint, keeping the Host header
// the client signed.
func reverseProxy(t *testing.T, endpoint string) *httputil.ReverseProxy {
	t.Helper()
	target, err := url.Parse("http://" + endpoint)
	if err != nil {
		t.Fatal(err)
	}
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
		},
		Transport: &http.Transport{DisableCompression: true},
		ErrorLog:  log.New(io.Discard, "", 0), // clients hang up on purpose
	}
}
