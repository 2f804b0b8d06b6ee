package main

import (
	"strings"
	"testing"

	"github.com/cofferhq/coffer/internal/engine/blobstore/s3"
)

func TestParseS3URL(t *testing.T) {
	env := map[string]string{envS3AccessKey: "AK", envS3SecretKey: "SK"}
	getenv := func(k string) string { return env[k] }
	cfg, err := parseS3URL("s3://127.0.0.1:7070/backups/site-a/coffer?tls=false&region=eu-1", getenv)
	if err != nil {
		t.Fatal(err)
	}
	want := s3.Config{Endpoint: "127.0.0.1:7070", Bucket: "backups", Prefix: "site-a/coffer", Region: "eu-1",
		AccessKey: "AK", SecretKey: "SK", Addressing: s3.AddressingPath}
	if cfg != want {
		t.Fatalf("parseS3URL = %+v, want %+v", cfg, want)
	}
	if cfg, err := parseS3URL("s3://s3.example.com/b?addressing=virtual", getenv); err != nil || !cfg.UseTLS || cfg.Addressing != s3.AddressingVirtualHost {
		t.Fatalf("defaults: %+v, %v (want TLS on, virtual-host addressing)", cfg, err)
	}
	for raw, wantErr := range map[string]string{
		"http://host/bucket":         "scheme must be s3",
		"s3://ak:sk@host/bucket":     "must not carry credentials",
		"s3:///bucket":               "names no server",
		"s3://host/":                 "names no bucket",
		"s3://host/b?tls=maybe":      "use true or false",
		"s3://host/b?addressing=odd": "use path or virtual",
		"s3://host/b?secret_key=x":   "unknown parameter",
	} {
		if _, err := parseS3URL(raw, getenv); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("parseS3URL(%q) = %v, want an error containing %q", raw, err, wantErr)
		}
	}
	if _, err := parseS3URL("s3://host/b", func(k string) string { return map[string]string{envS3AccessKey: "AK"}[k] }); err == nil {
		t.Error("an access key without a secret key was accepted")
	}
}
