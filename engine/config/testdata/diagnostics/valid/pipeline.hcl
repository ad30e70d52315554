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

sink "webhook" "crm" {
  inputs  = [filter.high_churn]
  when    = "metadata.queue == 'retention'"
  url     = env("CRM_WEBHOOK_URL", "http://127.0.0.1:8787/hook")
  secret  = env("CRM_WEBHOOK_SECRET")
  headers = { "X-Team" = "retention" }
  text    = "Churn risk {{ classifications.churn_risk.confidence }} for {{ metadata.customer_id }}"
}
