package httpapi

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/internal/engine/archiver"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/backups"
)

// browseFixture is the backup fixture with a client of "operator" and a
// second operator, "operator2", who does not own it.
type browseFixture struct {
	*backupFixture
	clientID string
}

func newBrowseFixture(t *testing.T, db *metadb.DB, more ...func(bf *backupFixture, f *fixture, o *Options)) *browseFixture {
	t.Helper()
	f := &browseFixture{backupFixture: newBackupFixture(t, db, backups.Options{}, more...)}
	f.clientID = f.enrollBackupAgent("web") // enrolled with operator's token: operator owns it
	f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "operator2", "password": "operator2-password",
		"role": "operator"}).Want(201)
	f.tokens["operator2"] = f.login("operator2", "operator2-password")
	return f
}

// commitDir backs dir up as the client's agent would and returns the
// backup's id: the blobs stored with the engine's archiver, the backup
// started and committed through the service.
func (f *browseFixture) commitDir(dir string) string {
	f.t.Helper()
	ctx := context.Background()
	start, err := f.backups.StartBackup(ctx, f.clientID, protocol.StartBackupRequest{Paths: []string{"/srv"}})
	if err != nil {
		f.t.Fatal(err)
	}
	f.commitStarted(start.Backup.ID, dir, protocol.CommitRequest{})
	return start.Backup.ID
}

// commitStarted stores dir's blobs with the engine's archiver and commits
// the running backup id with req, its root tree set to dir's.
func (f *browseFixture) commitStarted(id, dir string, req protocol.CommitRequest) {
	f.t.Helper()
	ctx := context.Background()
	o := archiver.DefaultOptions(f.repo.Codec())
	o.Chunker = f.repo.Config().ChunkerParams()
	a, err := archiver.New(o)
	if err != nil {
		f.t.Fatal(err)
	}
	w, err := f.repo.NewWriter(ctx, repository.WriterOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	defer w.Close()
	root, _, err := a.Archive(ctx, w, dir)
	if err == nil {
		err = w.Flush(ctx)
	}
	if err != nil {
		f.t.Fatal(err)
	}
	req.RootTree = root.String()
	if _, err := f.backups.Commit(ctx, f.clientID, id, req); err != nil {
		f.t.Fatal(err)
	}
}

func put(t *testing.T, dir, name string, content []byte) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
}

// get sends a GET as role and returns the response with its body read, or
// the error reading it.
func (f *browseFixture) get(path, role string, headers ...string) (*http.Response, []byte, error) {
	f.t.Helper()
	return f.request("GET", path, role, headers...)
}

func (f *browseFixture) request(method, path, role string, headers ...string) (*http.Response, []byte, error) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.ts.URL+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.tokens[role])
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := f.ts.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func q(s string) string { return url.QueryEscape(s) }

