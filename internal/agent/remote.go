package agent

import (
	"context"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/cofferhq/coffer/internal/apiclient"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/pack"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/restorer"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/cofferhq/coffer/internal/protocol"
)

// Limits of the blob routes (protocol maxItems).
const (
	maxLocateIDs = 10000
	maxReadBlobs = 4096
	// defaultReadBytes bounds the stored bytes of one read request when
	// the server does not say (RepositoryParams.MaxUploadBytes).
	defaultReadBytes = 64 << 20
)

// restoreAPI is what a restore reads through (an *apiclient.Client).
type restoreAPI interface {
	Locate(ctx context.Context, req protocol.LocateRequest) ([]protocol.BlobLocation, error)
	ReadBlobs(ctx context.Context, req protocol.ReadRequest, fn func(protocol.Frame) error) error
	Blob(ctx context.Context, restoreID string, t blob.Type, id blob.ID) (protocol.Frame, error)
}

var _ restoreAPI = (*apiclient.Client)(nil)

// remoteRepo is the repository of a restore as the server serves it: it
// implements restorer.Repository. The server sends blobs as payloads
// (compressed, not encrypted); every one is decompressed and re-hashed
// against its id here (blob.Codec.DecodePayload) before the restorer sees
// it, so a restore writes only content that matches the snapshot.
type remoteRepo struct {
	api       restoreAPI
	restoreID string
	codec     *blob.Codec
	// maxRead bounds the stored bytes one read request asks for (the
	// server refuses more; 0: defaultReadBytes).
	maxRead int64

	// trees holds trees fetched ahead and not yet used (see prefetch),
	// cached their plaintext bytes.
	mu     sync.Mutex
	trees  map[blob.ID]*tree.Tree
	sizes  map[blob.ID]int
	cached int
}

// Trees are fetched ahead of the restorer's walk, a level of the tree at a
// time with one read request per prefetchBatch trees, instead of one
// request per directory: the corpus of make bench has 1 200 directories,
// and a request costs the server an authentication, a restore lookup and
// an index query. At most treeCacheBytes of trees wait to be used; past
// that, directories are fetched when the walk reaches them.
const (
	treeCacheBytes = 8 << 20
	prefetchBatch  = 1024
)

var _ restorer.Repository = (*remoteRepo)(nil)

// loadTree fetches one tree blob, checks it and decodes it.
func (r *remoteRepo) loadTree(ctx context.Context, id blob.ID) (*tree.Tree, error) {
	f, err := r.api.Blob(ctx, r.restoreID, blob.Tree, id)
	if err != nil {
		return nil, fmt.Errorf("load tree %s: %w", id.Short(), err)
	}
	if f.Type != blob.Tree {
		return nil, fmt.Errorf("load tree %s: the server sent a %s blob: %w", id.Short(), f.Type, blob.ErrCorrupt)
	}
	plain, err := r.codec.DecodePayload(nil, blob.Tree, id, f.Payload, f.RawLen)
	if err != nil {
		return nil, fmt.Errorf("load tree %s: %w", id.Short(), err)
	}
	t, err := tree.Decode(plain)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", id, err)
	}
	return t, nil
}

// LoadDir implements restorer.Repository, joining a split directory's
// parts as repository.Repository.LoadDir does.
func (r *remoteRepo) LoadDir(ctx context.Context, id blob.ID) ([]tree.Node, error) {
	t, err := r.tree(ctx, id)
	if err != nil {
		return nil, err
	}
	nodes, err := tree.Nodes(ctx, t, r.tree)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", id, err)
	}
	return nodes, nil
}

// tree returns a tree from the prefetched ones, or fetches it and starts
// fetching what lies below it.
func (r *remoteRepo) tree(ctx context.Context, id blob.ID) (*tree.Tree, error) {
	r.mu.Lock()
	t, ok := r.trees[id]
	if ok {
		delete(r.trees, id)
		r.cached -= r.sizes[id]
		delete(r.sizes, id)
	}
	r.mu.Unlock()
	if ok {
		return t, nil
	}
	t, err := r.loadTree(ctx, id)
	if err != nil {
		return nil, err
	}
	r.prefetch(ctx, t)
	return t, nil
}

// prefetch fetches the trees below t, breadth first, while the cache has
// room. It is only an optimisation: a tree it could not fetch, check or
// decode is left for tree to fetch on demand, which reports the error.
func (r *remoteRepo) prefetch(ctx context.Context, t *tree.Tree) {
	frontier := subtrees(t)
	for len(frontier) > 0 && ctx.Err() == nil {
		var next []blob.ID
		for len(frontier) > 0 {
			r.mu.Lock()
			full := r.cached >= treeCacheBytes
			r.mu.Unlock()
			if full {
				return
			}
			n := min(len(frontier), prefetchBatch)
			batch := frontier[:n]
			frontier = frontier[n:]
			req := protocol.ReadRequest{RestoreID: r.restoreID, IDs: make([]string, len(batch))}
			for i, id := range batch {
				req.IDs[i] = id.String()
			}
			err := r.api.ReadBlobs(ctx, req, func(f protocol.Frame) error {
				if f.Err != "" || f.Type != blob.Tree {
					return nil
				}
				plain, err := r.codec.DecodePayload(nil, blob.Tree, f.ID, f.Payload, f.RawLen)
				if err != nil {
					return nil
				}
				sub, err := tree.Decode(plain)
				if err != nil {
					return nil
				}
				r.mu.Lock()
				if r.trees == nil {
					r.trees, r.sizes = map[blob.ID]*tree.Tree{}, map[blob.ID]int{}
				}
				if _, dup := r.trees[f.ID]; !dup {
					r.trees[f.ID], r.sizes[f.ID] = sub, len(plain)
					r.cached += len(plain)
				}
				r.mu.Unlock()
				next = append(next, subtrees(sub)...)
				return nil
			})
			if err != nil {
				return
			}
		}
		frontier = next
	}
}

