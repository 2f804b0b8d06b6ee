package mem_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/blobstore/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) blobstore.Backend {
		return mem.New(mem.Options{Name: t.Name()})
	})
}

func TestHooks(t *testing.T) {
	ctx := t.Context()
	boom := errors.New("boom")
	var ops []mem.Op
	b := mem.New(mem.Options{
		BeforeOp: func(op mem.Op, name string) error {
			ops = append(ops, op)
			if op == mem.OpStat {
				return blobstore.Transient(boom)
			}
			return nil
		},
		AfterPut:   func(name string) error { return boom },
		BeforeRead: func(name string, off int64) error { return errors.New("read fault") },
	})
	data := storetest.Data(1, 100)

	// AfterPut: the error comes back but the object is stored.
	if err := b.Put(ctx, "x", bytes.NewReader(data), 100); !errors.Is(err, boom) {
		t.Fatalf("Put: %v, want the AfterPut error", err)
	}
	if _, err := b.Stat(ctx, "x"); !errors.Is(err, boom) || !blobstore.IsTransient(err) {
		t.Errorf("Stat: %v, want the transient BeforeOp error", err)
	}
	rc, err := b.Open(ctx, "x", 0, -1)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	if _, err := rc.Read(make([]byte, 10)); err == nil {
		t.Error("Read succeeded despite BeforeRead")
	}
	if diff := cmp.Diff([]mem.Op{mem.OpPut, mem.OpStat, mem.OpOpen}, ops); diff != "" {
		t.Errorf("BeforeOp calls (-want +got):\n%s", diff)
	}
}

func TestBeforeReadOffsets(t *testing.T) {
	var offsets []int64
	b := mem.New(mem.Options{BeforeRead: func(_ string, off int64) error {
		offsets = append(offsets, off)
		return nil
	}})
	storetest.Put(t, b, "x", storetest.Data(1, 100))
	rc, err := b.Open(t.Context(), "x", 10, 50)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	buf := make([]byte, 20)
	for range 3 {
		if _, err := rc.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]int64{10, 30, 50}, offsets); diff != "" {
		t.Errorf("BeforeRead offsets (-want +got):\n%s", diff)
	}
}

func TestCopiesData(t *testing.T) {
	b := mem.New(mem.Options{})
	data := storetest.Data(1, 100)
	orig := append([]byte(nil), data...)
	storetest.Put(t, b, "x", data)
	data[0] ^= 0xff
	got := storetest.Read(t, b, "x")
	if got[0] != orig[0] {
		t.Fatal("a caller's buffer changed a stored object")
	}
	got[1] ^= 0xff
	if again := storetest.Read(t, b, "x"); again[1] != orig[1] {
		t.Fatal("a read buffer changed a stored object")
	}
}

func TestClosed(t *testing.T) {
	b := mem.New(mem.Options{})
	b.Close()
	if _, err := b.Stat(context.Background(), "x"); err == nil || errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Stat after Close: %v, want a closed error", err)
	}
}
