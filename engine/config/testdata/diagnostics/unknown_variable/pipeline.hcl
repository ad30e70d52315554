pipeline {
  name = var.name
}

source "file" "calls" {
  path = var.calls_path
}

sink "webhook" "crm" {
  inputs = [source.calls]
  url    = upper("http://x")
  secret = file("missing-secret.txt")
}

sink "webhook" "names" {
  inputs = [source.calls]
  url    = "http://127.0.0.1:8787/hook"
}

source "file" "bad-name!" {
  path = "x"
}

pipeline {
}
