package s3_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/s3"
	"github.com/cofferhq/coffer/internal/engine/blobstore/s3/s3test"
)

// randomBytes returns n bytes that differ for every seed.
func randomBytes(seed uint64, n int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

// bigSize is larger than two parts of s3test's part size (5 MiB) and not a
// multiple of it, so a multipart upload has a short last part.
const bigSize = 2*s3.MinPartSize + 123_457

func readAll(t *testing.T, b blobstore.Backend, name string, offset, length int64) []byte {
	t.Helper()
	rc, err := b.Open(ctxT(t), name, offset, length)
	if err != nil {
		t.Fatalf("Open(%s, %d, %d): %v", name, offset, length, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s [%d, +%d): %v", name, offset, length, err)
	}
	return got
}

func TestPutOpenRoundTrip(t *testing.T) {
	t.Parallel()
	b := s3test.Open(t)
	ctx := ctxT(t)
	for _, size := range []int{0, 1, 1000, s3.MinPartSize, s3.MinPartSize + 1, bigSize} {
		data := randomBytes(uint64(size), size)
		name := "packs/ab/size-" + strings.Repeat("x", size%7) + string(rune('a'+size%26))
		if err := b.Put(ctx, name, bytes.NewReader(data), int64(size)); err != nil {
			t.Fatalf("Put %d bytes: %v", size, err)
		}
		info, err := b.Stat(ctx, name)
		if err != nil || info.Size != int64(size) || info.Name != name || info.ModTime.IsZero() {
			t.Fatalf("Stat after Put of %d bytes = %+v, %v", size, info, err)
		}
		if got := readAll(t, b, name, 0, -1); !bytes.Equal(got, data) {
			t.Fatalf("%d bytes came back as %d different ones", size, len(got))
		}
	}
}

// TestMultipart checks that an object larger than the part size goes up in
// parts and comes back byte for byte, whole and in ranges across parts.
func TestMultipart(t *testing.T) {
	t.Parallel()
	srv := s3test.Require(t)
	cfg := srv.Config(srv.Bucket(t), "repo")
	b := s3test.OpenConfig(t, cfg)
	ctx := ctxT(t)
	data := randomBytes(1, bigSize)
	if err := b.Put(ctx, "packs/00/big", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put: %v", err)
	}
	info, err := srv.Client(t).StatObject(ctx, cfg.Bucket, "repo/packs/00/big", minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(info.ETag, "-3") {
		t.Errorf("ETag %q: want a three-part upload's", info.ETag)
	}
	if got := readAll(t, b, "packs/00/big", 0, -1); !bytes.Equal(got, data) {
		t.Fatalf("multipart object came back different (%d bytes)", len(got))
	}
	for _, r := range [][2]int64{
		{s3.MinPartSize - 10, 20},       // across the first part boundary
		{2*s3.MinPartSize - 1, 123_458}, // last byte of part 2 to the end
		{bigSize - 1, 1},
		{7, -1},
	} {
		want := data[r[0]:]
		if r[1] >= 0 {
			want = want[:r[1]]
		}
		if got := readAll(t, b, "packs/00/big", r[0], r[1]); !bytes.Equal(got, want) {
			t.Errorf("range [%d, +%d): %d bytes, differ from the data", r[0], r[1], len(got))
		}
	}
}

// TestPutNeverReplaces checks If-None-Match on both upload paths: the second
// Put of a name fails with ErrExists and the first object stays.
func TestPutNeverReplaces(t *testing.T) {
	t.Parallel()
	b := s3test.Open(t)
	ctx := ctxT(t)
	for _, tt := range []struct {
		name        string
		first, next int
	}{
		{"single over single", 100, 200},
		{"multipart over single", 100, bigSize},
		{"single over multipart", bigSize, 100},
		{"multipart over multipart", bigSize, bigSize + 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			name := "snapshots/" + strings.ReplaceAll(tt.name, " ", "-")
			first := randomBytes(2, tt.first)
			if err := b.Put(ctx, name, bytes.NewReader(first), int64(len(first))); err != nil {
				t.Fatalf("first Put: %v", err)
			}
			next := randomBytes(3, tt.next)
			err := b.Put(ctx, name, bytes.NewReader(next), int64(len(next)))
			if !errors.Is(err, blobstore.ErrExists) {
				t.Fatalf("second Put: %v, want ErrExists", err)
			}
			if blobstore.IsTransient(err) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), b.Location()) {
				t.Errorf("second Put: %q: want a permanent error naming %s and %s", err, name, b.Location())
			}
			if got := readAll(t, b, name, 0, -1); !bytes.Equal(got, first) {
				t.Fatalf("the object changed: %d bytes, first Put had %d", len(got), len(first))
			}
		})
	}
}

