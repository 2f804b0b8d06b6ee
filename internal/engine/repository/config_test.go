package repository

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/chunker"
)

func masterKey(seed byte) []byte { return bytes.Repeat([]byte{seed}, MasterKeySize) }

func TestInitAndOpen(t *testing.T) {
	ctx := context.Background()
	for _, encrypted := range []bool{false, true} {
		b := mem.New(mem.Options{})
		cfg, keys, err := Init(ctx, b, InitOptions{MasterKey: masterKey(1), Encrypted: encrypted})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.ChunkerParams() != chunker.DefaultParams() || cfg.PackSize != 16<<20 || len(cfg.ID) != 32 {
			t.Errorf("config = %+v", cfg)
		}
		got, gotKeys, err := OpenConfig(ctx, b, masterKey(1))
		if err != nil {
			t.Fatal(err)
		}
		if gotKeys != keys || got.ID != cfg.ID || got.Encrypted != encrypted || !got.CreatedAt.Equal(cfg.CreatedAt) {
			t.Errorf("reopened config or keys differ: %+v", got)
		}
		if keys.IDKey == ([32]byte{}) || keys.DataKey == ([32]byte{}) {
			t.Error("keys are zero")
		}
		// The config object holds no key in the clear.
		info, err := b.Stat(ctx, ConfigName)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := blobstore.ReadRange(ctx, b, ConfigName, 0, info.Size)
		if err != nil || len(raw) == 0 {
			t.Fatalf("read config: %d bytes, %v", len(raw), err)
		}
		if bytes.Contains(raw, keys.IDKey[:8]) || bytes.Contains(raw, keys.DataKey[:8]) {
			t.Error("config stores a key in the clear")
		}
		// A second Init on the same location is refused.
		if _, _, err := Init(ctx, b, InitOptions{MasterKey: masterKey(1)}); !errors.Is(err, blobstore.ErrExists) {
			t.Errorf("second Init = %v, want ErrExists", err)
		}
	}
}

func mustJSON(t *testing.T, c *Config) []byte {
	t.Helper()
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func TestOpenRefusesBadConfigs(t *testing.T) {
	ctx := context.Background()
	if _, _, err := OpenConfig(ctx, mem.New(mem.Options{}), masterKey(1)); !errors.Is(err, ErrNotRepository) {
		t.Errorf("empty location: %v, want ErrNotRepository", err)
	}
	b := mem.New(mem.Options{})
	if _, _, err := Init(ctx, b, InitOptions{MasterKey: masterKey(1), Encrypted: true}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenConfig(ctx, b, masterKey(2)); err == nil || !strings.Contains(err.Error(), "master key") {
		t.Errorf("wrong master key: %v", err)
	}

	// Tampering with any field makes the keys unreadable: rewrite the
	// config with encryption turned off.
	cfg, _, _ := OpenConfig(ctx, b, masterKey(1))
	for _, tamper := range []func(c *Config){
		func(c *Config) { c.Encrypted = false },
		func(c *Config) { c.Chunker.Min *= 2 },
		func(c *Config) { c.PackSize = 2 << 20 },
		func(c *Config) { c.ID = strings.Repeat("0", 32) },
	} {
		c := *cfg
		tamper(&c)
		forged := mem.New(mem.Options{})
		data := mustJSON(t, &c)
		if err := forged.Put(ctx, ConfigName, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		if _, _, err := OpenConfig(ctx, forged, masterKey(1)); err == nil || !strings.Contains(err.Error(), "modified") {
			t.Errorf("tampered config opened: %v", err)
		}
	}
	for name, data := range map[string]string{
		"not json":      "hello",
		"unknown field": `{"version":1,"extra":true}`,
		"future format": `{"version":2}`,
	} {
		forged := mem.New(mem.Options{})
		if err := forged.Put(ctx, ConfigName, strings.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		if _, _, err := OpenConfig(ctx, forged, masterKey(1)); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
}

func TestInitValidates(t *testing.T) {
	ctx := context.Background()
	cases := []InitOptions{
		{MasterKey: []byte("short")},
		{MasterKey: masterKey(1), Chunker: chunker.Params{Min: 10, Avg: 20, Max: 30}},
		{MasterKey: masterKey(1), PackSize: 100},
	}
	for _, o := range cases {
		b := mem.New(mem.Options{})
		if _, _, err := Init(ctx, b, o); err == nil {
			t.Errorf("Init(%+v) accepted", o)
		}
		if _, err := b.Stat(ctx, ConfigName); !errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("a refused Init left a config behind: %v", err)
		}
	}
}
