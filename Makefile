# The entry point for building, testing and benchmarking pipeline.
GO       ?= go
BIN      := bin/pipeline
PKGS     := ./...
# Pinned code generators (protoc itself comes from Debian's protobuf-compiler).
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
STATICCHECK        := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TOOLS    := $(CURDIR)/.cache/tools

.PHONY: build demo demo-classify test minio test-integration fuzz bench lint generate generate-check clean

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
