source "file" "calls" {
  path   = ["calls.jsonl"]
  format = "jsonl"
}

filter "high_churn" {
  inputs = [source.calls]
  where  = true
}

sink "webhook" "crm" {
  inputs  = [filter.high_churn]
  url     = "http://127.0.0.1:8787/hook"
  headers = "X-Team: retention"
  when    = 42
}
