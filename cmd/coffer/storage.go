package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/s3"
	"github.com/cofferhq/coffer/internal/server/storage"
)

// The S3 credentials of the default repository come from the environment,
// never from the command line (where ps would show them) or the URL.
const (
	envS3AccessKey = "COFFER_S3_ACCESS_KEY"
	envS3SecretKey = "COFFER_S3_SECRET_KEY"
)

// parseS3URL reads the --repository-url form
//
//	s3://HOST[:PORT]/BUCKET[/PREFIX]?region=R&tls=false&addressing=path|virtual
//
// TLS is on unless tls=false; addressing defaults to path style (what
// self-hosted servers want; AWS accepts it too). Credentials are taken
// from COFFER_S3_ACCESS_KEY and COFFER_S3_SECRET_KEY.
func parseS3URL(raw string, getenv func(string) string) (s3.Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return s3.Config{}, fmt.Errorf("--repository-url: %w", err)
	}
	if u.Scheme != "s3" {
		return s3.Config{}, fmt.Errorf("--repository-url %q: the scheme must be s3:// (for a local repository use --repository-dir)", raw)
	}
	if u.User != nil {
		return s3.Config{}, fmt.Errorf("--repository-url must not carry credentials: set %s and %s instead", envS3AccessKey, envS3SecretKey)
	}
	if u.Host == "" {
		return s3.Config{}, fmt.Errorf("--repository-url %q names no server: use s3://HOST[:PORT]/BUCKET[/PREFIX]", raw)
	}
	bucket, prefix, _ := strings.Cut(strings.Trim(u.Path, "/"), "/")
	if bucket == "" {
		return s3.Config{}, fmt.Errorf("--repository-url %q names no bucket: use s3://HOST[:PORT]/BUCKET[/PREFIX]", raw)
	}
	cfg := s3.Config{Endpoint: u.Host, UseTLS: true, Bucket: bucket, Prefix: prefix, Addressing: s3.AddressingPath,
		AccessKey: getenv(envS3AccessKey), SecretKey: getenv(envS3SecretKey)}
	q := u.Query()
	for key, vals := range q {
		v := vals[len(vals)-1]
		switch key {
		case "region":
			cfg.Region = v
		case "tls":
			on, err := strconv.ParseBool(v)
			if err != nil {
				return s3.Config{}, fmt.Errorf("--repository-url: tls=%q: use true or false", v)
			}
			cfg.UseTLS = on
		case "addressing":
			switch v {
			case "path":
				cfg.Addressing = s3.AddressingPath
			case "virtual":
				cfg.Addressing = s3.AddressingVirtualHost
			default:
				return s3.Config{}, fmt.Errorf("--repository-url: addressing=%q: use path or virtual", v)
			}
		default:
			return s3.Config{}, fmt.Errorf("--repository-url: unknown parameter %q (known: region, tls, addressing)", key)
		}
	}
	if (cfg.AccessKey == "") != (cfg.SecretKey == "") {
		return s3.Config{}, fmt.Errorf("set both %s and %s, or neither for anonymous access", envS3AccessKey, envS3SecretKey)
	}
	return cfg, nil
}

// defaultLocation is where the default repository lives: the S3 bucket
// of --repository-url when given, else the local directory.
func defaultLocation(l locations) (storage.Location, error) {
	if l.repositoryURL == "" {
		return storage.Location{Path: l.repositoryDir}, nil
	}
	cfg, err := parseS3URL(l.repositoryURL, os.Getenv)
	if err != nil {
		return storage.Location{}, err
	}
	return storage.Location{S3: &cfg}, nil
}

// openBackend opens the default repository's storage.
func openBackend(ctx context.Context, l locations) (blobstore.Backend, error) {
	loc, err := defaultLocation(l)
	if err != nil {
		return nil, err
	}
	return storage.OpenBackend(ctx, loc)
}
