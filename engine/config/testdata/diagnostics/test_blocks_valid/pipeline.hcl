source "file" "calls" {
  path = "calls.jsonl"
}

sink "webhook" "crm" {
  inputs = [source.calls]
  url    = "http://127.0.0.1:8787/hook"
}

test "a valid test" {
  input "calls" {
    records = [{ row_id = "r1", classifications = { churn_risk = { confidence = 0.9 } } }]
  }
  expect "crm" {
    count = 1
    where = "classifications.churn_risk.confidence > 0.8"
  }
}
