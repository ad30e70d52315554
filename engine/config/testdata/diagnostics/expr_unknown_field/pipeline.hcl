source "file" "calls" {
  path = "calls.jsonl"
}

source "file" "unknown_schema" {
  path = "other.jsonl"
}

filter "high_churn" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.lable == 'High'"
}

filter "any" {
  inputs = [source.unknown_schema]
  where  = "whatever.goes == 1"
}

sink "webhook" "crm" {
  inputs = [filter.high_churn, filter.any]
  url    = "http://127.0.0.1:8787/hook"
  when   = "nope == 1"
}

sink "slack" "retention" {
  inputs      = [filter.high_churn]
  when        = "metadata.queue == 'retention'"
  webhook_url = "http://127.0.0.1:8787/slack"
  text        = "Churn risk {{ classifications.churn_risk.confidence }} for {{ metadata.customer }}"
}

sink "webhook" "retention_hook" {
  inputs = [filter.high_churn]
  url    = "http://127.0.0.1:8787/retention"
  when   = "metadata.queue == 'retention' && metadata.chanel == 'phone'"
}
