#!/usr/bin/env bash
# Refetches the vendored browser libraries of the web UI from the npm
# registry (`npm pack`), copies their minified files into web/static/vendor/
# and rewrites web/static/vendor/README with each package's version and the
# files' SHA-256. Nothing is fetched at build or test time: the files are
# committed and embedded.
#
#   HTMX_VERSION      htmx.org version or range (default 2)
#   HTMX_SSE_VERSION  htmx-ext-sse version or range (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."

htmx=${HTMX_VERSION:-2}
sse=${HTMX_SSE_VERSION:-2}
out=web/static/vendor
tmp=$(mktemp -d /tmp/coffer-web-vendor.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

command -v npm >/dev/null || { echo "web-vendor: npm is needed to fetch the packages" >&2; exit 1; }

fetch() { # package version → prints the unpacked package directory
	local pkg=$1 version=$2 tgz
	tgz=$(cd "$tmp" && npm pack --silent "$pkg@$version" | tail -n 1)
	mkdir -p "$tmp/$pkg"
	tar -xzf "$tmp/$tgz" -C "$tmp/$pkg"
	echo "$tmp/$pkg/package"
}

htmx_dir=$(fetch htmx.org "$htmx")
sse_dir=$(fetch htmx-ext-sse "$sse")
version() { node -p "require('$1/package.json').version"; }

mkdir -p "$out"
cp "$htmx_dir/dist/htmx.min.js" "$out/htmx.min.js"
cp "$sse_dir/dist/sse.min.js" "$out/htmx-ext-sse.min.js"

{
	echo "Vendored browser libraries of the Coffer web UI, embedded by package web."
	echo "Refetch with \`make web-vendor\` (scripts/web-vendor.sh); never edit them by hand."
	echo
	echo "file                  npm package   version  licence  sha256"
	printf '%-21s %-13s %-8s %-8s %s\n' htmx.min.js htmx.org "$(version "$htmx_dir")" 0BSD \
		"$(sha256sum "$out/htmx.min.js" | cut -d' ' -f1)"
	printf '%-21s %-13s %-8s %-8s %s\n' htmx-ext-sse.min.js htmx-ext-sse "$(version "$sse_dir")" 0BSD \
		"$(sha256sum "$out/htmx-ext-sse.min.js" | cut -d' ' -f1)"
} >"$out/README"
cat "$out/README"
