source "file" "calls" {
  path = "calls.jsonl"
}

source "file" "tickets" {
  path = "tickets.jsonl"
}

filter "high_churn" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.confidence > 0.8"
}

filter "retention" {
  inputs = [source.calls]
  where  = "metadata.queue == 'retention'"
}

sink "webhook" "crm" {
  inputs = [filter.high_churn]
  url    = "http://127.0.0.1:8787/hook"
}
