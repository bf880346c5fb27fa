# iamdb — see README.md. `make test` is the command CI runs.
GO       ?= go
BIN      ?= bin/iamdb
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/iamdb/iamdb/internal/cli.Version=$(VERSION)
FUZZTIME ?= 20s

.PHONY: all build test test-short lint fuzz deps clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/iamdb

# Full suite: lint, then every test (real PostgreSQL, MariaDB, Redis and the
# AWS CLI are started or run by the tests) under the race detector.
test: lint
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

clean:
	rm -rf bin
