#!/usr/bin/env bash
# Runs the whole test suite with the services it needs, each started here on
# its own port and stopped on exit: a throwaway PostgreSQL cluster and an
# S3-compatible server (Versity Gateway). The browser tests need Chromium,
# installed here when missing.
#
#   COFFER_TEST_PG_PORT  PostgreSQL's port (default 54329)
#   COFFER_TEST_S3_PORT  the S3 server's port (default: PostgreSQL's + 10)
#
# Extra arguments go to `go test` (default: -race ./...).
set -euo pipefail
cd "$(dirname "$0")/.."

port=${COFFER_TEST_PG_PORT:-54329}
s3port=${COFFER_TEST_S3_PORT:-$((port + 10))}
pgdir=$(mktemp -d /tmp/coffer-test-pg.XXXXXX)
s3dir=$(mktemp -d /tmp/coffer-test-s3.XXXXXX)
cleanup() {
	scripts/test-postgres.sh stop "$pgdir" || true
	scripts/test-s3.sh stop "$s3dir" || true
}
trap cleanup EXIT INT TERM

COFFER_TEST_POSTGRES_URL=$(scripts/test-postgres.sh start "$pgdir" "$port")
export COFFER_TEST_POSTGRES_URL
echo "test: PostgreSQL at ${COFFER_TEST_POSTGRES_URL}" >&2

export COFFER_TEST_S3_ACCESS_KEY=${COFFER_TEST_S3_ACCESS_KEY:-s3-test-access}
export COFFER_TEST_S3_SECRET_KEY=${COFFER_TEST_S3_SECRET_KEY:-s3-test-secret}
COFFER_TEST_S3_ENDPOINT=$(scripts/test-s3.sh start "$s3dir" "$s3port")
export COFFER_TEST_S3_ENDPOINT
echo "test: S3 (Versity Gateway) at http://${COFFER_TEST_S3_ENDPOINT}" >&2

COFFER_TEST_CHROMIUM=$(scripts/test-chromium.sh)
export COFFER_TEST_CHROMIUM
echo "test: Chromium at ${COFFER_TEST_CHROMIUM}" >&2

args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-race -timeout 20m ./...)
go test "${args[@]}"