// TestMultipartCompletionChecksExistence races a multipart upload against a
// Put of the same name that lands between the upload's start and its
// completion: the completion must fail, not replace the object.
func TestMultipartCompletionChecksExistence(t *testing.T) {
	t.Parallel()
	srv := s3test.Require(t)
	cfg := srv.Config(srv.Bucket(t), "")
	b := s3test.OpenConfig(t, cfg)
	ctx := ctxT(t)
	core := minio.Core{Client: srv.Client(t)}

	opts := minio.PutObjectOptions{}
	opts.SetMatchETagExcept("*")
	id, err := core.NewMultipartUpload(ctx, cfg.Bucket, "config", opts)
	if err != nil {
		t.Fatal(err)
	}
	part := randomBytes(4, s3.MinPartSize)
	p, err := core.PutObjectPart(ctx, cfg.Bucket, "config", id, 1, bytes.NewReader(part), int64(len(part)), minio.PutObjectPartOptions{})
	if err != nil {
		t.Fatal(err)
	}

	winner := []byte("the first writer")
	if err := b.Put(ctx, "config", bytes.NewReader(winner), int64(len(winner))); err != nil {
		t.Fatalf("Put: %v", err)
	}
	_, err = core.CompleteMultipartUpload(ctx, cfg.Bucket, "config", id,
		[]minio.CompletePart{{PartNumber: 1, ETag: p.ETag}}, opts)
	if resp := minio.ToErrorResponse(err); resp.StatusCode != 412 {
		t.Fatalf("CompleteMultipartUpload over an existing object: %v, want 412 Precondition Failed", err)
	}
	if got := readAll(t, b, "config", 0, -1); !bytes.Equal(got, winner) {
		t.Fatalf("the completion replaced the object with %d bytes", len(got))
	}
	core.AbortMultipartUpload(ctx, cfg.Bucket, "config", id)
}

// lyingReader claims size bytes when asked by Seek but reads actual bytes.
type lyingReader struct {
	*bytes.Reader
	size int64
}

func (l *lyingReader) Seek(offset int64, whence int) (int64, error) {
	if whence == io.SeekEnd {
		l.Reader.Seek(0, io.SeekEnd)
		return l.size, nil
	}
	return l.Reader.Seek(offset, whence)
}

func TestPutWrongSizeStoresNothing(t *testing.T) {
	t.Parallel()
	b := s3test.Open(t)
	ctx := ctxT(t)
	tests := []struct {
		name   string
		actual int
		size   int64
		lie    bool // the reader's Seek claims size bytes
	}{
		{"fewer", 100, 101, false},
		{"more", 101, 100, false},
		{"empty but sized", 0, 1, false},
		{"fewer, seek lies", 100, 101, true},
		{"more, seek lies", 101, 100, true},
		{"more than a part, seek lies", bigSize + 1, bigSize, true},
		{"fewer than a part, seek lies", bigSize - 1, bigSize, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var data io.ReadSeeker = bytes.NewReader(randomBytes(5, tt.actual))
			if tt.lie {
				data = &lyingReader{Reader: data.(*bytes.Reader), size: tt.size}
			}
			name := "packs/" + strings.NewReplacer(" ", "-", ",", "").Replace(tt.name)
			err := b.Put(ctx, name, data, tt.size)
			if err == nil {
				t.Fatal("Put succeeded")
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("error %q does not name the object", err)
			}
			if _, err := b.Stat(ctx, name); !errors.Is(err, blobstore.ErrNotFound) {
				t.Fatalf("Stat after a failed Put: %v, want ErrNotFound", err)
			}
		})
	}
}

// TestPutRereadsFromStart checks that Put seeks to the start of data itself.
func TestPutRereadsFromStart(t *testing.T) {
	t.Parallel()
	b := s3test.Open(t)
	ctx := ctxT(t)
	data := randomBytes(6, 1000)
	r := bytes.NewReader(data)
	io.CopyN(io.Discard, r, 600)
	if err := b.Put(ctx, "index/0", r, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, b, "index/0", 0, -1); !bytes.Equal(got, data) {
		t.Fatal("Put sent data from where the reader stood, not from its start")
	}
}

