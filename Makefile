# iamdb — see README.md. `make test` is the command CI runs.
GO       ?= go
BIN      ?= bin/iamdb
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/iamdb/iamdb/internal/cli.Version=$(VERSION)
FUZZTIME ?= 20s

.PHONY: all build test test-short lint fuzz deps demo interop clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/iamdb

# Full suite: lint, install what is missing (scripts/deps.sh), then every
# test (real PostgreSQL, MariaDB, Redis, the AWS CLI and Node.js are started
# or run by the tests) under the race detector.
test: lint
	@scripts/deps.sh --check >/dev/null 2>&1 || scripts/deps.sh
	$(GO) test -race -timeout 30m ./...

# Unit tests only: no servers, no external programs.
test-short:
	$(GO) test -short ./...

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# Each fuzz target briefly ($(FUZZTIME) each); not part of `make test`.
fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

deps:
	scripts/deps.sh

# A narrated walkthrough on throwaway PostgreSQL and MariaDB (iamdb demo);
# installs what it needs first, only when something is missing.
demo: build
	@scripts/deps.sh --check >/dev/null 2>&1 || scripts/deps.sh
	$(BIN) demo

# The interoperability matrix: every token generator (Go SDK, AWS CLI,
# iamdb token, JavaScript SDK) × every client (psql, pgx, database/sql;
# mariadb, go-sql-driver/mysql, go-mysql) through iamdb serve. Also part of
# `make test`; this prints the table and writes it to $(INTEROP_MATRIX).
INTEROP_MATRIX ?= bin/interop-matrix.md
interop:
	@scripts/deps.sh --check >/dev/null 2>&1 || scripts/deps.sh
	@mkdir -p $(dir $(INTEROP_MATRIX))
	IAMDB_INTEROP_MATRIX=$(abspath $(INTEROP_MATRIX)) $(GO) test -count=1 -run 'TestInterop' ./internal/interop
	@cat $(INTEROP_MATRIX)

clean:
	rm -rf bin
