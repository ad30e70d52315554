#!/usr/bin/env bash
# make bench: records/s and peak RSS for source "file" → filter → sink "file"
# (JSONL) through out-of-process plugins, and the same work in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_RECORDS:-1000000}
dir=.cache/bench
mkdir -p "$dir"
data="$dir/calls-$N.jsonl"
if [ ! -s "$data" ]; then
  echo "generating $N records into $data"
  go run ./tools/gencalls -n "$N" -seed 7 -o "$data"
fi
size=$(du -m "$data" | cut -f1)
go build -o "$dir/benchinproc" ./tools/benchinproc

cat >"$dir/bench.hcl" <<HCL
pipeline { name = "bench" }
source "file" "calls" {
  path = "$data"
}
filter "high_churn" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.confidence > 0.8"
}
sink "file" "out" {
  inputs = [filter.high_churn]
  path   = "$dir/out.jsonl"
}
HCL

echo "input: $N records, ${size} MB, filter classifications.churn_risk.confidence > 0.8, $(nproc) cores"
rm -rf "$dir/out.jsonl" "$dir/state.db"*
/usr/bin/time -f "%e %M" -o "$dir/time.txt" bin/pipeline run --json --state "$dir/state.db" "$dir/bench.hcl" >"$dir/summary.json" 2>"$dir/stderr.txt" || { cat "$dir/stderr.txt"; exit 1; }
read -r secs rss <"$dir/time.txt"
rate=$(awk -v n="$N" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
printf "%-44s %8s s  %10s records/s  peak RSS %6d MB (largest process)\n" "pipeline run (plugins out of process)" "$secs" "$rate" $((rss / 1024))

rm -f "$dir/out-inproc.jsonl"
/usr/bin/time -f "%e %M" -o "$dir/time.txt" "$dir/benchinproc" -in "$data" -out "$dir/out-inproc.jsonl" >/dev/null
read -r secs rss <"$dir/time.txt"
rate=$(awk -v n="$N" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
printf "%-44s %8s s  %10s records/s  peak RSS %6d MB\n" "same work in one process (tools/benchinproc)" "$secs" "$rate" $((rss / 1024))

if ! cmp -s <(sort "$dir/out.jsonl") <(sort "$dir/out-inproc.jsonl"); then
  echo "the two outputs differ!" >&2; exit 1
fi
echo "outputs identical: $(wc -l <"$dir/out.jsonl") records kept"

# Small records (DESIGN.md's ~150-byte shape; issue 15's first target): the
# same pipeline, and a grep -c scan of the same file in the same run, the
# floor the target is set against (pipeline ≤ 3× grep).
small="$dir/calls-small-$N.jsonl"
if [ ! -s "$small" ]; then
  echo "generating $N small records into $small"
  go run ./tools/gencalls -n "$N" -seed 7 -small -o "$small"
fi
sed -e "s|$data|$small|" -e "s|$dir/out.jsonl|$dir/out-small.jsonl|" "$dir/bench.hcl" >"$dir/bench-small.hcl"
rm -rf "$dir/out-small.jsonl" "$dir/state-small.db"*
/usr/bin/time -f "%e %M" -o "$dir/time.txt" bin/pipeline run --state "$dir/state-small.db" "$dir/bench-small.hcl" >/dev/null 2>"$dir/stderr.txt" || { cat "$dir/stderr.txt"; exit 1; }
read -r secs rss <"$dir/time.txt"
# (not into /dev/null: GNU grep stops at the first match when it sees that)
LC_ALL=C /usr/bin/time -f "%e" -o "$dir/time-grep.txt" grep -cE '"confidence":0\.(8[1-9]|9)' "$small" >"$dir/grep-count.txt"
read -r gsecs <"$dir/time-grep.txt"
rate=$(awk -v n="$N" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
ratio=$(awk -v a="$secs" -v b="$gsecs" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "-" }')
printf "%-44s %8s s  %10s records/s  peak RSS %6d MB  (grep -c: %s s, %s×)\n" "small records ($(du -m "$small" | cut -f1) MB), pipeline run" "$secs" "$rate" $((rss / 1024)) "$gsecs" "$ratio"
# The grep pattern matches exactly the records the filter keeps.
if [ "$(wc -l <"$dir/out-small.jsonl")" != "$(cat "$dir/grep-count.txt")" ]; then
  echo "the small-record run kept $(wc -l <"$dir/out-small.jsonl") records, grep counted $(cat "$dir/grep-count.txt")" >&2; exit 1
fi

# Computed fields (issue 11): the same pipeline with a transform of two set
# fields between the filter and the sink; the target is < 15% over the run
# without it.
cat >"$dir/bench-transform.hcl" <<HCL
pipeline { name = "bench-transform" }
source "file" "calls" {
  path = "$data"
}
filter "high_churn" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.confidence > 0.8"
}
transform "enrich" {
  inputs = [filter.high_churn]
  set = {
    priority = "classifications.churn_risk.confidence > 0.9 ? 'urgent' : 'normal'"
    customer = "metadata.customer_id"
  }
}
sink "file" "out" {
  inputs = [transform.enrich]
  path   = "$dir/out-transform.jsonl"
}
HCL
rm -rf "$dir/out-transform.jsonl" "$dir/state-transform.db"*
/usr/bin/time -f "%e %M" -o "$dir/time.txt" bin/pipeline run --json --state "$dir/state-transform.db" "$dir/bench-transform.hcl" >"$dir/summary.json" 2>"$dir/stderr.txt" || { cat "$dir/stderr.txt"; exit 1; }
read -r tsecs rss <"$dir/time.txt"
rate=$(awk -v n="$N" -v s="$tsecs" 'BEGIN { printf "%.0f", n / s }')
printf "%-44s %8s s  %10s records/s  peak RSS %6d MB (largest process)\n" "with transform: 2 computed fields" "$tsecs" "$rate" $((rss / 1024))

# Model calls: the same records through transform "http" (fields = ["text"],
# batch_size 100, concurrency 8) to tools/demomodel, a stand-in model that
# this script starts on a free loopback port (it shares the cores), then into
# sink "file"; every record must come out classified. BENCH_MODEL=0 skips it.
if [ "${BENCH_MODEL:-1}" != 0 ]; then
  go build -o "$dir/demomodel" ./tools/demomodel
  rm -f "$dir/model.log"
  "$dir/demomodel" -addr 127.0.0.1:0 >"$dir/model.log" 2>&1 &
  model=$!
  trap 'kill "$model" 2>/dev/null || true' EXIT
  url=
  for _ in $(seq 100); do
    url=$(grep -o 'http://[^ ]*' "$dir/model.log" 2>/dev/null || true)
    [ -n "$url" ] && break
    kill -0 "$model" 2>/dev/null || { cat "$dir/model.log"; exit 1; }
    sleep 0.05
  done
  [ -n "$url" ] || { echo "tools/demomodel did not start" >&2; exit 1; }
  cat >"$dir/bench-model.hcl" <<HCL
pipeline { name = "bench-model" }
source "file" "calls" {
  path = "$data"
}
transform "http" "intent" {
  inputs      = [source.calls]
  url         = "$url"
  fields      = ["text"]
  into        = "classifications.intent"
  batch_size  = 100
  concurrency = 8
  allow_private_networks = true
}
sink "file" "out" {
  inputs = [transform.intent]
  path   = "$dir/out-model.jsonl"
}
HCL
  rm -rf "$dir/out-model.jsonl" "$dir/state-model.db"*
  /usr/bin/time -f "%e %M" -o "$dir/time.txt" bin/pipeline run --json --state "$dir/state-model.db" "$dir/bench-model.hcl" >"$dir/summary.json" 2>"$dir/stderr.txt" || { cat "$dir/stderr.txt"; exit 1; }
  kill "$model" 2>/dev/null || true
  wait "$model" 2>/dev/null || true
  trap - EXIT
  read -r msecs rss <"$dir/time.txt"
  rate=$(awk -v n="$N" -v s="$msecs" 'BEGIN { printf "%.0f", n / s }')
  printf "%-44s %8s s  %10s records/s  peak RSS %6d MB (largest process)\n" "transform \"http\" to a model (demomodel)" "$msecs" "$rate" $((rss / 1024))
  classified=$(grep -c '"intent":{"confidence":' "$dir/out-model.jsonl" || true)
  if [ "$classified" != "$N" ]; then
    echo "transform \"http\": $classified of $N records came out classified" >&2; exit 1
  fi
fi

# Webhook deliveries (issue 3), end to end with the real binary (bin/pipeline,
# built by make bench): `pipeline run` of source "file" → filter → sink
# "webhook" (plugins out of process, the SQLite outbox in a temporary state
# file) for 20,000 matching records, posting to a loopback receiver in another
# process that verifies every signature; deliveries/s (20,000 / wall time of
# the run, and over first → last arrival) and peak RSS at concurrency 16 and
# 64, checking that every id arrived once, every signature verified and the
# state file holds every delivery and attempt. Then `pipeline serve --poll 1ms`
# while records are appended at a steady 1,000/s for 10 s: latency from the
# append to the arrival, p50, p99 and max. BENCH_DELIVER=0 skips it.
if [ "${BENCH_DELIVER:-1}" != 0 ]; then
  echo
  go run ./tools/benchdeliver -pipeline bin/pipeline
fi

# Exports (issue 4): the same records into a real MinIO as Parquet and as CSV
# through sink "s3"; rows/s, peak RSS and bytes per record in the bucket.
# MinIO is built from the module proxy once per machine (a few minutes).
# BENCH_EXPORT=0 skips it.
if [ "${BENCH_EXPORT:-1}" != 0 ]; then
  echo
  go run ./tools/benchexport -in "$data" -n "$N" -pipeline bin/pipeline
fi

# Warehouse loads (issue 5): 1M records into the local PostgreSQL (merge and
# append), and the Parquet the Snowflake and BigQuery sinks build per load.
# BENCH_WAREHOUSE=0 skips it; Postgres is skipped when the server is down.
if [ "${BENCH_WAREHOUSE:-1}" != 0 ]; then
  echo
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    go run ./tools/benchpostgres -n "$N" -bin bin/pipeline
    go run ./tools/benchpostgres -n "$N" -bin bin/pipeline -mode append
  else
    echo "PostgreSQL is not running at 127.0.0.1:5432: skipping the Postgres load benchmark"
  fi
  BENCH_JSONL="$PWD/$data" go test -run '^$' -bench BenchmarkLoadParquet -benchtime 1x ./plugins/sink-snowflake/ ./plugins/sink-bigquery/
fi

# Push ingest (issue 12): source "http" with the real binary. 8 clients POST
# NDJSON bodies of 500 records (200,000 records), each answered 202 only
# once durable: records/s accepted into sink "file" and into sink "webhook"
# (whose outbox shares the state store), every record checked at the
# receiver; then 1,000 records/s for 10 s, request to arrival at the
# webhook receiver, p50, p99 and max. BENCH_PUSH=0 skips it.
if [ "${BENCH_PUSH:-1}" != 0 ]; then
  echo
  go run ./tools/benchpush -pipeline bin/pipeline
fi

# Sources (issue 13). Parquet input: the benchmark records converted once
# to Parquet with sink "file", then source "file" { format = "parquet" } →
# sink "file" (JSONL, no filter), checked byte-identical to the input; the
# Postgres source (tools/benchpgsource: 1M rows loaded once into schema
# benchpgsource, then source "postgres" → sink "file") for flat columns and
# jsonb; a 2 GiB JSONL object streamed from a real MinIO by source "s3"
# (tools/benchs3source). BENCH_SOURCES=0 skips them.
if [ "${BENCH_SOURCES:-1}" != 0 ]; then
  echo
  pq="$dir/calls-$N.parquet"
  if [ ! -s "$pq" ]; then
    cat >"$dir/to-parquet.hcl" <<HCL
pipeline { name = "to-parquet" }
source "file" "calls" {
  path = "$data"
}
sink "file" "out" {
  inputs = [source.calls]
  path   = "$pq"
  format = "parquet"
}
HCL
    rm -rf "$dir/state-pq.db"*
    bin/pipeline run --state "$dir/state-pq.db" "$dir/to-parquet.hcl" 2>/dev/null
  fi
  cat >"$dir/from-parquet.hcl" <<HCL
pipeline { name = "from-parquet" }
source "file" "calls" {
  path   = "$pq"
  format = "parquet"
}
sink "file" "out" {
  inputs = [source.calls]
  path   = "$dir/out-parquet.jsonl"
}
HCL
  rm -rf "$dir/out-parquet.jsonl" "$dir/state-pq.db"*
  /usr/bin/time -f "%e %M" -o "$dir/time.txt" bin/pipeline run --json --state "$dir/state-pq.db" "$dir/from-parquet.hcl" >"$dir/summary.json" 2>"$dir/stderr.txt" || { cat "$dir/stderr.txt"; exit 1; }
  read -r secs rss <"$dir/time.txt"
  rate=$(awk -v n="$N" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
  printf "%-44s %8s s  %10s records/s  peak RSS %6d MB (largest process)\n" "Parquet file ($(du -m "$pq" | cut -f1) MB) → JSONL" "$secs" "$rate" $((rss / 1024))
  if ! cmp -s "$data" "$dir/out-parquet.jsonl"; then
    echo "the Parquet round trip differs from the input!" >&2; exit 1
  fi
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    go run ./tools/benchpgsource -n "$N" -input "$data" -bin bin/pipeline -shape flat
    go run ./tools/benchpgsource -n "$N" -input "$data" -bin bin/pipeline -shape jsonb
  else
    echo "PostgreSQL is not running at 127.0.0.1:5432: skipping the Postgres source benchmark"
  fi
  go run ./tools/benchs3source -pipeline bin/pipeline
fi

# Admin API (issue 14): the delivery-log queries behind GET /api/deliveries
# and POST /api/deliveries/replay, on a state store holding 1,000,000
# deliveries (10% dead, 2 pipelines × 2 sinks, 1-3 attempts each; built
# once per run, ~45 s). BENCH_ADMIN=0 skips it.
if [ "${BENCH_ADMIN:-1}" != 0 ]; then
  echo
  go test -run '^$' -bench 'DeliveryPageDead1M|Replay10kDead|DeliveryQueries1M' -benchtime 1s -count 1 ./engine/state/ | grep -E '^Benchmark|ok|FAIL'
fi

# Cluster (issue 16): `pipeline serve --cluster` on the machine's NATS with
# 1, 2 and 3 workers: deliveries/s to a receiver that takes 20 ms per
# request (latency-bound, as CRMs are), then the 1M-record file pipeline
# (six files of the same records → filter → a file per worker) with 1 and 2
# workers, checking that the outputs hold exactly what the filter keeps.
# Skipped when NATS is not at 127.0.0.1:4222. BENCH_CLUSTER=0 skips it.
if [ "${BENCH_CLUSTER:-1}" != 0 ]; then
  echo
  if (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
    go run ./tools/benchcluster -pipeline bin/pipeline -records "$data"
  else
    echo "NATS is not running at 127.0.0.1:4222: skipping the cluster benchmark"
  fi
fi