func TestOpenRanges(t *testing.T) {
	t.Parallel()
	b := s3test.Open(t)
	ctx := ctxT(t)
	data := randomBytes(7, 1000)
	if err := b.Put(ctx, "obj", bytes.NewReader(data), 1000); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "empty", bytes.NewReader(nil), 0); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		object         string
		offset, length int64
		want           []byte
		err            error
	}{
		{"whole", "obj", 0, -1, data, nil},
		{"head", "obj", 0, 10, data[:10], nil},
		{"middle", "obj", 100, 200, data[100:300], nil},
		{"tail", "obj", 990, -1, data[990:], nil},
		{"up to the end", "obj", 990, 10, data[990:], nil},
		{"nothing at the end", "obj", 1000, -1, []byte{}, nil},
		{"zero bytes at the end", "obj", 1000, 0, []byte{}, nil},
		{"zero bytes inside", "obj", 5, 0, []byte{}, nil},
		{"one past the end", "obj", 990, 11, nil, blobstore.ErrRange},
		{"offset past the end", "obj", 1001, -1, nil, blobstore.ErrRange},
		{"offset far past the end", "obj", 5000, 10, nil, blobstore.ErrRange},
		{"zero bytes past the end", "obj", 1001, 0, nil, blobstore.ErrRange},
		{"negative offset", "obj", -1, 10, nil, blobstore.ErrRange},
		{"huge length", "obj", 1, math.MaxInt64, nil, blobstore.ErrRange},
		{"huge offset and length", "obj", 1 << 40, math.MaxInt64, nil, blobstore.ErrRange},
		{"huge offset", "obj", math.MaxInt64, -1, nil, blobstore.ErrRange},
		{"empty object", "empty", 0, -1, []byte{}, nil},
		{"empty object, zero bytes", "empty", 0, 0, []byte{}, nil},
		{"past an empty object", "empty", 0, 1, nil, blobstore.ErrRange},
		{"missing", "nope", 0, -1, nil, blobstore.ErrNotFound},
		{"missing, ranged", "nope", 10, 10, nil, blobstore.ErrNotFound},
		{"missing, zero bytes", "nope", 0, 0, nil, blobstore.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := b.Open(ctx, tt.object, tt.offset, tt.length)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Open: %v, want %v", err, tt.err)
				}
				if !strings.Contains(err.Error(), tt.object) || !strings.Contains(err.Error(), b.Location()) {
					t.Errorf("error %q does not name the object and the location", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Fatalf("read %d bytes (%v), want %d", len(got), err, len(tt.want))
			}
		})
	}
}

func TestStatDeleteList(t *testing.T) {
	t.Parallel()
	b := s3test.Open(t)
	ctx := ctxT(t)
	if _, err := b.Stat(ctx, "config"); !errors.Is(err, blobstore.ErrNotFound) || !strings.Contains(err.Error(), "config") {
		t.Fatalf("Stat of a missing object: %v, want ErrNotFound naming it", err)
	}
	names := []string{"config", "packs/00/a", "packs/00/b", "packs/01/c", "snapshots/s1"}
	for i, n := range names {
		if err := b.Put(ctx, n, bytes.NewReader(randomBytes(uint64(i), i)), int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	list := func(prefix string) []string {
		var got []string
		err := b.List(ctx, prefix, func(info blobstore.ObjectInfo) error {
			if info.Size != int64(slices.Index(names, info.Name)) {
				t.Errorf("List: %+v has the wrong size", info)
			}
			got = append(got, info.Name)
			return nil
		})
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		slices.Sort(got)
		return got
	}
	for prefix, want := range map[string][]string{
		"":          names,
		"packs/":    {"packs/00/a", "packs/00/b", "packs/01/c"},
		"packs/00":  {"packs/00/a", "packs/00/b"},
		"packs/00/": {"packs/00/a", "packs/00/b"},
		"p":         {"packs/00/a", "packs/00/b", "packs/01/c"},
		"conf":      {"config"},
		"nothing/":  nil,
	} {
		if got := list(prefix); !slices.Equal(got, want) {
			t.Errorf("List(%q) = %q, want %q", prefix, got, want)
		}
	}

	stop := errors.New("stop")
	calls := 0
	err := b.List(ctx, "", func(blobstore.ObjectInfo) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Errorf("List stopped by fn: %v after %d calls, want fn's error after 1", err, calls)
	}

	if err := b.Delete(ctx, "packs/00/a"); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "packs/00/a"); err != nil {
		t.Fatalf("second Delete: %v, want nil", err)
	}
	if err := b.Delete(ctx, "never/was"); err != nil {
		t.Fatalf("Delete of a missing object: %v", err)
	}
	if _, err := b.Stat(ctx, "packs/00/a"); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Stat after Delete: %v", err)
	}
	if got := list("packs/00"); !slices.Equal(got, []string{"packs/00/b"}) {
		t.Errorf("List after Delete = %q", got)
	}
	// A deleted name can be written again.
	if err := b.Put(ctx, "packs/00/a", bytes.NewReader([]byte("again")), 5); err != nil {
		t.Fatalf("Put after Delete: %v", err)
	}
}

