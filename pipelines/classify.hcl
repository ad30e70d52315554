# Records arrive, a model classifies them, actions follow: each call goes
# through a classification endpoint (transform "http"), a computed field
# ranks it, and the cancellations land in a file for the retention team.
# `make demo-classify` runs it against a local stand-in model.
pipeline {
  name = "classify"
}

source "file" "calls" {
  path = "testdata/calls.jsonl"
}

transform "http" "intent" {
  inputs     = [source.calls]
  url        = env("MODEL_URL")            # e.g. http://127.0.0.1:8788/classify
  fields     = ["text"]                    # what the model needs
  into       = "classifications.intent"    # where its answer goes
  batch_size = 100
  concurrency = 4
}

transform "rank" {
  inputs = [transform.intent]
  set = {
    priority = "classifications.churn_risk.confidence > 0.9 ? 'urgent' : 'normal'"
  }
}

filter "cancellations" {
  inputs = [transform.rank]
  where  = "classifications.intent.label == 'cancellation'"
}

sink "file" "retention" {
  inputs = [filter.cancellations]
  path   = ".pipeline/out/cancellations.jsonl"
}
