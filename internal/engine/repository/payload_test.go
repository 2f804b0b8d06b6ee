package repository_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
)

// TestSavePayloadAndReadPayloads follows an upload from an agent (payloads
// made with only the id key) into packs, and back out to a restoring agent.
func TestSavePayloadAndReadPayloads(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", encrypted), func(t *testing.T) {
			ctx := context.Background()
			r := repotest.New(t, repotest.Options{Encrypted: encrypted})
			agent, err := blob.NewCodec(blob.Keys{IDKey: r.Codec().IDKey()})
			if err != nil {
				t.Fatal(err)
			}
			defer agent.Close()
			plains := [][]byte{
				bytes.Repeat([]byte("compressible "), 20000),
				repotest.Random(3, 300<<10),
				{},
			}
			w, err := r.NewWriter(ctx, repository.WriterOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			var ids []blob.ID
			for _, p := range plains {
				id := agent.ID(p)
				payload, err := agent.Compress(nil, p, blob.Fastest)
				if err != nil {
					t.Fatal(err)
				}
				if ok, err := w.SavePayload(ctx, blob.Data, id, payload, len(p)); !ok || err != nil {
					t.Fatalf("SavePayload = %v, %v", ok, err)
				}
				if ok, err := w.SavePayload(ctx, blob.Data, id, payload, len(p)); ok || err != nil {
					t.Fatalf("SavePayload again = %v, %v; want false, nil", ok, err)
				}
				ids = append(ids, id)
			}
			// A lie is refused and not stored.
			bad := agent.ID([]byte("claimed"))
			if _, err := w.SavePayload(ctx, blob.Data, bad, []byte("other"), 5); !errors.Is(err, blob.ErrCorrupt) {
				t.Fatalf("SavePayload of a mismatched payload = %v, want ErrCorrupt", err)
			}
			if err := w.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			locs, err := r.Locate(ctx, append(ids, bad))
			if err != nil || len(locs) != len(ids) {
				t.Fatalf("Locate = %d locations, %v; want %d", len(locs), err, len(ids))
			}
			for i, id := range ids {
				got, err := r.LoadBlob(ctx, blob.Data, id, nil)
				if err != nil || !bytes.Equal(got, plains[i]) {
					t.Fatalf("LoadBlob %d = %v", i, err)
				}
			}
			reqs := make([]repository.BlobRequest, len(ids))
			for i, id := range ids {
				reqs[i] = repository.BlobRequest{ID: id, Loc: locs[id]}
			}
			seen := 0
			err = r.ReadPayloads(ctx, blob.Data, reqs, func(i int, payload []byte, err error) error {
				if err != nil {
					return err
				}
				seen++
				got, err := agent.DecodePayload(nil, blob.Data, ids[i], payload, len(plains[i]))
				if err != nil || !bytes.Equal(got, plains[i]) {
					return fmt.Errorf("payload %d does not decode: %v", i, err)
				}
				return nil
			})
			if err != nil || seen != len(ids) {
				t.Fatalf("ReadPayloads = %v after %d blobs", err, seen)
			}
		})
	}
}

// TestWriterUnderCallersSession: a writer given an open session writes
// under it and leaves it open; one of its own ends its session.
func TestWriterUnderCallersSession(t *testing.T) {
	ctx := context.Background()
	r := repotest.New(t, repotest.Options{})
	s, err := r.Index().BeginSession(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	w, err := r.NewWriter(ctx, repository.WriterOptions{Session: &repository.Session{ID: s.ID}})
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("under the caller's session")
	if _, err := w.Save(ctx, blob.Data, r.BlobID(plain), plain, blob.Fastest); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Index().RenewSession(ctx, s, time.Hour); err != nil {
		t.Fatalf("the caller's session after the writer closed: %v (the writer ended it)", err)
	}
	if missing, err := r.Index().Missing(ctx, []blob.ID{r.BlobID(plain)}); err != nil || len(missing) != 0 {
		t.Fatalf("the blob written under the caller's session is not indexed: %v, %v", missing, err)
	}
}
