source "file" "calls" {
  path = "input.jsonl"
}

transform "enrich" {
  inputs = [source.calls]
  set = {
    ok    = "row_id"
    score = "classifications.churn_risk.label * 100"
  }
}

sink "file" "out" {
  inputs = [transform.enrich]
  path   = "out.jsonl"
}