func TestFileDownloadOverHTTP(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newBrowseFixture(t, db)
		dir := t.TempDir()
		big := repotest.Random(1, 1<<20+4321)
		put(t, dir, "docs/big.bin", big)
		put(t, dir, "ünï cödé \"q\".txt", []byte("hi\n"))
		put(t, dir, "empty", nil)
		if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("empty", filepath.Join(dir, "link")); err != nil {
			t.Fatal(err)
		}
		id := f.commitDir(dir)
		file := "/api/v1/backups/" + id + "/file?path="

		// Who may download: admins and the client's owner.
		for _, role := range []string{"operator", "admin"} {
			r := f.do("GET", file+"docs/big.bin", role, nil).Want(200)
			if !bytes.Equal(r.Body, big) {
				t.Fatalf("%s: %d bytes differ", role, len(r.Body))
			}
		}
		f.do("GET", file+"docs/big.bin", "viewer", nil).WantError(403, "forbidden")
		f.do("GET", file+"docs/big.bin", "operator2", nil).WantError(403, "client_not_owned")
		f.do("GET", file+"docs/big.bin", "web", nil).WantError(403, "forbidden")

		r := f.do("GET", file+"/docs/big.bin", "operator", nil).Want(200)
		etag := r.Header.Get("ETag")
		if r.Header.Get("Content-Type") != "application/octet-stream" || r.Header.Get("Content-Length") != strconv.Itoa(len(big)) ||
			len(etag) != 66 || r.Header.Get("Accept-Ranges") != "bytes" || r.Header.Get("Last-Modified") == "" ||
			r.Header.Get("Content-Disposition") != `attachment; filename="big.bin"; filename*=UTF-8''big.bin` ||
			r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("headers = %v", r.Header)
		}
		r = f.do("GET", file+q("ünï cödé \"q\".txt"), "operator", nil).Want(200)
		if cd := r.Header.Get("Content-Disposition"); string(r.Body) != "hi\n" ||
			cd != `attachment; filename="_n_ c_d_ _q_.txt"; filename*=UTF-8''%C3%BCn%C3%AF%20c%C3%B6d%C3%A9%20%22q%22.txt` {
			t.Fatalf("unicode name: %q, %q", cd, r.Body)
		}
		if r := f.do("GET", file+"empty", "operator", nil).Want(200); len(r.Body) != 0 || r.Header.Get("Content-Length") != "0" {
			t.Fatalf("empty file: %v %q", r.Header, r.Body)
		}

		// Ranges.
		size := len(big)
		for _, c := range []struct {
			header, ifRange string
			status          int
			first, last     int
		}{
			{"bytes=100-199", "", 206, 100, 199},
			{"bytes=300000-", "", 206, 300000, size - 1},
			{"bytes=-10", "", 206, size - 10, size - 1},
			{"bytes=-99999999", "", 206, 0, size - 1},
			{"bytes=5-99999999", "", 206, 5, size - 1},
			{"bytes=0-0,5-6", "", 200, 0, size - 1},    // several ranges: the whole file
			{"bytes=9-3", "", 200, 0, size - 1},        // malformed: ignored
			{"items=0-3", "", 200, 0, size - 1},        // another unit
			{"bytes=0-9", `"other"`, 200, 0, size - 1}, // the file changed since
			{"bytes=0-9", etag, 206, 0, 9},
		} {
			resp, body, err := f.get(file+"docs/big.bin", "operator", "Range", c.header, "If-Range", c.ifRange)
			if err != nil || resp.StatusCode != c.status || !bytes.Equal(body, big[c.first:c.last+1]) ||
				resp.Header.Get("Content-Length") != strconv.Itoa(c.last-c.first+1) {
				t.Fatalf("%s (If-Range %s): %d, %d bytes, %v", c.header, c.ifRange, resp.StatusCode, len(body), err)
			}
			if want := fmt.Sprintf("bytes %d-%d/%d", c.first, c.last, size); c.status == 206 && resp.Header.Get("Content-Range") != want {
				t.Fatalf("%s: Content-Range %q, want %q", c.header, resp.Header.Get("Content-Range"), want)
			}
		}
		for _, h := range []string{fmt.Sprintf("bytes=%d-", size), "bytes=-0", fmt.Sprintf("bytes=%d-%d", size+5, size+10)} {
			r := f.do("GET", file+"docs/big.bin", "operator", nil, "Range", h).WantError(416, "range_not_satisfiable")
			if r.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", size) {
				t.Fatalf("%s: Content-Range %q", h, r.Header.Get("Content-Range"))
			}
		}
		// An empty file ignores ranges.
		f.do("GET", file+"empty", "operator", nil, "Range", "bytes=0-").Want(200)

		// Conditional and HEAD requests.
		r = f.do("GET", file+"docs/big.bin", "operator", nil, "If-None-Match", `"x", `+etag).Want(304)
		if len(r.Body) != 0 || r.Header.Get("ETag") != etag {
			t.Fatalf("304: %v %q", r.Header, r.Body)
		}
		f.do("GET", file+"docs/big.bin", "operator", nil, "If-None-Match", `"x"`).Want(200)
		r = f.do("HEAD", file+"docs/big.bin", "operator", nil).Want(200)
		if len(r.Body) != 0 || r.Header.Get("Content-Length") != strconv.Itoa(size) || r.Header.Get("ETag") != etag {
			t.Fatalf("HEAD: %v", r.Header)
		}
		if resp, _, _ := f.request("HEAD", file+"docs/big.bin", "operator2"); resp.StatusCode != 403 {
			t.Fatalf("HEAD by a stranger: %d", resp.StatusCode)
		}

		// Bad input.
		f.do("GET", "/api/v1/backups/"+id+"/file", "operator", nil).WantError(400, "invalid_request")
		f.do("GET", file, "operator", nil).WantError(400, "invalid_request")
		f.do("GET", file+"nope", "operator", nil).WantError(404, "path_not_found")
		f.do("GET", file+"docs/big.bin/x", "operator", nil).WantError(404, "path_not_found")
		for _, p := range []string{"sub", "docs", "/", "link"} {
			r := f.do("GET", file+q(p), "operator", nil).WantError(400, "not_a_file")
			if r.JSON["metadata"].(map[string]any)["type"] == "" {
				t.Fatalf("not_a_file metadata: %s", r.Body)
			}
		}
		f.do("GET", "/api/v1/backups/nope/file?path=x", "operator", nil).WantError(404, "backup_not_found")
		f.do("GET", file+q(strings.Repeat("a", 4097)), "operator", nil).WantError(400, "invalid_request")
		f.do("GET", file+"x&colour=blue", "operator", nil).WantError(400, "invalid_request")
	})
}

