source "file" "calls" {
  path    = "calls.jsonl"
  fromat  = "csv"
}

filter "high_churn" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.confidence > 0.8"
  when   = "metadata.queue == 'retention'"
}

sink "webhook" "crm" {
  inputs = [filter.high_churn]
  urll   = "http://127.0.0.1:8787/hook"
}
