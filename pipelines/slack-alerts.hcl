# Classified calls in, Slack alerts out: one message per high churn-risk
# call, posted to the retention team's channel.
#
#   export SLACK_WEBHOOK_URL=https://hooks.slack.com/services/T…/B…/…   # a secret
#   pipeline run pipelines/slack-alerts.hcl
#
# Messages are paced at one per second (Slack's limit), retried on the
# default schedule and logged: `pipeline deliveries --sink retention`.

pipeline {
  name = "slack-alerts"
}

source "file" "calls" {
  path   = "testdata/calls.jsonl"
  format = "jsonl"
}

filter "high_churn" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.label == 'High' && classifications.churn_risk.confidence > 0.8"
}

# An incoming webhook posts to the channel it was created for.
sink "slack" "retention" {
  inputs      = [filter.high_churn]
  webhook_url = env("SLACK_WEBHOOK_URL")

  # The notification text, and the fallback where blocks are not shown.
  text = "Churn risk {{ classifications.churn_risk.label }} for {{ metadata.customer_id }} ({{ metadata.queue }})"

  # Block Kit JSON, rendered per record. Placeholders are inserted as they
  # are: free text goes through toJSON() so that its quotes stay JSON.
  blocks = <<-EOT
    [
      {"type": "header", "text": {"type": "plain_text", "text": "Churn risk: {{ classifications.churn_risk.label }}"}},
      {"type": "section", "fields": [
        {"type": "mrkdwn", "text": "*Customer*\n{{ metadata.customer_id }}"},
        {"type": "mrkdwn", "text": "*Confidence*\n{{ classifications.churn_risk.confidence }}"},
        {"type": "mrkdwn", "text": "*Queue*\n{{ metadata.queue }}"},
        {"type": "mrkdwn", "text": "*Product*\n{{ metadata.product }}"}
      ]},
      {"type": "section", "text": {"type": "plain_text", "text": {{ toJSON(text) }}}},
      {"type": "context", "elements": [{"type": "mrkdwn", "text": "Call {{ row_id }} at {{ timestamp }}"}]}
    ]
  EOT
}

# With a bot token instead (chat:write scope), the channel may come from the
# record:
#
# sink "slack" "by_queue" {
#   inputs  = [filter.high_churn]
#   token   = env("SLACK_BOT_TOKEN")
#   channel = "{{ metadata.queue == 'retention' ? 'C0RETENTION' : 'C0SUPPORT' }}"
#   text    = "Churn risk {{ classifications.churn_risk.label }} for {{ metadata.customer_id }}"
# }
