package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cofferhq/coffer/internal/server/backups"
	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
)

// Version is one backup's view of a path, on the wire.
type Version struct {
	BackupID     string     `json:"backup_id"`
	BackupTime   time.Time  `json:"backup_time" doc:"When the backup started (when it was queued, if it never reported a start)."`
	State        string     `json:"state" enum:"succeeded,partial"`
	BackupType   string     `json:"backup_type" enum:"full,incremental" doc:"full: every file was read; incremental: files unchanged since the parent backup were taken from its change cache."`
	RepositoryID string     `json:"repository_id" doc:"Content hashes are comparable only between versions of one repository."`
	Present      bool       `json:"present" doc:"Whether the backup holds the path. Backups without it are listed too, with present false and the fields below empty, so that a deletion shows."`
	Type         string     `json:"type,omitempty" enum:"file,dir,symlink,dev,chardev,fifo,socket" doc:"The entry's type, as in /tree."`
	Size         uint64     `json:"size" doc:"A file's size in bytes; 0 for other types."`
	Mtime        *time.Time `json:"mtime" nullable:"true" doc:"Modification time; null when absent (and for the backup's root, whose metadata is not recorded)."`
	ContentHash  string     `json:"content_hash" doc:"Equal hashes mean equal content (within one repository). A file: hex BLAKE3-256 of its content blob ids (the keyed hashes of its chunks), concatenated — also its download's ETag. A directory: the id of its tree blob, equal when everything below it, metadata included, is. A symlink: hex BLAKE3-256 of its target. Empty for other types and when absent."`
	Error        string     `json:"error,omitempty" doc:"Set when the backup's trees could not be read to look the path up (present is then false); the server log has details."`
}

func toVersion(v *backups.Version) Version {
	b := v.Backup
	at := b.CreatedAt
	if b.StartedAt != nil {
		at = *b.StartedAt
	}
	kind := "incremental"
	if b.Full || b.ParentID == "" {
		kind = "full"
	}
	out := Version{BackupID: b.ID, BackupTime: at, State: string(b.State), BackupType: kind, RepositoryID: b.RepositoryID,
		Present: v.Present, Type: v.Type, Size: v.Size, ContentHash: v.ContentHash, Error: v.Error}
	if v.Present && !v.ModTime.IsZero() {
		mt := v.ModTime
		out.Mtime = &mt
	}
	return out
}

// binaryContent describes a binary response body.
func binaryContent(mediaType, desc string) map[string]*huma.MediaType {
	return map[string]*huma.MediaType{mediaType: {Schema: &huma.Schema{Type: "string", Format: "binary", Description: desc}}}
}

func stringHeader(desc string) *huma.Param {
	return &huma.Param{Description: desc, Schema: &huma.Schema{Type: "string"}}
}

// registerBrowse registers the routes that read a backup's content:
// file and archive downloads and a path's versions. Listing a directory is
// GET /backups/{id}/tree (backup_handlers.go).
func (s *Server) registerBrowse() {
	if s.opts.Backups == nil {
		return
	}
	s.registerFileDownload()
	s.registerArchiveDownload()
	s.registerVersions()
}

// fileIn is the input of GET /api/v1/backups/{id}/file.
type fileIn struct {
	ID          string `path:"id" maxLength:"64"`
	Path        string `query:"path" required:"true" minLength:"1" maxLength:"4096" doc:"The file's path in the backup, slash-separated, relative to its root (a leading / is ignored)."`
	Range       string `header:"Range" doc:"One byte range (bytes=first-last, bytes=first- or bytes=-suffix) for a 206 answer; several ranges, or a malformed header, get the whole file."`
	IfRange     string `header:"If-Range" doc:"Honour Range only if the file's ETag is still this one."`
	IfNoneMatch string `header:"If-None-Match" doc:"Answer 304 without a body when the file's ETag is one of these."`
	head        bool
}

// Resolve notes a HEAD request, which gets the headers without the data.
func (in *fileIn) Resolve(ctx huma.Context) []error {
	in.head = ctx.Method() == http.MethodHead
	return nil
}

