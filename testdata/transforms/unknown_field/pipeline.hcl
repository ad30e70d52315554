source "file" "calls" {
  path = "input.jsonl"
}

transform "enrich" {
  inputs = [source.calls]
  set = {
    customer = "metadata.custmer_id"
  }
}

sink "file" "out" {
  inputs = [transform.enrich]
  path   = "out.jsonl"
}
