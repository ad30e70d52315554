source "file" "calls" {
  path = "input.jsonl"
}

transform "slim" {
  inputs = [source.calls]
  drop   = ["text"]
}

filter "cancels" {
  inputs = [transform.slim]
  where  = "text contains 'cancel'"
}

sink "file" "out" {
  inputs = [filter.cancels]
  path   = "out.jsonl"
}
