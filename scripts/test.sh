#!/usr/bin/env bash
# Runs the whole test suite with the services it needs: a throwaway
# PostgreSQL cluster on its own port, started here and stopped on exit.
#
# Extra arguments go to `go test` (default: -race ./...).
set -euo pipefail
cd "$(dirname "$0")/.."

port=${COFFER_TEST_PG_PORT:-54329}
pgdir=$(mktemp -d /tmp/coffer-test-pg.XXXXXX)
cleanup() { scripts/test-postgres.sh stop "$pgdir" || true; }
trap cleanup EXIT INT TERM

COFFER_TEST_POSTGRES_URL=$(scripts/test-postgres.sh start "$pgdir" "$port")
export COFFER_TEST_POSTGRES_URL
echo "test: PostgreSQL at ${COFFER_TEST_POSTGRES_URL}" >&2

args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-race -timeout 20m ./...)
go test "${args[@]}"