func (s *Server) registerFileDownload() {
	svc := s.opts.Backups
	headers := map[string]*huma.Param{
		"Content-Disposition": stringHeader("attachment, with the file's name (filename, and filename* in UTF-8 per RFC 6266)."),
		"Content-Length":      stringHeader("The bytes of the body."),
		"ETag":                stringHeader("Strong validator: the file's content hash (see /versions), quoted."),
		"Last-Modified":       stringHeader("The file's modification time."),
		"Accept-Ranges":       stringHeader("bytes"),
	}
	partial := map[string]*huma.Param{"Content-Range": stringHeader("bytes first-last/size")}
	for k, v := range headers {
		partial[k] = v
	}
	handle(s, Operate, huma.Operation{
		OperationID: "backup-file", Method: http.MethodGet, Path: "/api/v1/backups/{id}/file", Tags: []string{"backups"},
		Summary: "Download a file of a backup",
		Description: "Streams one regular file of a committed backup as application/octet-stream, read from the repository " +
			"blob by blob, each authenticated and checked against its id. A directory or another non-file is 400 not_a_file " +
			"(download directories with /archive); a path the backup does not hold is 404 path_not_found; data missing from " +
			"the repository or damaged is 409 backup_damaged when found before the first byte. If it is found later, the " +
			"connection is aborted, so the download never looks complete. One byte range is supported (206, or 416 " +
			"range_not_satisfiable with Content-Range bytes */size), with If-Range; If-None-Match answers 304. " +
			"Requires operate on the backup's client: admins, or the operator who owns it (403 client_not_owned otherwise).",
		Errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusRequestedRangeNotSatisfiable},
		Responses: map[string]*huma.Response{
			"200": {Description: "The file.", Headers: headers,
				Content: binaryContent("application/octet-stream", "The file's bytes.")},
			"206": {Description: "The requested range of the file.", Headers: partial,
				Content: binaryContent("application/octet-stream", "The bytes of the range.")},
			"304": {Description: "The file's ETag matches If-None-Match.", Headers: map[string]*huma.Param{"ETag": headers["ETag"]}},
		},
	}, func(ctx context.Context, in *fileIn) (*huma.StreamResponse, error) {
		f, err := svc.OpenFile(ctx, principalFrom(ctx), in.ID, in.Path)
		if err != nil {
			return nil, err
		}
		etag := `"` + f.Hash + `"`
		if etagMatch(in.IfNoneMatch, etag) {
			return &huma.StreamResponse{Body: func(hctx huma.Context) {
				hctx.SetHeader("ETag", etag)
				hctx.SetStatus(http.StatusNotModified)
			}}, nil
		}
		start, length, status := int64(0), f.Size, http.StatusOK
		if in.Range != "" && (in.IfRange == "" || in.IfRange == etag) {
			first, n, ok, satisfiable := parseRange(in.Range, f.Size)
			switch {
			case !satisfiable:
				return rangeNotSatisfiable(f.Size), nil
			case ok:
				start, length, status = first, n, http.StatusPartialContent
			}
		}
		set := func(hctx huma.Context) {
			hctx.SetHeader("Content-Type", "application/octet-stream")
			hctx.SetHeader("Content-Disposition", contentDisposition(f.Name))
			hctx.SetHeader("Content-Length", strconv.FormatInt(length, 10))
			hctx.SetHeader("ETag", etag)
			if !f.ModTime.IsZero() {
				hctx.SetHeader("Last-Modified", f.ModTime.UTC().Format(http.TimeFormat))
			}
			hctx.SetHeader("Accept-Ranges", "bytes")
			hctx.SetHeader("Cache-Control", "no-store")
			hctx.SetHeader("X-Content-Type-Options", "nosniff")
			if status == http.StatusPartialContent {
				hctx.SetHeader("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, f.Size))
			}
			hctx.SetStatus(status)
		}
		if in.head {
			return &huma.StreamResponse{Body: set}, nil
		}
		dl, err := f.Download(ctx, start, length)
		if err != nil {
			return nil, err
		}
		return s.streamDownload(dl, set), nil
	})
}

// archiveIn is the input of GET /api/v1/backups/{id}/archive.
type archiveIn struct {
	ID     string `path:"id" maxLength:"64"`
	Path   string `query:"path" maxLength:"4096" doc:"The directory (or file) to archive, slash-separated, relative to the backup's root; empty or / for the whole backup."`
	Format string `query:"format" enum:"tar,zip" default:"tar" doc:"tar (PAX) or zip."`
	head   bool
}

// Resolve notes a HEAD request, which gets the headers without the data.
func (in *archiveIn) Resolve(ctx huma.Context) []error {
	in.head = ctx.Method() == http.MethodHead
	return nil
}