// subtrees lists the trees t refers to: its parts and its directories'.
func subtrees(t *tree.Tree) []blob.ID {
	var ids []blob.ID
	for typ, id := range t.Refs() {
		if typ == blob.Tree {
			ids = append(ids, id)
		}
	}
	return ids
}

// Locate implements restorer.Repository.
func (r *remoteRepo) Locate(ctx context.Context, ids []blob.ID) (map[blob.ID]repository.Location, error) {
	out := make(map[blob.ID]repository.Location, len(ids))
	hexIDs := make([]string, 0, min(len(ids), maxLocateIDs))
	for start := 0; start < len(ids); start += maxLocateIDs {
		hexIDs = hexIDs[:0]
		for _, id := range ids[start:min(len(ids), start+maxLocateIDs)] {
			hexIDs = append(hexIDs, id.String())
		}
		locs, err := r.api.Locate(ctx, protocol.LocateRequest{RestoreID: r.restoreID, IDs: hexIDs})
		if err != nil {
			return nil, fmt.Errorf("locate blobs: %w", err)
		}
		for _, bl := range locs {
			id, loc, err := parseLocation(bl)
			if err != nil {
				return nil, fmt.Errorf("locate blobs: the server's answer: %w", err)
			}
			out[id] = loc
		}
	}
	return out, nil
}

// parseLocation maps the wire form of a location to the engine's.
func parseLocation(bl protocol.BlobLocation) (blob.ID, repository.Location, error) {
	var loc repository.Location
	id, err := blob.ParseID(bl.ID)
	if err != nil {
		return id, loc, err
	}
	switch bl.Type {
	case "data":
		loc.Type = blob.Data
	case "tree":
		loc.Type = blob.Tree
	default:
		return id, loc, fmt.Errorf("blob %s: unknown type %q", id.Short(), bl.Type)
	}
	var p pack.ID
	if n, err := hex.Decode(p[:], []byte(bl.Pack)); err != nil || n != len(p) || len(bl.Pack) != 2*len(p) {
		return id, loc, fmt.Errorf("blob %s: %q is not a pack id", id.Short(), bl.Pack)
	}
	loc.Pack, loc.Offset, loc.Length, loc.RawLength = p, bl.Offset, bl.Length, bl.RawLength
	return id, loc, nil
}

// ReadBlobs implements restorer.Repository: it asks the server for the
// blobs in requests of bounded size, checks each payload against its id
// and calls fn for every request of that id. A request the server answers
// with an error frame, or not at all, gets an error.
func (r *remoteRepo) ReadBlobs(ctx context.Context, t blob.Type, reqs []repository.BlobRequest, fn func(i int, plaintext []byte, err error) error) error {
	byID := make(map[blob.ID][]int, len(reqs))
	var order []blob.ID
	for i, q := range reqs {
		if _, ok := byID[q.ID]; !ok {
			order = append(order, q.ID)
		}
		byID[q.ID] = append(byID[q.ID], i)
	}
	maxRead := r.maxRead
	if maxRead <= 0 {
		maxRead = defaultReadBytes
	}
	var plain []byte
	deliver := func(id blob.ID, data []byte, err error) error {
		for _, i := range byID[id] {
			if err := fn(i, data, err); err != nil {
				return err
			}
		}
		delete(byID, id)
		return nil
	}
	for start := 0; start < len(order); {
		req := protocol.ReadRequest{RestoreID: r.restoreID}
		var size int64
		end := start
		for end < len(order) && len(req.IDs) < maxReadBlobs && (size == 0 || size+int64(reqs[byID[order[end]][0]].Loc.Length) <= maxRead) {
			q := reqs[byID[order[end]][0]]
			req.IDs = append(req.IDs, q.ID.String())
			size += int64(q.Loc.Length)
			end++
		}
		err := r.api.ReadBlobs(ctx, req, func(f protocol.Frame) error {
			if _, ok := byID[f.ID]; !ok {
				return fmt.Errorf("read blobs: the server sent blob %s, which was not asked for", f.ID.Short())
			}
			if f.Err != "" {
				return deliver(f.ID, nil, fmt.Errorf("read blob %s: the server could not read it: %s", f.ID.Short(), f.Err))
			}
			if f.Type != t {
				return deliver(f.ID, nil, fmt.Errorf("read blob %s: the server sent a %s blob, not %s: %w", f.ID.Short(), f.Type, t, blob.ErrCorrupt))
			}
			out, err := r.codec.DecodePayload(plain[:0], t, f.ID, f.Payload, f.RawLen)
			if err != nil {
				return deliver(f.ID, nil, fmt.Errorf("read blob %s from the server: %w", f.ID.Short(), err))
			}
			plain = out
			return deliver(f.ID, plain, nil)
		})
		if err != nil {
			return err
		}
		for _, id := range order[start:end] {
			if _, ok := byID[id]; ok {
				if err := deliver(id, nil, fmt.Errorf("read blob %s: the server did not send it", id.Short())); err != nil {
					return err
				}
			}
		}
		start = end
	}
	return ctx.Err()
}
