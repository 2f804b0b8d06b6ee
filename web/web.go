// Package web holds the browser UI's templates and static assets, embedded
// so that `go build` alone produces the whole UI: html/template pages under
// templates/, and under static/ the style sheet, the icon and the vendored
// htmx and htmx-ext-sse files (static/vendor/README names their versions).
// No script or style is inline anywhere, so the server can send a strict
// Content-Security-Policy. The HTTP side — routes, sessions, CSRF — lives
// in internal/httpapi.
package web

import (
	"embed"
	"io/fs"
)

//go:embed templates/*.html static/css/*.css static/img/*.svg static/vendor/*.js
var files embed.FS

// Templates returns the html/template sources: layout.html and
// partials.html are shared, every other file is one page.
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