func TestInvalidNames(t *testing.T) {
	t.Parallel()
	b := s3test.Open(t)
	ctx := ctxT(t)
	for _, name := range []string{"", "/abs", "a//b", "../x", "a/./b", "sp ace", "trailing/"} {
		if err := b.Put(ctx, name, bytes.NewReader(nil), 0); err == nil {
			t.Errorf("Put(%q) succeeded", name)
		}
		if _, err := b.Open(ctx, name, 0, -1); err == nil {
			t.Errorf("Open(%q) succeeded", name)
		}
		if _, err := b.Stat(ctx, name); err == nil || errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("Stat(%q): %v, want an invalid-name error", name, err)
		}
		if err := b.Delete(ctx, name); err == nil {
			t.Errorf("Delete(%q) succeeded", name)
		}
	}
}

// TestPrefixIsolation checks that backends on different prefixes of one
// bucket never see each other's objects — including prefixes where one is
// a string prefix of the other.
func TestPrefixIsolation(t *testing.T) {
	t.Parallel()
	srv := s3test.Require(t)
	bucket := srv.Bucket(t)
	ctx := ctxT(t)
	repo := s3test.OpenConfig(t, srv.Config(bucket, "coffer/repo"))
	repo1 := s3test.OpenConfig(t, srv.Config(bucket, "/coffer/repo1/"))
	whole := s3test.OpenConfig(t, srv.Config(bucket, ""))

	for _, b := range []*s3.Backend{repo, repo1} {
		data := []byte(b.Location())
		if err := b.Put(ctx, "config", bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatalf("Put to %s: %v", b.Location(), err)
		}
		if err := b.Put(ctx, "packs/"+strings.ReplaceAll(b.Location()[len(b.Location())-5:], "/", "_"), bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []*s3.Backend{repo, repo1} {
		if got := readAll(t, b, "config", 0, -1); string(got) != b.Location() {
			t.Errorf("%s reads %q as its config", b.Location(), got)
		}
		var names []string
		b.List(ctx, "", func(info blobstore.ObjectInfo) error { names = append(names, info.Name); return nil })
		if len(names) != 2 {
			t.Errorf("%s lists %q, want its own two objects", b.Location(), names)
		}
	}
	var keys []string
	whole.List(ctx, "coffer/", func(info blobstore.ObjectInfo) error { keys = append(keys, info.Name); return nil })
	slices.Sort(keys)
	want := []string{"coffer/repo/config", "coffer/repo/packs/_repo", "coffer/repo1/config", "coffer/repo1/packs/repo1"}
	if !slices.Equal(keys, want) {
		t.Errorf("the bucket holds %q, want %q", keys, want)
	}
	if err := repo.Delete(ctx, "config"); err != nil {
		t.Fatal(err)
	}
	if _, err := repo1.Stat(ctx, "config"); err != nil {
		t.Errorf("deleting repo's config touched repo1's: %v", err)
	}
}

// TestConcurrentPutsOneWins races writers of one name: exactly one Put
// succeeds, the others get ErrExists, and the object is one writer's whole.
func TestConcurrentPutsOneWins(t *testing.T) {
	t.Parallel()
	b := s3test.Open(t)
	for _, size := range []int{1000, bigSize} {
		name := fmt.Sprintf("packs/99/raced-%d", size)
		const writers = 6
		datas := make([][]byte, writers)
		errs := make([]error, writers)
		var wg sync.WaitGroup
		for i := range writers {
			datas[i] = randomBytes(uint64(100+i), size)
			wg.Go(func() {
				errs[i] = b.Put(ctxT(t), name, bytes.NewReader(datas[i]), int64(size))
			})
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner < 0:
				winner = i
			case err == nil:
				t.Errorf("%d bytes: writers %d and %d both succeeded", size, winner, i)
			case !errors.Is(err, blobstore.ErrExists):
				t.Errorf("%d bytes: writer %d: %v, want ErrExists", size, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("%d bytes: no writer succeeded", size)
		}
		if got := readAll(t, b, name, 0, -1); !bytes.Equal(got, datas[winner]) {
			t.Errorf("%d bytes: the object is not the winner's", size)
		}
	}
}
