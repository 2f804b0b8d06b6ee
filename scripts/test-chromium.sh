#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed for the browser tests and
# prints its path on stdout.
#
#   scripts/test-chromium.sh
#
# It installs the chromium package when it is missing (as root, like
# test-postgres.sh does for PostgreSQL); the tests start it themselves,
# headless, with a fresh profile each.
set -euo pipefail

find_chromium() {
	command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null || true
}

bin=$(find_chromium)
if [ -z "$bin" ]; then
	echo "test-chromium: installing chromium (not found)" >&2
	if [ "$(id -u)" != 0 ]; then
		echo "test-chromium: chromium is missing and this is not root: install it (apt-get install -y chromium)" >&2
		exit 1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2 ||
		{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2; }
	bin=$(find_chromium)
	[ -n "$bin" ] || { echo "test-chromium: chromium is still missing after the install" >&2; exit 1; }
fi
echo "$bin"
