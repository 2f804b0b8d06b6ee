# Coffer — the two commands that matter are `make run` and `make test`.

GO      ?= go
BIN     ?= bin/coffer
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: build run test test-short lint fmt clean bench web-vendor

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/coffer

## run: build and start the server on its embedded defaults (SQLite, ./coffer-data, 127.0.0.1:8080)
run: build
	./$(BIN) server

## test: start the services the tests need (PostgreSQL, an S3 server; Chromium installed if missing) and run every test with the race detector
test:
	scripts/test.sh

## test-short: the tests without the PostgreSQL and S3 servers and without -race
test-short:
	$(GO) test ./...

## bench: build bin/coffer and time it against restic on a generated 1 GiB corpus (BENCH_FLAGS='-runs 3' for medians; see bench/README.md)
bench: build
	$(GO) run ./bench/cmd/coffer-bench -coffer $(BIN) $(BENCH_FLAGS)

## lint: formatting and vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## web-vendor: refetch htmx and its SSE extension from npm into web/static/vendor (never run by build or test)
web-vendor:
	scripts/web-vendor.sh

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
