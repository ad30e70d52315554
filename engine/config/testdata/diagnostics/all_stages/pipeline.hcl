# One of each stage's errors: validate reports them all at once.
source "file" "calls" {
  path   = "calls.jsonl"
  format = ["jsonl"]
  extra  = true
}

filter "high_churn" {
  inputs = [source.calls, source.tickets]
  where  = "classifications.churn_risk.confidence > 0.8"
}

filter "retention" {
  inputs = [source.calls]
  where  = "metadata.queu == 'retention'"
}

sink "webhook" "crm" {
  inputs = [filter.retention]
  when   = "metadata.channel == 'phone' &&"
  text   = "{{ metadata.customer }}"
}

sink "slak" "retention" {
  inputs = [filter.high_churn]
  text   = "{{ nothing.checks.this }}"
}
