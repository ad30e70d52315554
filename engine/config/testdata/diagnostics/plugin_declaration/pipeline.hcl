plugin "sinks" "audit" {
  command = "./bin/sink-audit"
}

plugin "sink" "audit" {
  command = "./bin/sink-audit"
  args    = ["--verbose", 3, true]
  sha256  = "abc123"
}

plugin "source" "kafka" {
  args = "--verbose"
}

plugin "sink" "ok" {
  command = "./bin/sink-ok"
  args    = ["--verbose"]
  sha256  = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
}

source "file" "calls" {
  path = "calls.jsonl"
}

sink "ok" "x" {
  inputs = [source.calls]
}

sink "audit" "y" {
  inputs = [source.calls]
}
