source "file" "calls" {
  path = "calls.jsonl"
}

filter "a" {
  inputs = [source.calls, filter.b]
  where  = "text != ''"
}

filter "b" {
  inputs = [filter.a]
  where  = "text != ''"
}

filter "c" {
  inputs = [filter.c]
  where  = "text != ''"
}

sink "webhook" "crm" {
  inputs = [filter.b, filter.c]
  url    = "http://127.0.0.1:8787/hook"
  when   = "nosuchfield == 1"
}
