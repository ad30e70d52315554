source "file" "calls" {
  path = "input.jsonl"
}

transform "slim" {
  inputs = [source.calls]
  drop   = ["text", "metadata.agent_id"]
  rename = {
    row_id                 = "id"
    "metadata.customer_id" = "customer"
  }
}

transform "only" {
  inputs = [transform.slim]
  keep   = ["id", "metadata"]
}

sink "file" "out" {
  inputs = [transform.only]
  path   = "out.jsonl"
}
