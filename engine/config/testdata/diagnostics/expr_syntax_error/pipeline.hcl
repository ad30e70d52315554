source "file" "calls" {
  path = "calls.jsonl"
}

filter "high_churn" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.confidence > && text != ''"
}

filter "open_string" {
  inputs = [source.calls]
  where  = "metadata.queue == 'retention"
}

sink "webhook" "crm" {
  inputs = [filter.high_churn, filter.open_string]
  url    = "http://127.0.0.1:8787/hook"
  when   = "metadata.queue == "
  text   = "Churn {{ classifications.churn_risk.confidence"
}
