# Tests of churn.hcl: `pipeline test pipelines/churn.hcl` runs them. Nothing
# is sent: each sink is replaced by a capture of what it would receive.

test "high churn reaches the CRM, and the retention file when queued there" {
  input "calls" {
    records = [
      { row_id = "r1", classifications = { churn_risk = { label = "High", confidence = 0.95 } }, metadata = { queue = "retention" } },
      { row_id = "r2", classifications = { churn_risk = { label = "High", confidence = 0.91 } }, metadata = { queue = "billing" } },
    ]
  }
  expect "crm" {
    count = 2
    where = "classifications.churn_risk.label == 'High'"
  }
  expect "retention" {
    count = 1
    where = "row_id == 'r1'"
  }
}

test "low confidence or low risk sends nothing" {
  input "calls" {
    records = [
      { row_id = "r3", classifications = { churn_risk = { label = "High", confidence = 0.8 } }, metadata = { queue = "retention" } },
      { row_id = "r4", classifications = { churn_risk = { label = "Low", confidence = 0.99 } }, metadata = { queue = "retention" } },
    ]
  }
  expect "crm" { count = 0 }
  expect "retention" { count = 0 }
}

test "the sample calls: the alerts a run would send" {
  input "calls" {
    path = "../testdata/calls.jsonl"
  }
  expect "crm" {
    where = "classifications.churn_risk.confidence > 0.8"
  }
}
