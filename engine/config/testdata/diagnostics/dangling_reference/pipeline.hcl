source "file" "calls" {
  path = "calls.jsonl"
}

filter "high_churn" {
  inputs = [source.cals]
  where  = "classifications.churn_risk.confidence > 0.8"
}

sink "webhook" "crm" {
  inputs = [filter.high_churn, source.nope, filter.calls, source.high_churn]
  url    = "http://127.0.0.1:8787/hook"
  when   = "metadata.queu == 'retention'"
}
