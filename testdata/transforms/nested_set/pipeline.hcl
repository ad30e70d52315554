source "file" "calls" {
  path = "input.jsonl"
}

transform "route" {
  inputs = [source.calls]
  set = {
    "routing.team"   = "metadata.queue == 'retention' ? 'tier2' : 'general'"
    "routing.urgent" = "classifications.churn_risk.label == 'High'"
    "metadata.team"  = "upper(metadata.queue)"
  }
  keep = ["row_id", "metadata.customer_id"]
}

sink "file" "out" {
  inputs = [transform.route]
  path   = "out.jsonl"
}
