source "file" "calls" {
  path = "calls.jsonl"
}

sink "webhook" "crm" {
  inputs = [source.calls]
  url    = "http://127.0.0.1:8787/hook"
}

test "names what does not exist" {
  input "cals" {
    records = [{ row_id = "r1" }]
  }
  expect "cmr" { count = 1 }
}

test "bad values" {
  input "calls" {
    records = [{ row_id = "r1" }, "not a record", { _pipeline_id = "x" }]
  }
  expect "crm" { count = -1 }
}

test "bad values" {
  expect "crm" { count = 0 }
}

test "says nothing" {
  input "calls" {
    records = [{ row_id = "r1" }]
    path    = "calls.jsonl"
  }
  input "calls" { path = "other.jsonl" }
  expect "crm" {}
}

test "expects nothing" {
  input "calls" { records = "r1" }
}

test "where does not parse" {
  expect "crm" { where = "priority == " }
}
