source "file" "calls" {
  path = "more-calls.jsonl"
}

sink "webhook" "crm" {
  inputs = [filter.high_churn]
  url    = "http://127.0.0.1:8787/hook"
}

sink "webhook" "crm2" {
  inputs = [filter.hihg_churn]
  url    = "http://127.0.0.1:8787/hook2"
}