// archiveTypes are the media types of the archive formats.
var archiveTypes = map[string]string{"tar": "application/x-tar", "zip": "application/zip"}

func (s *Server) registerArchiveDownload() {
	svc := s.opts.Backups
	headers := map[string]*huma.Param{
		"Content-Disposition": stringHeader("attachment, with the archive's name: <name>.tar or <name>.zip."),
	}
	handle(s, Operate, huma.Operation{
		OperationID: "backup-archive", Method: http.MethodGet, Path: "/api/v1/backups/{id}/archive", Tags: []string{"backups"},
		Summary: "Download a directory of a backup as an archive",
		Description: "Streams the subtree at path of a committed backup as a tar (PAX) or zip archive, generated as it is " +
			"sent (no temporary copy; its length is not known in advance). Paths in the archive start with the subtree's " +
			"own name, so that extracting it recreates the directory (for the whole backup: backup-<id>/); they are " +
			"relative and never contain \"..\". tar keeps types, permission bits with setuid/setgid/sticky, owner and group " +
			"ids and names, nanosecond modification times, extended attributes, symlinks, hard links, devices and fifos " +
			"(not sockets). zip keeps permission bits and types in the Unix attributes, modification times to the second, " +
			"owner and group ids, and symlinks as Info-ZIP does; devices, fifos and sockets are left out, hard links are " +
			"written as separate files, files stored compressed are deflated and the others stored. A path the backup does " +
			"not hold is 404 path_not_found; data missing or damaged is 409 backup_damaged before the first byte, an " +
			"aborted connection after it. Requires operate on the backup's client (403 client_not_owned for an operator " +
			"who does not own it).",
		Errors: []int{http.StatusNotFound, http.StatusConflict},
		Responses: map[string]*huma.Response{
			"200": {Description: "The archive.", Headers: headers, Content: map[string]*huma.MediaType{
				"application/x-tar": {Schema: &huma.Schema{Type: "string", Format: "binary", Description: "A POSIX.1-2001 (PAX) tar archive."}},
				"application/zip": {Schema: &huma.Schema{Type: "string", Format: "binary",
					Description: "A zip archive (sizes in data descriptors, ZIP64 where needed)."}},
			}},
		},
	}, func(ctx context.Context, in *archiveIn) (*huma.StreamResponse, error) {
		a, err := svc.OpenArchive(ctx, principalFrom(ctx), in.ID, in.Path, backups.ArchiveFormat(in.Format))
		if err != nil {
			return nil, err
		}
		set := func(hctx huma.Context) {
			hctx.SetHeader("Content-Type", archiveTypes[in.Format])
			hctx.SetHeader("Content-Disposition", contentDisposition(a.Name))
			hctx.SetHeader("Cache-Control", "no-store")
			hctx.SetHeader("X-Content-Type-Options", "nosniff")
			hctx.SetStatus(http.StatusOK)
		}
		if in.head {
			return &huma.StreamResponse{Body: set}, nil
		}
		dl, err := a.Download(ctx)
		if err != nil {
			return nil, err
		}
		return s.streamDownload(dl, set), nil
	})
}

// streamDownload answers with dl after set has written the headers. A
// failure once the status is sent (storage failed, data turned out
// damaged, the client went away) aborts the connection, so that the client
// sees a broken response rather than a short, well-formed one.
func (s *Server) streamDownload(dl *backups.Download, set func(huma.Context)) *huma.StreamResponse {
	return &huma.StreamResponse{Body: func(hctx huma.Context) {
		defer dl.Close()
		r, w := humago.Unwrap(hctx)
		set(hctx)
		fw := &deadlineWriter{w: w, rc: http.NewResponseController(w), timeout: s.opts.WriteTimeout}
		if n, err := dl.WriteTo(fw); err != nil {
			if info := requestInfoFrom(r.Context()); info != nil {
				info.setErr(err)
			}
			s.log.Warn("download aborted", "err", err, "bytes", n, "request_id", RequestID(r.Context()))
			panic(http.ErrAbortHandler)
		}
	}}
}

// rangeNotSatisfiable answers 416 with the error envelope and the size.
func rangeNotSatisfiable(size int64) *huma.StreamResponse {
	return &huma.StreamResponse{Body: func(hctx huma.Context) {
		r, w := humago.Unwrap(hctx)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		writeError(w, r, &APIError{status: http.StatusRequestedRangeNotSatisfiable, Code: "range_not_satisfiable",
			Detail:   fmt.Sprintf("the requested range starts beyond the file's %d bytes: ask for a range within it", size),
			Metadata: map[string]any{"size": size}})
	}}
}

