pipeline {
  name = "churn"
}

pipeline {
  name = "churn2"
}

source "file" "calls" {
  path = "calls.jsonl"
}

source "file" "calls" {
  path = "more-calls.jsonl"
}

filter "calls" {
  inputs = [source.calls]
  where  = "text != ''"
}

filter "calls" {
  inputs = [source.calls]
  where  = "text == ''"
}

sink "webhook" "crm" {
  inputs = [filter.calls]
  url    = "http://127.0.0.1:8787/hook"
}

sink "slack" "crm" {
  inputs      = [filter.calls]
  webhook_url = "http://127.0.0.1:8787/slack"
  text        = "{{ text }}"
}

plugin "sink" "audit" {
  command = "sink-audit"
}

plugin "sink" "audit" {
  command = "sink-audit2"
}
