# Classified calls in, churn alerts out.
#
#   export CRM_WEBHOOK_URL=http://127.0.0.1:8787/crm
#   export CRM_WEBHOOK_SECRET=whsec_...        # the receiver's secret
#   pipeline run pipelines/churn.hcl
#
# `make demo` sets both and starts `pipeline receive` to watch what arrives.

pipeline {
  name = "churn"
}

source "file" "calls" {
  path   = "testdata/calls.jsonl"
  format = "jsonl"
}

filter "high_churn" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.label == 'High' && classifications.churn_risk.confidence > 0.8"
}

# One signed POST per record (Standard Webhooks); the body is the record.
sink "webhook" "crm" {
  inputs = [filter.high_churn]
  url    = env("CRM_WEBHOOK_URL", "http://127.0.0.1:8787/crm")
  secret = env("CRM_WEBHOOK_SECRET")
}

# The retention queue's share also lands in a file, for a look afterwards.
sink "file" "retention" {
  inputs = [filter.high_churn]
  when   = "metadata.queue == 'retention'"
  path   = ".pipeline/out/retention.jsonl"
}
