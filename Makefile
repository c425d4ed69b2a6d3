# Sluice: build, test and benchmark. `make test` is what CI runs.
GO ?= go
export GOFLAGS ?= -buildvcs=false

.PHONY: all build test test-deps vet fuzz bench clean

all: build

build:
	$(GO) build -o sluice .

# Tests need real programs: redis-server (and redis-cli, to form a test
# Cluster), headless Chromium for the status page, and promtool for the
# alert rules. Install what is missing (as root, from Debian's packages), or
# say how to.
TEST_PROGRAMS = redis-server:redis-server redis-cli:redis-tools chromium:chromium promtool:prometheus
test-deps:
	@missing=""; for p in $(TEST_PROGRAMS); do \
	  command -v $${p%%:*} >/dev/null 2>&1 || missing="$$missing $${p#*:}"; \
	done; \
	[ -z "$$missing" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing; install them (apt-get install$$missing) and re-run make test" >&2; exit 1; \
	  fi; }

vet:
	$(GO) vet ./...

test: test-deps vet
	$(GO) test -race -count=1 -timeout 5m ./...
	cd deploy/validate && $(GO) test -count=1 -timeout 5m ./...

# Short fuzzing of every parser; FUZZTIME=5m for a longer run.
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzzing $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Go micro-benchmarks of the hot path, the load benchmark (rewrites the
# generated part of docs/benchmarks.md), the memory a waiting request holds
# and shared mode against single-replica mode (both printed;
# docs/benchmarks.md keeps the last results by hand).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./proxy/ ./scheduler/ ./limiter/ ./tokens/ ./breaker/ ./retry/
	$(GO) run ./bench -rounds 3 -out docs/benchmarks.md
	$(GO) run ./bench waiting -n 10000
	$(GO) run ./bench shared -rounds 3

clean:
	rm -f sluice
