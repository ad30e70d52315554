# The nightly export into a bucket: Parquet for the data lake, partitioned
# by day, and one row per conversation. Each run ends with a manifest
# (_manifest-….json) listing its objects, written after them.
#
#   export EXPORT_BUCKET=acme-lake
#   export AWS_PROFILE=...                 # or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, SSO, a role
#   export S3_ENDPOINT=http://127.0.0.1:9000   # only for MinIO or another S3-compatible store
#   pipeline run pipelines/nightly-export-s3.hcl     # once, now
#   pipeline serve pipelines/                         # at 02:00 UTC every night

pipeline {
  name     = "nightly-export-s3"
  schedule = "0 2 * * *"
  timezone = "UTC"
}

source "file" "calls" {
  path   = "testdata/calls.jsonl"
  format = "jsonl"
}

sink "s3" "lake" {
  inputs    = [source.calls]
  bucket    = env("EXPORT_BUCKET")
  endpoint  = env("S3_ENDPOINT", "")
  prefix    = "labelf/classified/dt={{ date }}/"
  format    = "parquet"
  roll_rows = 1000000
}

sink "s3" "conversations" {
  inputs      = [source.calls]
  bucket      = env("EXPORT_BUCKET")
  endpoint    = env("S3_ENDPOINT", "")
  prefix      = "labelf/conversations/dt={{ date }}/"
  format      = "jsonl"
  compression = "gzip"
  group_by    = "metadata.conversation_id"
  order_by    = "timestamp"
}
