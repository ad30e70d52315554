source "file" "calls" {
  format = "csv"
}

filter "high_churn" {
  inputs = [source.calls]
}

sink "webhook" "crm" {
  secret = "s3cret"
}