func TestArchiveDownloadOverHTTP(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newBrowseFixture(t, db)
		dir := t.TempDir()
		files := map[string][]byte{"docs/a.txt": bytes.Repeat([]byte("text "), 50000), "docs/b.bin": repotest.Random(2, 300<<10),
			"docs/sub dir/ç.txt": []byte("c\n"), "top.txt": []byte("top\n")}
		for name, content := range files {
			put(t, dir, name, content)
		}
		if err := os.Mkdir(filepath.Join(dir, "docs", "empty"), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("a.txt", filepath.Join(dir, "docs", "link")); err != nil {
			t.Fatal(err)
		}
		id := f.commitDir(dir)
		archive := "/api/v1/backups/" + id + "/archive"

		want := map[string]string{"docs/": "dir", "docs/a.txt": "file", "docs/b.bin": "file", "docs/empty/": "dir",
			"docs/link": "symlink", "docs/sub dir/": "dir", "docs/sub dir/ç.txt": "file"}
		for _, format := range []string{"tar", "zip"} {
			r := f.do("GET", archive+"?path=docs&format="+format, "operator", nil).Want(200)
			if r.Header.Get("Content-Type") != archiveTypes[format] ||
				r.Header.Get("Content-Disposition") != `attachment; filename="docs.`+format+`"; filename*=UTF-8''docs.`+format {
				t.Fatalf("%s headers = %v", format, r.Header)
			}
			got := map[string]string{}
			content := map[string][]byte{}
			if format == "tar" {
				tr := tar.NewReader(bytes.NewReader(r.Body))
				for {
					h, err := tr.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					got[h.Name] = map[byte]string{tar.TypeDir: "dir", tar.TypeReg: "file", tar.TypeSymlink: "symlink"}[h.Typeflag]
					content[h.Name], _ = io.ReadAll(tr)
					if h.Typeflag == tar.TypeSymlink {
						content[h.Name] = []byte(h.Linkname)
					}
				}
			} else {
				zr, err := zip.NewReader(bytes.NewReader(r.Body), int64(len(r.Body)))
				if err != nil {
					t.Fatal(err)
				}
				for _, zf := range zr.File {
					kind := "file"
					if zf.Mode().IsDir() {
						kind = "dir"
					} else if zf.Mode()&os.ModeSymlink != 0 {
						kind = "symlink"
					}
					got[zf.Name] = kind
					rc, err := zf.Open()
					if err != nil {
						t.Fatal(err)
					}
					content[zf.Name], err = io.ReadAll(rc)
					rc.Close()
					if err != nil {
						t.Fatal(err)
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%s entries = %v, want %v", format, got, want)
			}
			for name, c := range files {
				if strings.HasPrefix(name, "docs/") && !bytes.Equal(content[name], c) {
					t.Fatalf("%s: %s differs", format, name)
				}
			}
			if string(content["docs/link"]) != "a.txt" {
				t.Fatalf("%s: link = %q", format, content["docs/link"])
			}
		}
		// The whole backup, tar by default.
		r := f.do("GET", archive, "admin", nil).Want(200)
		if r.Header.Get("Content-Type") != "application/x-tar" || !strings.Contains(r.Header.Get("Content-Disposition"), `"backup-`+id+`.tar"`) {
			t.Fatalf("root archive headers = %v", r.Header)
		}
		if h, err := tar.NewReader(bytes.NewReader(r.Body)).Next(); err != nil || h.Name != "backup-"+id+"/" {
			t.Fatalf("root archive starts with %v, %v", h, err)
		}
		r = f.do("HEAD", archive+"?format=zip", "admin", nil).Want(200)
		if len(r.Body) != 0 || r.Header.Get("Content-Type") != "application/zip" {
			t.Fatalf("HEAD = %v", r.Header)
		}

		f.do("GET", archive+"?path=docs", "viewer", nil).WantError(403, "forbidden")
		f.do("GET", archive+"?path=docs", "operator2", nil).WantError(403, "client_not_owned")
		f.do("GET", archive+"?path=docs&format=rar", "operator", nil).WantError(400, "invalid_request")
		f.do("GET", archive+"?path=nope", "operator", nil).WantError(404, "path_not_found")
		f.do("GET", "/api/v1/backups/nope/archive", "operator", nil).WantError(404, "backup_not_found")
	})
}

func TestVersionsOverHTTP(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newBrowseFixture(t, db)
		dir := t.TempDir()
		put(t, dir, "docs/f.txt", []byte("one"))
		first := f.commitDir(dir)
		if err := os.Remove(filepath.Join(dir, "docs/f.txt")); err != nil {
			t.Fatal(err)
		}
		second := f.commitDir(dir)
		put(t, dir, "docs/f.txt", []byte("one"))
		third := f.commitDir(dir)

		versions := "/api/v1/backups/" + first + "/versions?path="
		r := f.do("GET", versions+"/docs/f.txt", "viewer", nil).Want(200)
		items := r.JSON["items"].([]any)
		page := r.JSON["pagination"].(map[string]any)
		if len(items) != 3 || page["pagination_mode"] != "cursor" || page["total"] != float64(-1) || page["has_next_page"] != false {
			t.Fatalf("versions = %s", r.Body)
		}
		v0, v1, v2 := items[0].(map[string]any), items[1].(map[string]any), items[2].(map[string]any)
		if v0["backup_id"] != third || v1["backup_id"] != second || v2["backup_id"] != first {
			t.Fatalf("order = %s", r.Body)
		}
		if v0["present"] != true || v0["type"] != "file" || v0["size"] != float64(3) || v0["mtime"] == nil ||
			v0["state"] != "succeeded" || v0["backup_type"] != "full" || v0["repository_id"] != f.repo.Config().ID ||
			v0["backup_time"] == nil || v0["content_hash"] != v2["content_hash"] || len(v0["content_hash"].(string)) != 64 {
			t.Fatalf("present version = %v", v0)
		}
		if v1["present"] != false || v1["mtime"] != nil || v1["content_hash"] != "" || v1["size"] != float64(0) {
			t.Fatalf("absent version = %v", v1)
		}
		if _, ok := v1["type"]; ok {
			t.Fatalf("absent version has a type: %v", v1)
		}
		// The content hash is the file's ETag.
		etag := f.do("HEAD", "/api/v1/backups/"+third+"/file?path=docs/f.txt", "admin", nil).Want(200).Header.Get("ETag")
		if etag != `"`+v0["content_hash"].(string)+`"` {
			t.Fatalf("ETag %s, hash %s", etag, v0["content_hash"])
		}

		// Cursor pages.
		r = f.do("GET", versions+"docs/f.txt&page_size=2", "viewer", nil).Want(200)
		page = r.JSON["pagination"].(map[string]any)
		if len(r.JSON["items"].([]any)) != 2 || page["has_next_page"] != true {
			t.Fatalf("page 1 = %s", r.Body)
		}
		r = f.do("GET", versions+"docs/f.txt&page_size=2&cursor="+page["cursor"].(string), "viewer", nil).Want(200)
		items = r.JSON["items"].([]any)
		if len(items) != 1 || items[0].(map[string]any)["backup_id"] != first || r.JSON["pagination"].(map[string]any)["cursor"] != nil {
			t.Fatalf("page 2 = %s", r.Body)
		}

		f.do("GET", "/api/v1/backups/"+first+"/versions", "viewer", nil).WantError(400, "invalid_request")
		f.do("GET", versions, "viewer", nil).WantError(400, "invalid_request")
		f.do("GET", versions+"x&cursor=garbage", "viewer", nil).WantError(400, "invalid_cursor")
		f.do("GET", "/api/v1/backups/nope/versions?path=x", "viewer", nil).WantError(404, "backup_not_found")
		f.do("GET", versions+"x", "web", nil).WantError(403, "forbidden")
		// A path no backup holds: every version absent.
		r = f.do("GET", versions+"nope", "viewer", nil).Want(200)
		for _, it := range r.JSON["items"].([]any) {
			if it.(map[string]any)["present"] != false {
				t.Fatalf("nope = %s", r.Body)
			}
		}
	})
}

