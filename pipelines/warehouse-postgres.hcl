# Classified calls into a Postgres table, merged on row_id: re-runs and
# crashes never double-count. The table is created on the first load; new
# fields become new columns.
#
#   export DATABASE_URL="postgres://user:pass@db.example.com:5432/analytics?sslmode=require"
#   pipeline run pipelines/warehouse-postgres.hcl
#
# Without DATABASE_URL it loads into the local server's `test` database.

pipeline {
  name     = "warehouse-postgres"
  schedule = "0 * * * *"   # hourly under `pipeline serve`
}

source "file" "calls" {
  path   = "testdata/calls.jsonl"
  format = "jsonl"
}

sink "postgres" "calls" {
  inputs = [source.calls]
  dsn    = env("DATABASE_URL", "host=127.0.0.1 port=5432 dbname=test user=postgres sslmode=disable")
  table  = "classified_calls"
  key    = "row_id"
  types  = { timestamp = "timestamp" }
  batch {
    rows     = 100000
    bytes    = "64MiB"
    interval = "30s"
  }
}
