#!/usr/bin/env bash
# make demo-classify: run pipelines/classify.hcl against a local stand-in
# model endpoint (tools/demomodel): calls → transform "http" (the model) →
# transform (a computed field) → filter → file.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=bin/pipeline
port=${DEMO_MODEL_PORT:-8788}
state=.pipeline/demo/classify.db
log=.pipeline/demo/model.log
mkdir -p .pipeline/demo .pipeline/out
rm -rf "$state" "$state"-* "$state".locks "$log" .pipeline/out/cancellations.jsonl
go build -o .pipeline/demo/demomodel ./tools/demomodel

export MODEL_URL="http://127.0.0.1:${port}/classify"
# The model is on loopback, which transform "http" refuses by default (SSRF guard).
export PIPELINE_ALLOW_PRIVATE_NETWORKS=1
.pipeline/demo/demomodel -addr "127.0.0.1:${port}" >"$log" 2>&1 &
model=$!
trap 'kill $model 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  grep -q listening "$log" 2>/dev/null && break
  if ! kill -0 "$model" 2>/dev/null; then cat "$log"; exit 1; fi
  sleep 0.1
done

echo "== pipeline validate pipelines/classify.hcl"
"$bin" validate pipelines/classify.hcl
echo
echo "== pipeline run pipelines/classify.hcl   (model: tools/demomodel on 127.0.0.1:${port})"
"$bin" run --state "$state" pipelines/classify.hcl
echo
n=$(wc -l < .pipeline/out/cancellations.jsonl)
echo "== cancellations, classified by the model: $n (first 3, intent and priority)"
head -3 .pipeline/out/cancellations.jsonl | grep -o '"intent":{[^}]*}\|"priority":"[a-z]*"' | paste - -
[ "$n" -gt 0 ] || { echo "the model classified no call as a cancellation"; exit 1; }
