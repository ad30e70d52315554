source "file" "calls" {
  path = "calls.jsonl"
}

filter "quoted" {
  inputs = [source.calls]
  where  = "text == \"caf\u00e9\" && metadata.qeue == 'x'"
}

filter "dollar" {
  inputs = [source.calls]
  where  = "text == '$${x}' && metadata.chanel == 'phone'"
}

filter "heredoc" {
  inputs = [source.calls]
  where  = <<EOT
text != ''
  && metadata.agent == 'x'
EOT
}

filter "interpolated" {
  inputs = [source.calls]
  where  = "${"text"} == 'x' && nope == 1"
}

sink "webhook" "crm" {
  inputs = [filter.quoted, filter.dollar, filter.heredoc, filter.interpolated]
  url    = "http://127.0.0.1:8787/hook"
}
