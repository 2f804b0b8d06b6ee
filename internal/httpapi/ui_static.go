package httpapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"time"
)

// staticTypes are the content types of the files the UI serves; a file of
// any other kind is not served, so nothing is ever sniffed.
var staticTypes = map[string]string{
	".css":   "text/css; charset=utf-8",
	".js":    "text/javascript; charset=utf-8",
	".svg":   "image/svg+xml",
	".png":   "image/png",
	".ico":   "image/x-icon",
	".woff2": "font/woff2",
}

// staticFile is one embedded asset, held in memory with its content hash.
type staticFile struct {
	data  []byte
	ctype string
	hash  string // the first 16 hex digits of its SHA-256: the ?v= of its URL, and its ETag
}

// staticFiles are the UI's assets. Pages link them as /static/<path>?v=<hash>
// (the asset template function), so a URL names one content and may be
// cached for a year; a new build changes the hash and so the URL.
type staticFiles struct {
	files map[string]*staticFile
}

func loadStatic(fsys fs.FS) (*staticFiles, error) {
	sf := &staticFiles{files: map[string]*staticFile{}}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ctype, ok := staticTypes[path.Ext(p)]
		if !ok {
			return nil
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		sf.files[p] = &staticFile{data: data, ctype: ctype, hash: hex.EncodeToString(sum[:8])}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load ui static files: %w", err)
	}
	return sf, nil
}

// url is the versioned URL of an asset; templates call it as asset. A
// missing asset is an error, which fails the page's rendering (and the
// tests) rather than shipping a broken link.
func (sf *staticFiles) url(name string) (string, error) {
	f, ok := sf.files[name]
	if !ok {
		return "", fmt.Errorf("no static file %q", name)
	}
	return "/static/" + name + "?v=" + f.hash, nil
}

// serveStatic serves an embedded asset. With the current ?v= it may be
// cached for good; otherwise the browser revalidates with the ETag.
func (s *Server) serveStatic(w http.ResponseWriter, r *http.Request) {
	setUIHeaders(w.Header())
	f, ok := s.ui.static.files[r.PathValue("path")]
	if !ok {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte("not found\n"))
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("ETag", `"`+f.hash+`"`)
	if r.URL.Query().Get("v") == f.hash {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.data))
}
