source "file" "calls" {
  path = "input.jsonl"
}

transform "enrich" {
  inputs = [source.calls]
  set = {
    priority = "classifications.churn_risk.confidence > 0.9 ? 'urgent' : 'normal'"
    customer = "metadata.customer_id"
    score    = "classifications.churn_risk.confidence * 100"
    short    = "len(text) < 30"
  }
}

sink "file" "out" {
  inputs = [transform.enrich]
  path   = "out.jsonl"
}
