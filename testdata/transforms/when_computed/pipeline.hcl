source "file" "calls" {
  path = "input.jsonl"
}

transform "enrich" {
  inputs = [source.calls]
  set = {
    priority = "classifications.churn_risk.confidence > 0.9 && classifications.churn_risk.label == 'High' ? 'urgent' : 'normal'"
  }
  keep = ["row_id"]
}

sink "file" "out" {
  inputs = [transform.enrich]
  when   = "priority == 'urgent'"
  path   = "out.jsonl"
}
