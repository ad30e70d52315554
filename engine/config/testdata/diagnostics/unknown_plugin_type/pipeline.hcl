source "file" "calls" {
  path = "calls.jsonl"
}

source "webhook" "hooks" {
  url = "http://127.0.0.1:8787/hook"
}

sink "webhoook" "crm" {
  inputs = [source.calls, source.hooks]
  url    = "http://127.0.0.1:8787/hook"
}

sink "zendesk" "tickets" {
  inputs = [source.calls]
}

plugin "sink" "audit" {
  command = "./bin/sink-audit"
}

sink "audit" "log" {
  inputs  = [source.calls]
  anything = "goes: the plugin's schema is not known until it runs"
}