// TestDamagedDownloadOverHTTP checks that a download whose data turns out
// damaged after the first byte is aborted, not ended as if complete, and
// that damage found before it is a 409 envelope.
func TestDamagedDownloadOverHTTP(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newBrowseFixture(t, db)
		ctx := context.Background()
		dir := t.TempDir()
		big := repotest.Random(3, 5<<20) // more than the first batch of a download
		put(t, dir, "big.bin", big)
		id := f.commitDir(dir)
		content := fileContent(t, f, id, "big.bin")
		damage := func(i int) {
			locs, err := f.repo.Locate(ctx, []blob.ID{content[i]})
			if err != nil {
				t.Fatal(err)
			}
			loc := locs[content[i]]
			repotest.Replace(t, f.backend, loc.Pack.Name(), func(b []byte) []byte {
				b[loc.Offset+loc.Length/2] ^= 0xff
				return b
			})
		}

		damage(len(content) - 1)
		resp, body, err := f.get("/api/v1/backups/"+id+"/file?path=big.bin", "admin")
		if resp.StatusCode != 200 || !errors.Is(err, io.ErrUnexpectedEOF) || len(body) >= len(big) || !bytes.Equal(body, big[:len(body)]) {
			t.Fatalf("damaged file: status %d, %d of %d bytes, err %v", resp.StatusCode, len(body), len(big), err)
		}
		for _, format := range []string{"tar", "zip"} {
			resp, body, err = f.get("/api/v1/backups/"+id+"/archive?format="+format, "admin")
			if resp.StatusCode != 200 || err == nil || len(body) >= len(big) {
				t.Fatalf("damaged %s: status %d, %d bytes, err %v", format, resp.StatusCode, len(body), err)
			}
		}
		// A range before the damage is whole.
		resp, body, err = f.get("/api/v1/backups/"+id+"/file?path=big.bin", "admin", "Range", "bytes=0-999999")
		if resp.StatusCode != 206 || err != nil || !bytes.Equal(body, big[:1000000]) {
			t.Fatalf("range: %d, %d bytes, %v", resp.StatusCode, len(body), err)
		}

		damage(0)
		f.do("GET", "/api/v1/backups/"+id+"/file?path=big.bin", "admin", nil).WantError(409, "backup_damaged")
		f.do("GET", "/api/v1/backups/"+id+"/archive", "admin", nil).WantError(409, "backup_damaged")
	})
}

