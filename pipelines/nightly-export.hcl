# The nightly export: every classified call as Parquet for the data lake, a
# CSV for the analysts' spreadsheets, and one row per conversation with its
# messages in order. `pipeline serve pipelines/` runs it at 02:00 UTC;
# `pipeline run pipelines/nightly-export.hcl` runs it once, now.
#
# Incremental: each run exports the records that arrived since the last
# successful one (the CSV and the conversations file grow, the Parquet file
# holds the latest run); `pipeline run --full-refresh` exports everything.
# The same sinks with `sink "s3"` write to a bucket: see
# pipelines/nightly-export-s3.hcl.

pipeline {
  name     = "nightly-export"
  schedule = "0 2 * * *"
  timezone = "UTC"
}

source "file" "calls" {
  path   = "testdata/calls.jsonl"
  format = "jsonl"
}

# Nested fields stay nested (Parquet structs), zstd-compressed.
sink "file" "lake" {
  inputs = [source.calls]
  path   = ".pipeline/out/nightly/calls.parquet"
}

# Flat: classifications.churn_risk.label becomes a column of its own.
sink "file" "analysts" {
  inputs = [source.calls]
  path   = ".pipeline/out/nightly/calls.csv"
}

# One row per conversation: conversation_id, message_count and messages,
# each with its text, classifications and metadata, in timestamp order.
sink "file" "conversations" {
  inputs   = [source.calls]
  path     = ".pipeline/out/nightly/conversations.jsonl"
  group_by = "metadata.conversation_id"
  order_by = "timestamp"
}
