source "file" "calls" {
  path = "calls.jsonl"
}

sink "webhook" "crm" {
  inputs = [source.calls]
  url    = "http://127.0.0.1:8787/hook"
}

sink "webhook" "audit" {
  inputs = [sink.crm, sorce.calls, "source.calls", source, source.calls.path, source["calls"]]
  url    = "http://127.0.0.1:8787/audit"
}

sink "webhook" "other" {
  inputs = source.calls
  url    = "http://127.0.0.1:8787/other"
}

sink "webhook" "none" {
  inputs = []
  url    = "http://127.0.0.1:8787/none"
}
