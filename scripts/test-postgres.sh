#!/usr/bin/env bash
# Starts or stops the throwaway PostgreSQL cluster the tests use.
#
#   scripts/test-postgres.sh start DIR PORT   prints the admin URL on stdout
#   scripts/test-postgres.sh stop DIR
#
# It installs Debian's postgresql when initdb is missing, and runs the server
# as the postgres user (PostgreSQL refuses to run as root) with fsync off:
# the cluster lives only as long as one test run.
set -euo pipefail

cmd=${1:?usage: test-postgres.sh start DIR PORT | stop DIR}
dir=${2:?data directory}

find_bin() {
	local name=$1
	if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
	local p
	p=$(ls -d /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n 1)
	[ -n "$p" ] && echo "$p"
}

as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

case "$cmd" in
start)
	port=${3:?port}
	if [ -z "$(find_bin initdb)" ]; then
		echo "test-postgres: installing postgresql (initdb not found)" >&2
		if [ "$(id -u)" != 0 ]; then
			echo "test-postgres: initdb is missing and this is not root: install PostgreSQL (apt-get install postgresql)" >&2
			exit 1
		fi
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 ||
			{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
	fi
	initdb=$(find_bin initdb)
	pg_ctl=$(find_bin pg_ctl)
	mkdir -p "$dir"
	if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
	chmod 700 "$dir"
	as_pg "$initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; exit 1; }
	as_pg "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
		-o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >&2 ||
		{ cat "$dir/server.log" >&2; exit 1; }
	echo "postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
	;;
stop)
	pg_ctl=$(find_bin pg_ctl)
	if [ -n "$pg_ctl" ] && [ -f "$dir/data/postmaster.pid" ]; then
		as_pg "$pg_ctl" -D "$dir/data" -m immediate -w stop >&2 || true
	fi
	rm -rf "$dir"
	;;
*)
	echo "usage: test-postgres.sh start DIR PORT | stop DIR" >&2
	exit 2
	;;
esac
