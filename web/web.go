// Package web holds the browser UI's templates and static assets, embedded
// so that `go build` alone produces the whole UI: html/template pages under
// templates/, and under static/ the style sheet, the icon and the vendored
// htmx and htmx-ext-sse files (static/vendor/README names their versions),
// and static/js/coffer.js, the UI's few behaviours htmx has no attribute for.
// No script or style is inline anywhere, so the server can send a strict
// Content-Security-Policy. The HTTP side — routes, sessions, CSRF — lives
// in internal/httpapi.
package web

import (
	"embed"
	"io/fs"
)

//go:embed templates/*.html templates/partials/*.html templates/pages/*.html static/css/*.css static/img/*.svg static/vendor/*.js static/js/*.js
var files embed.FS

// Templates returns the html/template sources: layout.html and every file
// of partials/ are shared by all pages (their names are global, so each
// area prefixes its own); each file of pages/ is one page, named by its
// file name.
func Templates() fs.FS { return sub("templates") }

// Static returns the files served under /static/.
func Static() fs.FS { return sub("static") }

func sub(dir string) fs.FS {
	f, err := fs.Sub(files, dir)
	if err != nil {
		panic(err) // dir is a constant that the embed directive above guarantees
	}
	return f
}
