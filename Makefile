# The entry point for building, testing and benchmarking pipeline.
GO       ?= go
BIN      := bin/pipeline
PKGS     := ./...
# Pinned code generators (protoc itself comes from Debian's protobuf-compiler).
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
STATICCHECK        := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TOOLS    := $(CURDIR)/.cache/tools

.PHONY: build demo demo-classify test test-ui minio test-integration fuzz bench lint generate generate-check clean

build:
	$(GO) build -o $(BIN) ./cmd/pipeline

demo: build
	./scripts/demo.sh

# Records → a model endpoint (transform "http") → computed field → filter → file.
demo-classify: build
	./scripts/demo-classify.sh

# Unit, end-to-end (real binary, real plugin processes) and diagnostics tests.
# The S3 tests run a real MinIO, built from the module proxy once per machine
# (a few minutes) and cached; building it first keeps it out of test timeouts.
test: minio
	$(GO) test -race -shuffle=on -timeout 20m $(PKGS)

minio:
	@$(GO) run ./internal/testminio/cmd/testminio >/dev/null

# The admin console in headless Chromium (e2e/ui/console.mjs, driven by
# e2e/console_test.go): Debian's chromium (installed with apt-get when
# missing and we are root), Node's playwright-core from e2e/ui's lock file
# (no browser download), then the test, which fails rather than skips here.
test-ui:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "== installing chromium (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "test-ui needs Debian's chromium at /usr/bin/chromium: sudo apt-get install chromium"; exit 1; fi; \
	fi
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "== installing nodejs and npm (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	  else echo "test-ui needs node (>= 20) and npm: sudo apt-get install nodejs npm"; exit 1; fi; \
	fi
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix e2e/ui --no-audit --no-fund
	$(GO) build -o $(BIN) ./cmd/pipeline
	PIPELINE_UI_TEST=require $(GO) test -race -count=1 -v -timeout 10m -run '^TestConsole$$' ./e2e/

# Tests that need outside services; they skip with a message when absent.
test-integration:
	$(GO) test -race -count=1 -timeout 20m -run Integration $(PKGS)

# Each fuzz target briefly (FUZZTIME=30s for longer).
FUZZTIME ?= 10s
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

bench: build
	./scripts/bench.sh

# gofmt, go vet, and staticcheck (pinned) for unused code and likely bugs.
lint: $(TOOLS)/staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(TOOLS)/staticcheck -checks 'U1000,SA*' $(PKGS)

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) GOFLAGS= $(GO) install $(STATICCHECK)

$(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) GOFLAGS= $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(TOOLS) GOFLAGS= $(GO) install $(PROTOC_GEN_GO_GRPC)

generate: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	./scripts/generate.sh sdk/proto/pluginv1

generate-check: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	@tmp=$$(mktemp -d) && ./scripts/generate.sh $$tmp && \
	  if diff -r $$tmp sdk/proto/pluginv1 >/dev/null; then echo "generated code is current"; rm -rf $$tmp; \
	  else diff -r $$tmp sdk/proto/pluginv1; rm -rf $$tmp; echo "sdk/proto/pluginv1 is stale: run make generate"; exit 1; fi

clean:
	rm -rf bin .cache
