package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/protocol"
)

// startUpload starts an ad-hoc backup on s and returns an uploader for it.
func startUpload(t *testing.T, s *fakeServer, ctx context.Context, o uploaderOptions) (*uploader, *blob.Codec, string) {
	t.Helper()
	a := s.agent(t)
	started, err := a.api.StartBackup(context.Background(), protocol.StartBackupRequest{Paths: []string{"/x"}})
	if err != nil {
		t.Fatal(err)
	}
	codec, err := codecFor(started.Repository)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(codec.Close)
	u := newUploader(ctx, a.api, started.Backup.ID, codec, started.Repository, o)
	t.Cleanup(u.Close)
	return u, codec, started.Backup.ID
}

// testBlobs returns n blobs of up to maxSize bytes, half compressible.
func testBlobs(n, maxSize int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		size := 1 + rand.N(maxSize)
		if i%2 == 0 {
			out[i] = repotest.Random(uint64(i), size)
		} else {
			out[i] = bytes.Repeat([]byte{byte(i)}, size)
		}
	}
	return out
}

func TestUploaderBatching(t *testing.T) {
	s := newFakeServer(t)
	const uploads, target = 2, 256 << 10
	// Hold the first uploads until several are waiting, so that the
	// savers really find every buffer busy.
	gate := make(chan struct{})
	var once sync.Once
	var waiting atomic.Int32
	s.uploadHook = func(r *http.Request) bool {
		if waiting.Add(1) >= uploads {
			once.Do(func() { close(gate) })
		}
		<-gate
		return false
	}
	u, codec, id := startUpload(t, s, context.Background(), uploaderOptions{uploads: uploads, batchBytes: target})
	blobs := testBlobs(300, 64<<10)
	ctx := context.Background()
	var wg sync.WaitGroup
	var saved sync.Map
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < len(blobs); i += 8 {
				bid := codec.ID(blobs[i])
				missing, err := u.Missing(ctx, []blob.ID{bid})
				if err != nil {
					t.Error(err)
					return
				}
				if len(missing) == 0 {
					continue // an equal blob was saved before
				}
				ok, err := u.Save(ctx, blob.Data, bid, blobs[i], blob.Fastest)
				if err != nil || !ok {
					t.Errorf("save %d: %v %v", i, ok, err)
					return
				}
				saved.Store(bid, blobs[i])
				// Saving it again stores nothing.
				if again, err := u.Save(ctx, blob.Data, bid, blobs[i], blob.Fastest); again || err != nil {
					t.Errorf("second save of %d: %v %v", i, again, err)
				}
			}
		})
	}
	wg.Wait()
	if err := u.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.maxInflight.Load(); n > uploads {
		t.Errorf("%d uploads at once, want at most %d", n, uploads)
	}
	if n := u.peakBuffers.Load(); n > uploads+1 {
		t.Errorf("%d batch buffers, want at most %d", n, uploads+1)
	}
	maxFrame := int64(protocol.FrameHeaderSize + 64<<10)
	if n := s.maxBody.Load(); n > target+maxFrame {
		t.Errorf("a body of %d bytes, want at most %d", n, target+maxFrame)
	}
	if s.uploads.Load() < 10 {
		t.Errorf("only %d uploads", s.uploads.Load())
	}
	// Every blob reached the repository, verified by SavePayload.
	bw, _ := s.writer(id)
	if err := bw.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	count := 0
	saved.Range(func(k, v any) bool {
		count++
		got, err := s.repo.LoadBlob(ctx, blob.Data, k.(blob.ID), nil)
		if err != nil || !bytes.Equal(got, v.([]byte)) {
			t.Errorf("blob %s: %v", k.(blob.ID).Short(), err)
		}
		return true
	})
	if count == 0 || u.storedBlobs.Load() != uint64(count) || u.sentBytes.Load() == 0 || u.storedBytes.Load() == 0 {
		t.Errorf("%d blobs saved; uploader counted %d stored, %d bytes sent, %d stored", count, u.storedBlobs.Load(), u.sentBytes.Load(), u.storedBytes.Load())
	}
}

func TestUploaderMissing(t *testing.T) {
	s := newFakeServer(t)
	s.maxCheck = 7
	u, codec, _ := startUpload(t, s, context.Background(), uploaderOptions{})
	ctx := context.Background()
	blobs := testBlobs(30, 100)
	var ids []blob.ID
	for _, b := range blobs {
		ids = append(ids, codec.ID(b))
	}
	// Blobs saved by this backup count as present, even before they are uploaded.
	for _, i := range []int{3, 10, 29} {
		if _, err := u.Save(ctx, blob.Data, ids[i], blobs[i], blob.Off); err != nil {
			t.Fatal(err)
		}
	}
	missing, err := u.Missing(ctx, ids) // 30 ids in batches of 7
	if err != nil {
		t.Fatal(err)
	}
	var want []blob.ID
	for i, id := range ids {
		if i != 3 && i != 10 && i != 29 {
			want = append(want, id)
		}
	}
	if len(missing) != len(want) {
		t.Fatalf("%d missing, want %d", len(missing), len(want))
	}
	for i := range want {
		if missing[i] != want[i] {
			t.Fatalf("missing[%d] = %s, want %s (input order)", i, missing[i].Short(), want[i].Short())
		}
	}
}

func TestUploaderFailure(t *testing.T) {
	s := newFakeServer(t)
	u, codec, id := startUpload(t, s, context.Background(), uploaderOptions{uploads: 1, batchBytes: 4 << 10})
	s.backup(id).state = "failed" // the server refuses uploads from now on
	ctx := context.Background()
	var err error
	for _, b := range testBlobs(200, 8<<10) {
		if _, err = u.Save(ctx, blob.Data, codec.ID(b), b, blob.Off); err != nil {
			break
		}
	}
	ferr := u.Flush(ctx)
	if ferr == nil || !strings.Contains(ferr.Error(), "not running") {
		t.Errorf("Flush: %v", ferr)
	}
	if err != nil && !strings.Contains(err.Error(), "not running") {
		t.Errorf("Save: %v", err)
	}
	if _, err := u.Save(ctx, blob.Data, blob.ID{1}, []byte("x"), blob.Off); err == nil {
		t.Error("Save after a failure succeeded")
	}
}

func TestUploaderTooLarge(t *testing.T) {
	s := newFakeServer(t)
	s.maxUpload = 1000
	u, codec, _ := startUpload(t, s, context.Background(), uploaderOptions{})
	b := repotest.Random(1, 5000)
	_, err := u.Save(context.Background(), blob.Data, codec.ID(b), b, blob.Fastest)
	if err == nil || !strings.Contains(err.Error(), "upload limit") {
		t.Fatalf("err %v", err)
	}
}

func TestUploaderCanceled(t *testing.T) {
	s := newFakeServer(t)
	arrived := make(chan struct{}, 100)
	s.uploadHook = func(r *http.Request) bool {
		io.Copy(io.Discard, r.Body) // the server notices a client leaving only once the body is read
		arrived <- struct{}{}
		<-r.Context().Done()
		return true
	}
	ctx, cancel := context.WithCancel(context.Background())
	u, codec, _ := startUpload(t, s, ctx, uploaderOptions{uploads: 1, batchBytes: 1 << 10})
	done := make(chan error, 1)
	go func() {
		var err error
		for _, b := range testBlobs(100, 4<<10) {
			if _, err = u.Save(ctx, blob.Data, codec.ID(b), b, blob.Off); err != nil {
				break
			}
		}
		done <- err
	}()
	<-arrived // an upload hangs: the savers wait for it
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Save after cancel: %v", err)
	}
}
