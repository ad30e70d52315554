source "file" "calls" {
  path = "input.jsonl"
}

transform "score" {
  inputs = [source.calls]
  set = {
    risk = "classifications.churn_risk.label == 'High' ? classifications.churn_risk.confidence : 0.0"
  }
}

filter "risky" {
  inputs = [transform.score]
  where  = "risk > 0.8"
}

transform "label" {
  inputs = [filter.risky]
  set = {
    band = "risk > 0.9 ? 'very high' : 'high'"
  }
  keep = ["row_id", "risk"]
}

sink "file" "out" {
  inputs = [transform.label]
  path   = "out.jsonl"
}
