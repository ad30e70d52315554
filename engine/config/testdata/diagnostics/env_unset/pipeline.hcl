source "file" "calls" {
  path = env("CALLS_PATH", "calls.jsonl")
}

filter "high_churn" {
  inputs = [source.calls]
  where  = env("CHURN_WHERE")
}

sink "webhook" "crm" {
  inputs = [filter.high_churn]
  url    = env("CRM_WEBHOOK_URL")
  secret = env("CRM_WEBHOOK_SECRET")
}
