package backups

import (
	"bytes"
	"testing"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/repos"
)

// FuzzUploadFrames feeds arbitrary upload bodies to the frame reader of
// uploads: it never panics, refuses with a coffer error, and accepts only
// frames whose payloads decode to their ids.
func FuzzUploadFrames(f *testing.F) {
	repo := repotest.New(f, repotest.Options{})
	svc := New(Options{Repos: repos.New(repo, nil)})
	codec := repo.Codec()
	var seed bytes.Buffer
	for i, plain := range [][]byte{[]byte("hello"), bytes.Repeat([]byte("ab"), 500), {}} {
		t := blob.Data
		if i == 1 {
			t = blob.Tree
		}
		payload, err := codec.Compress(nil, plain, blob.Fastest)
		if err != nil {
			f.Fatal(err)
		}
		protocol.WriteFrame(&seed, t, codec.IDOf(t, plain), len(plain), payload)
	}
	f.Add(seed.Bytes())
	f.Add(seed.Bytes()[:50])
	corrupt := bytes.Clone(seed.Bytes())
	corrupt[protocol.FrameHeaderSize] ^= 1
	f.Add(corrupt)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		arena, frames, err := svc.readFrames(codec, bytes.NewReader(body), int64(len(body)), new(uploadBuf))
		if err != nil {
			if coffer.ErrorCode(err) == "internal" {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		for _, fr := range frames {
			if _, err := codec.DecodePayload(nil, fr.t, fr.id, arena[fr.off:fr.off+fr.n], fr.rawLen); err != nil {
				t.Fatalf("accepted frame %s does not verify: %v", fr.id.Short(), err)
			}
		}
	})
}
