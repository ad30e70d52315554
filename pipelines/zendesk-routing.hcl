# Classified calls in, Zendesk tickets tagged, routed and annotated.
#
#   export ZENDESK_SUBDOMAIN=acme               # https://acme.zendesk.com
#   export ZENDESK_EMAIL=agent@acme.example     # the agent the token belongs to
#   export ZENDESK_API_TOKEN=...                # Admin Center > Apps and integrations > Zendesk API
#   pipeline validate pipelines/zendesk-routing.hcl
#   pipeline run pipelines/zendesk-routing.hcl
#
# The sample calls carry the ticket each one belongs to in metadata.ticket_id
# (one has none, and the sinks' `when` leaves it out). Point the source at
# your own records, and the group id at one of your groups.

pipeline {
  name = "zendesk-routing"
}

source "file" "calls" {
  path   = "plugins/sink-zendesk/testdata/tickets.jsonl"
  format = "jsonl"
}

filter "high_churn" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.label == 'High' && classifications.churn_risk.confidence > 0.8"
}

# High churn risk: tag the ticket (its other tags stay), move it to the
# retention group and raise its priority. Tickets that get this same change
# go together, up to 100 per update_many call.
sink "zendesk" "retention" {
  inputs      = [filter.high_churn]
  when        = "metadata.ticket_id != nil"
  subdomain   = env("ZENDESK_SUBDOMAIN", "acme")
  email       = env("ZENDESK_EMAIL")
  api_token   = env("ZENDESK_API_TOKEN")
  ticket_id   = "{{ metadata.ticket_id }}"
  add_tags    = ["churn_risk_high"]
  remove_tags = ["churn_risk_low"]
  group_id    = env("ZENDESK_RETENTION_GROUP_ID", "360001234567")
  priority    = "high"
}

# A competitor was named: leave an internal note for the agent. Notes differ
# per ticket, so each goes in a request of its own.
sink "zendesk" "competitor_note" {
  inputs    = [source.calls]
  when      = "metadata.ticket_id != nil && classifications.competitor_mention.label != 'None'"
  subdomain = env("ZENDESK_SUBDOMAIN", "acme")
  email     = env("ZENDESK_EMAIL")
  api_token = env("ZENDESK_API_TOKEN")
  ticket_id = "{{ metadata.ticket_id }}"
  add_tags  = ["competitor_mention"]
  comment   = "Call classified: competitor {{ classifications.competitor_mention.label }} (confidence {{ classifications.competitor_mention.confidence }}), churn risk {{ classifications.churn_risk.label }}, sentiment {{ classifications.sentiment.label }}."
}
