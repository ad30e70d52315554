source "file" "calls" {
  path = "calls.jsonl"
}

sorce "file" "more" {
  path = "more.jsonl"
}

aggregate "upper" {
  inputs = [source.calls]
}

sink "webhook" "crm" {
  inputs = [source.calls]
  url    = "http://127.0.0.1:8787/hook"
}
