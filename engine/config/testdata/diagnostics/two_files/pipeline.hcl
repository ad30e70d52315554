source "file" "calls" {
  path = "calls.jsonl"
}

filter "high_churn" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.confidence > 0.8"
}
