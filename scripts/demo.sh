#!/usr/bin/env bash
# make demo: build pipeline, start a local webhook receiver, run
# pipelines/churn.hcl against it twice (the second run is incremental and
# delivers nothing), and show what arrived.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=bin/pipeline
port=${DEMO_PORT:-8787}
state=.pipeline/demo/state.db
log=.pipeline/demo/receiver.log
mkdir -p .pipeline/demo
rm -f "$state" "$state"-* "$log" .pipeline/out/retention.jsonl

export CRM_WEBHOOK_URL="http://127.0.0.1:${port}/crm"
# The receiver is on loopback, which webhook sinks refuse by default (SSRF guard).
export PIPELINE_ALLOW_PRIVATE_NETWORKS=1
export CRM_WEBHOOK_SECRET="whsec_$(head -c 24 /dev/urandom | base64)"

"$bin" receive --addr "127.0.0.1:${port}" --secret "$CRM_WEBHOOK_SECRET" >"$log" 2>&1 &
receiver=$!
trap 'kill $receiver 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  grep -q listening "$log" 2>/dev/null && break
  if ! kill -0 "$receiver" 2>/dev/null; then cat "$log"; exit 1; fi
  sleep 0.1
done

echo "== pipeline validate pipelines/churn.hcl"
"$bin" validate pipelines/churn.hcl
echo
echo "== pipeline run pipelines/churn.hcl   (receiver: pipeline receive on 127.0.0.1:${port})"
"$bin" run --state "$state" pipelines/churn.hcl
echo
echo "== what the receiver got (first 5 of $(grep -c '✓' "$log") verified deliveries)"
grep -m 5 '✓' "$log"
echo
echo "== pipeline run again: incremental, nothing new to deliver"
"$bin" run --state "$state" pipelines/churn.hcl
echo
echo "== pipeline state show"
"$bin" state show --state "$state" pipelines/churn.hcl
echo
echo "retention-queue records written to .pipeline/out/retention.jsonl: $(wc -l < .pipeline/out/retention.jsonl)"
if grep -q '✗' "$log"; then echo "some deliveries failed verification:"; grep '✗' "$log"; exit 1; fi
