#!/usr/bin/env bash
# Starts or stops the throwaway S3-compatible server the tests use: Versity
# Gateway (Apache-2.0) in posix mode, serving buckets as directories under DIR.
#
#   scripts/test-s3.sh start DIR PORT   prints the endpoint (host:port) on stdout
#   scripts/test-s3.sh stop DIR
#
# The gateway is pinned to one version and installed with `go install` into
# $(go env GOPATH)/bin only when that exact version is missing (≈90 s cold).
# The credentials are fixed test values, also exported by scripts/test.sh; the
# tests create and remove their own buckets through the S3 API.
set -euo pipefail

version=v1.8.0
access_key=${COFFER_TEST_S3_ACCESS_KEY:-s3-test-access}
secret_key=${COFFER_TEST_S3_SECRET_KEY:-s3-test-secret}

cmd=${1:?usage: test-s3.sh start DIR PORT | stop DIR}

# listening reports whether something accepts TCP connections on the port
# (bash's /dev/tcp: no curl needed on a fresh machine).
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
dir=${2:?data directory}

# gateway prints the path of versitygw at $version, installing it if needed.
gateway() {
	local bin
	bin="$(go env GOPATH | cut -d: -f1)/bin/versitygw"
	if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null |
		grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/versity/versitygw[[:space:]]+$version([[:space:]]|$)"; then
		echo "$bin"
		return
	fi
	echo "test-s3: installing versitygw $version (go install, about a minute and a half)" >&2
	GOBIN=$(dirname "$bin") go install "github.com/versity/versitygw/cmd/versitygw@$version" >&2
	echo "$bin"
}

case "$cmd" in
start)
	port=${3:?port}
	if listening "$port"; then
		echo "test-s3: something already answers on 127.0.0.1:$port: choose another port" >&2
		exit 1
	fi
	bin=$(gateway)
	mkdir -p "$dir/buckets" "$dir/versions"
	ROOT_ACCESS_KEY=$access_key ROOT_SECRET_KEY=$secret_key \
		"$bin" --port "127.0.0.1:$port" --quiet \
		posix --versioning-dir "$dir/versions" "$dir/buckets" \
		</dev/null >"$dir/gateway.log" 2>&1 &
	echo $! >"$dir/gateway.pid"
	# Any HTTP answer (403 for an anonymous request) means it is serving.
	for _ in $(seq 1 200); do
		if listening "$port"; then
			echo "127.0.0.1:$port"
			exit 0
		fi
		if ! kill -0 "$(cat "$dir/gateway.pid")" 2>/dev/null; then
			echo "test-s3: versitygw exited:" >&2
			cat "$dir/gateway.log" >&2
			exit 1
		fi
		sleep 0.05
	done
	echo "test-s3: versitygw did not answer on 127.0.0.1:$port within 10 s:" >&2
	cat "$dir/gateway.log" >&2
	kill "$(cat "$dir/gateway.pid")" 2>/dev/null || true
	exit 1
	;;
stop)
	if [ -f "$dir/gateway.pid" ]; then
		pid=$(cat "$dir/gateway.pid")
		if kill "$pid" 2>/dev/null; then
			for _ in $(seq 1 100); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.05
			done
			kill -9 "$pid" 2>/dev/null || true
		fi
	fi
	rm -rf "$dir"
	;;
*)
	echo "usage: test-s3.sh start DIR PORT | stop DIR" >&2
	exit 2
	;;
esac
