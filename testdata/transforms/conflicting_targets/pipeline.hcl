source "file" "calls" {
  path = "input.jsonl"
}

transform "enrich" {
  inputs = [source.calls]
  set = {
    routing        = "'none'"
    "routing.team" = "'tier2'"
    _pipeline_id   = "'x'"
  }
  drop = ["txet"]
}

sink "file" "out" {
  inputs = [transform.enrich]
  path   = "out.jsonl"
}
