package restores

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/protocol"
)

// reader checks that the calling agent may read blobs for restore id: the
// restore targets its client and is running.
func (s *Service) reader(ctx context.Context, p *coffer.Principal, id string) (*coffer.Restore, *repository.Repository, error) {
	client, err := agentClient(p)
	if err != nil {
		return nil, nil, err
	}
	if id == "" {
		return nil, nil, coffer.Errorf(coffer.KindInvalid, "restore_id_required",
			"name the running restore the blobs are for (restore_id)").With("field", "restore_id")
	}
	r, err := s.ownRestore(ctx, client, id)
	if err != nil {
		return nil, nil, err
	}
	if r.State != coffer.JobRunning {
		return nil, nil, coffer.Errorf(coffer.KindConflict, "restore_not_running",
			"restore %s is %s: blobs are served only while it runs", r.ID, r.State).With("state", string(r.State))
	}
	repo, err := s.repoOf(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	return r, repo, nil
}

// repoOf returns the repository that holds r's backup.
func (s *Service) repoOf(ctx context.Context, r *coffer.Restore) (*repository.Repository, error) {
	b, err := s.store.GetBackup(ctx, r.BackupID)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", r.ID, err)
	}
	repo, err := s.repos.Get(ctx, b.RepositoryID)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", r.ID, err)
	}
	return repo, nil
}