// fileContent returns the content blob ids of the file at p in backup id.
func fileContent(t *testing.T, f *browseFixture, id, p string) []blob.ID {
	t.Helper()
	ctx := context.Background()
	b, err := f.backups.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	root, err := blob.ParseID(b.RootTree)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := f.repo.LoadDir(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Name == p {
			return n.Content
		}
	}
	t.Fatalf("%s not in the root", p)
	return nil
}

func TestBrowseRoutesDocumented(t *testing.T) {
	f := newBrowseFixture(t, metadbtest.Open(t, metadb.SQLite))
	doc := f.do("GET", "/api/v1/openapi.json", "", nil).Want(200)
	paths := doc.JSON["paths"].(map[string]any)
	for route, types := range map[string][]string{
		"/api/v1/backups/{id}/file":    {"application/octet-stream"},
		"/api/v1/backups/{id}/archive": {"application/x-tar", "application/zip"},
	} {
		op := paths[route].(map[string]any)["get"].(map[string]any)
		ok := op["x-coffer-permission"] == "operate"
		content := op["responses"].(map[string]any)["200"].(map[string]any)["content"].(map[string]any)
		for _, mt := range types {
			schema, _ := content[mt].(map[string]any)["schema"].(map[string]any)
			ok = ok && schema["type"] == "string" && schema["format"] == "binary"
		}
		if !ok || len(content) != len(types) {
			t.Errorf("%s: %v", route, op)
		}
	}
	responses := paths["/api/v1/backups/{id}/file"].(map[string]any)["get"].(map[string]any)["responses"].(map[string]any)
	for _, status := range []string{"206", "304", "416", "404", "409"} {
		if responses[status] == nil {
			t.Errorf("file: no %s response", status)
		}
	}
	versions := paths["/api/v1/backups/{id}/versions"].(map[string]any)["get"].(map[string]any)
	if versions["x-coffer-permission"] != "read" {
		t.Errorf("versions: %v", versions)
	}
}

