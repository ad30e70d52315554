#!/usr/bin/env bash
# Generates the plugin protocol's Go code into $1 with the pinned generators
# in .cache/tools and Debian's protoc (installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: generate.sh OUTDIR}
if ! command -v protoc >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null && apt-get install -y -qq protobuf-compiler >/dev/null
  else
    echo "protoc is missing: install protobuf-compiler" >&2; exit 1
  fi
fi
mkdir -p "$out"
PATH="$PWD/.cache/tools:$PATH" protoc -I sdk/proto \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  sdk/proto/plugin.proto