// parseIDs parses hex blob ids, dropping repeats.
func parseIDs(in []string, field string) ([]blob.ID, error) {
	out := make([]blob.ID, 0, len(in))
	seen := make(map[blob.ID]struct{}, len(in))
	for i, s := range in {
		id, err := blob.ParseID(s)
		if err != nil {
			return nil, coffer.Errorf(coffer.KindInvalid, "invalid_blob_id",
				"%s[%d] = %q is not a blob id: send 64 hex digits", field, i, s).With("field", fmt.Sprintf("%s[%d]", field, i))
		}
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out, nil
}

// Locate reports where the indexed blobs among the request's ids are, so
// that the agent can ask for blobs that lie together in one read. Ids the
// repository lacks are left out.
func (s *Service) Locate(ctx context.Context, p *coffer.Principal, req protocol.LocateRequest) (*protocol.LocateResponse, error) {
	_, repo, err := s.reader(ctx, p, req.RestoreID)
	if err != nil {
		return nil, err
	}
	if len(req.IDs) > MaxLocateIDs {
		return nil, coffer.Errorf(coffer.KindInvalid, "too_many_ids",
			"locate at most %d ids per request, not %d: split the request", MaxLocateIDs, len(req.IDs)).With("limit", MaxLocateIDs)
	}
	ids, err := parseIDs(req.IDs, "body.ids")
	if err != nil {
		return nil, err
	}
	locs, err := repo.Locate(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := &protocol.LocateResponse{Locations: make([]protocol.BlobLocation, 0, len(locs))}
	for _, id := range ids {
		if loc, ok := locs[id]; ok {
			out.Locations = append(out.Locations, protocol.BlobLocation{ID: id.String(), Type: loc.Type.String(),
				Pack: loc.Pack.String(), Offset: loc.Offset, Length: loc.Length, RawLength: loc.RawLength})
		}
	}
	return out, nil
}

// ReadBatch is a checked request for blobs, ready to stream as frames
// (protocol.WriteFrame).
type ReadBatch struct {
	s         *Service
	repo      *repository.Repository
	restoreID string
	ids       []blob.ID // unique, in request order
	locs      map[blob.ID]repository.Location
}

// Read checks a request for blobs and looks each one up in the index —
// every id is looked up here. At most
// MaxReadBlobs blobs of at most Options.MaxReadBytes stored bytes in all
// ("read_too_large"); blobs the repository lacks are answered with error
// frames.
func (s *Service) Read(ctx context.Context, p *coffer.Principal, req protocol.ReadRequest) (*ReadBatch, error) {
	r, repo, err := s.reader(ctx, p, req.RestoreID)
	if err != nil {
		return nil, err
	}
	if len(req.IDs) > MaxReadBlobs {
		return nil, coffer.Errorf(coffer.KindInvalid, "read_too_large",
			"read at most %d blobs per request, not %d: split the request", MaxReadBlobs, len(req.IDs)).
			With("max_blobs", MaxReadBlobs)
	}
	ids, err := parseIDs(req.IDs, "body.ids")
	if err != nil {
		return nil, err
	}
	locs, err := repo.Locate(ctx, ids)
	if err != nil {
		return nil, err
	}
	var total int64
	for _, loc := range locs {
		total += int64(loc.Length)
	}
	if total > s.maxRead {
		return nil, coffer.Errorf(coffer.KindInvalid, "read_too_large",
			"the blobs asked for take %d bytes in the repository; one read may take at most %d (add up the lengths /blobs/locate reports and split the request)",
			total, s.maxRead).With("max_bytes", s.maxRead).With("bytes", total)
	}
	return &ReadBatch{s: s, repo: repo, restoreID: r.ID, ids: ids, locs: locs}, nil
}

// Blob checks a request for one blob of type t. A blob the repository
// lacks, or holds as another type, is "blob_not_found".
func (s *Service) Blob(ctx context.Context, p *coffer.Principal, restoreID string, t blob.Type, hexID string) (*ReadBatch, error) {
	r, repo, err := s.reader(ctx, p, restoreID)
	if err != nil {
		return nil, err
	}
	ids, err := parseIDs([]string{hexID}, "id")
	if err != nil {
		return nil, err
	}
	locs, err := repo.Locate(ctx, ids)
	if err != nil {
		return nil, err
	}
	if loc, ok := locs[ids[0]]; !ok || loc.Type != t {
		return nil, coffer.Errorf(coffer.KindNotFound, "blob_not_found", "the repository holds no %s blob %s", t, hexID)
	}
	return &ReadBatch{s: s, repo: repo, restoreID: r.ID, ids: ids, locs: locs}, nil
}

// Len is the number of frames Stream writes.
func (b *ReadBatch) Len() int { return len(b.ids) }

// Stream writes one frame per blob, in no particular order (each frame
// names its blob): the blob's payload as stored before encryption, or an
// error frame for a blob that is not indexed or could not be read. It
// returns the first write error, or ctx's.
func (b *ReadBatch) Stream(ctx context.Context, w io.Writer) error {
	byType := map[blob.Type][]repository.BlobRequest{}
	for _, id := range b.ids {
		loc, ok := b.locs[id]
		if !ok {
			if err := protocol.WriteErrorFrame(w, id, "blob "+id.String()+" is not in the repository"); err != nil {
				return err
			}
			continue
		}
		byType[loc.Type] = append(byType[loc.Type], repository.BlobRequest{ID: id, Loc: loc})
	}
	for _, t := range []blob.Type{blob.Tree, blob.Data} {
		reqs := byType[t]
		if len(reqs) == 0 {
			continue
		}
		err := b.repo.ReadPayloads(ctx, t, reqs, func(i int, payload []byte, err error) error {
			req := reqs[i]
			if err == nil && len(payload) > int(req.Loc.RawLength) {
				err = fmt.Errorf("blob %s: payload of %d bytes for plaintext %d: %w", req.ID, len(payload), req.Loc.RawLength, blob.ErrCorrupt)
			}
			if err != nil {
				b.s.log.Error("read blob for restore", "restore_id", b.restoreID, "blob", req.ID.String(),
					"pack", req.Loc.Pack.String(), "err", err)
				return protocol.WriteErrorFrame(w, req.ID, unreadable(req.ID, err))
			}
			return protocol.WriteFrame(w, t, req.ID, int(req.Loc.RawLength), payload)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// unreadable says why a blob could not be read, without the server's
// internals (the log has them).
func unreadable(id blob.ID, err error) string {
	switch {
	case errors.Is(err, blob.ErrCorrupt):
		return "blob " + id.String() + " is damaged in the repository; the server log has details"
	case errors.Is(err, blobstore.ErrNotFound):
		return "the pack holding blob " + id.String() + " is missing from the repository storage; the server log has details"
	default:
		return "blob " + id.String() + " could not be read from the repository storage; the server log has details"
	}
}