func TestParseRange(t *testing.T) {
	for _, c := range []struct {
		h               string
		size, first, n  int64
		ok, satisfiable bool
	}{
		{"bytes=0-0", 10, 0, 1, true, true},
		{"bytes = 2-4", 10, 2, 3, true, true},
		{"BYTES=2-", 10, 2, 8, true, true},
		{"bytes=-3", 10, 7, 3, true, true},
		{"bytes=-30", 10, 0, 10, true, true},
		{"bytes=9-100", 10, 9, 1, true, true},
		{"bytes=10-", 10, 0, 0, false, false},
		{"bytes=10-20", 10, 0, 0, false, false},
		{"bytes=-0", 10, 0, 0, false, false},
		{"bytes=0-", 0, 0, 0, false, true},
		{"bytes=4-2", 10, 0, 0, false, true},
		{"bytes=1-2,4-5", 10, 0, 0, false, true},
		{"bytes=+1-2", 10, 0, 0, false, true},
		{"bytes=1", 10, 0, 0, false, true},
		{"bytes=-", 10, 0, 0, false, true},
		{"bytes=99999999999999999999-", 10, 0, 0, false, true},
		{"lines=1-2", 10, 0, 0, false, true},
		{"", 10, 0, 0, false, true},
	} {
		first, n, ok, sat := parseRange(c.h, c.size)
		if first != c.first || n != c.n || ok != c.ok || sat != c.satisfiable {
			t.Errorf("parseRange(%q, %d) = %d, %d, %v, %v", c.h, c.size, first, n, ok, sat)
		}
	}
}

func TestContentDisposition(t *testing.T) {
	for name, want := range map[string]string{
		"report.pdf":         `attachment; filename="report.pdf"; filename*=UTF-8''report.pdf`,
		"a b;c,d=e.txt":      `attachment; filename="a b;c,d=e.txt"; filename*=UTF-8''a%20b%3Bc%2Cd%3De.txt`,
		"x\r\nSet-Cookie: y": `attachment; filename="x__Set-Cookie: y"; filename*=UTF-8''x%0D%0ASet-Cookie%3A%20y`,
		"bad\xffutf8":        `attachment; filename="bad_utf8"; filename*=UTF-8''bad%EF%BF%BDutf8`,
		`q"\%`:               `attachment; filename="q___"; filename*=UTF-8''q%22%5C%25`,
		"日本.txt":             `attachment; filename="__.txt"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt`,
	} {
		if got := contentDisposition(name); got != want {
			t.Errorf("contentDisposition(%q) = %s, want %s", name, got, want)
		}
	}
}