// parseRange reads a Range header (RFC 9110 §14.1.2) for a representation
// of size bytes. ok reports one byte range to serve, [first, first+n);
// satisfiable false means that no byte of it exists (416). Anything else
// (another unit, several ranges, a malformed header, an empty file) is to
// be ignored: the whole representation is served.
func parseRange(h string, size int64) (first, n int64, ok, satisfiable bool) {
	unit, spec, found := strings.Cut(h, "=")
	if !found || !strings.EqualFold(strings.TrimSpace(unit), "bytes") || strings.Contains(spec, ",") || size == 0 {
		return 0, 0, false, true
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, true
	}
	if a == "" { // suffix: the last b bytes
		suffix, valid := parseDigits(b)
		switch {
		case !valid:
			return 0, 0, false, true
		case suffix == 0:
			return 0, 0, false, false
		}
		suffix = min(suffix, size)
		return size - suffix, suffix, true, true
	}
	start, valid := parseDigits(a)
	if !valid {
		return 0, 0, false, true
	}
	last := size - 1
	if b != "" {
		l, valid := parseDigits(b)
		if !valid || l < start {
			return 0, 0, false, true
		}
		last = min(l, size-1)
	}
	if start >= size {
		return 0, 0, false, false
	}
	return start, last - start + 1, true, true
}

// parseDigits parses a non-empty run of ASCII digits.
func parseDigits(s string) (int64, bool) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}

// etagMatch reports whether an If-None-Match header lists etag (weak
// comparison, RFC 9110 §13.1.2) or is "*".
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// contentDisposition is an attachment header for a file named name (RFC
// 6266): an ASCII fallback in filename (other bytes, quotes, backslashes,
// percent signs and controls replaced by _) and the name in UTF-8 in
// filename* (invalid UTF-8 replaced by U+FFFD). Either way no byte of the
// name can break the header.
func contentDisposition(name string) string {
	name = strings.ToValidUTF8(name, string(utf8.RuneError))
	var fallback, enc strings.Builder
	for _, r := range name {
		if r < 0x20 || r >= 0x7f || r == '"' || r == '\\' || r == '%' {
			fallback.WriteByte('_')
		} else {
			fallback.WriteRune(r)
		}
	}
	const attrChars = "!#$&+-.^_`|~"
	for _, c := range []byte(name) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(attrChars, c) >= 0 {
			enc.WriteByte(c)
		} else {
			fmt.Fprintf(&enc, "%%%02X", c)
		}
	}
	return `attachment; filename="` + fallback.String() + `"; filename*=UTF-8''` + enc.String()
}

// versionsIn is the input of GET /api/v1/backups/{id}/versions.
type versionsIn struct {
	ID   string `path:"id" maxLength:"64" doc:"A backup of the plan (or ad-hoc backup of the client) whose versions to list."`
	Path string `query:"path" required:"true" minLength:"1" maxLength:"4096" doc:"The path, slash-separated, relative to the backups' root (a leading / is ignored; / is the root)."`
	CursorParams
}

func (s *Server) registerVersions() {
	svc := s.opts.Backups
	handle(s, Read, huma.Operation{
		OperationID: "backup-versions", Method: http.MethodGet, Path: "/api/v1/backups/{id}/versions", Tags: []string{"backups"},
		Summary: "List the versions of a path",
		Description: "The path in every committed (succeeded or partial) backup of the plan that made this backup — for an " +
			"ad-hoc backup, in every ad-hoc backup of its client — newest first, cursor-paginated: backup id, time, state " +
			"and type, and the entry's type, size, modification time and content hash. Backups that do not hold the path " +
			"are listed with present false.",
		Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *versionsIn) (*struct{ Body *Page[Version] }, error) {
		after, err := decodeKeyset(in.Cursor)
		if err != nil {
			return nil, err
		}
		vs, next, err := svc.Versions(ctx, in.ID, in.Path, after, in.PageSize)
		if err != nil {
			return nil, err
		}
		items := make([]Version, len(vs))
		for i := range vs {
			items[i] = toVersion(&vs[i])
		}
		var cursor *string
		if next != nil {
			cursor = encodeKeyset(*next)
		}
		return &struct{ Body *Page[Version] }{cursorPage(items, in.PageSize, cursor)}, nil
	})
}
