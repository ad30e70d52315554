source "file" "calls" {
  path = "calls.jsonl"
}

filter "high_churn" {
  inputs = [source.calls
  where  = "text != ''"
}
