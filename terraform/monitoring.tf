# --- Alerts: every failure visible without anyone watching the logs ---------------------
#
# Pub/Sub's own metrics say when a step gave up on a message (a dead-letter hold is not
# empty) or falls behind (a step subscription's oldest message is old). Log-based metrics
# count what only the functions' JSON lines tell: intake answering 5xx (CallRail never
# sends that webhook again), signatures failing for an onboarded company (a token rotated
# in CallRail and not here), and the reconcile step queuing calls whose webhook never came.
# The log filters match the lines callpipe.logs writes (tests/unit/test_monitoring.py).

resource "google_monitoring_notification_channel" "email" {
  for_each = toset(var.alert_emails)

  display_name = "callpipe alerts (${each.key})"
  type         = "email"
  labels       = { email_address = each.key }
}

locals {
  alert_channels = [for channel in google_monitoring_notification_channel.email : channel.id]

  # one_of("a", "b", ...) arguments of the subscriptions a condition watches
  dead_letter_hold_ids  = join(", ", [for name in module.topology.dead_letter_holds : "\"${name}\""])
  step_subscription_ids = join(", ", [for name in sort(keys(module.topology.step_subscriptions)) : "\"${name}\""])
  function_log          = "resource.type=\"cloud_run_revision\" AND logName:\"run.googleapis.com%2Fstdout\""
}

resource "google_logging_metric" "log_counter" {
  for_each = {
    intake_failed = {
      description = "Webhooks intake answered with a 5xx: CallRail does not send them again (the hourly reconciliation queues their calls)."
      filter      = "${local.function_log} AND jsonPayload.step=\"intake\" AND jsonPayload.status>=500"
    }
    invalid_signature = {
      description = "Webhooks of an onboarded company whose signature matched none of its active tokens."
      filter      = "${local.function_log} AND jsonPayload.step=\"intake\" AND jsonPayload.outcome=\"invalid_signature\" AND jsonPayload.tenant_id:*"
    }
    webhooks_lost = {
      description = "Reconciliation runs that queued calls whose webhook never came."
      filter      = "${local.function_log} AND jsonPayload.logger=\"callpipe.reconciling\" AND severity=\"WARNING\" AND jsonPayload.queued>0"
    }
  }

  name        = "callpipe/${each.key}"
  description = each.value.description
  filter      = each.value.filter

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "tenant_id"
      value_type  = "STRING"
      description = "The tenant, when the line names one."
    }
  }
  label_extractors = {
    tenant_id = "EXTRACT(jsonPayload.tenant_id)"
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  count = var.alerts_enabled ? 1 : 0

  display_name          = "callpipe: a step dead-lettered messages"
  combiner              = "OR"
  notification_channels = local.alert_channels

  documentation {
    mime_type = "text/markdown"
    content   = "A step gave up on a message; it waits in `<topic>.dlq.hold` with its reason (`dlq_reason`, `dlq_error`). List them with `callpipe dlq list <topic>`, fix the cause, then `callpipe dlq replay <topic>`. The incident closes when the hold is empty."
  }

  conditions {
    display_name = "a dead-letter hold has undelivered messages"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.label.subscription_id = one_of(${local.dead_letter_hold_ids})"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
}

resource "google_monitoring_alert_policy" "backlog" {
  count = var.alerts_enabled ? 1 : 0

  display_name          = "callpipe: a step is falling behind"
  combiner              = "OR"
  notification_channels = local.alert_channels

  documentation {
    mime_type = "text/markdown"
    content   = "A step's subscription holds a message older than ${var.alert_backlog_minutes} minutes: the step fails and retries it, or cannot keep up. Its function's logs (`jsonPayload.step`) say why; `callpipe status` shows the calls stuck at that stage."
  }

  conditions {
    display_name = "oldest unacknowledged message older than ${var.alert_backlog_minutes} minutes"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.label.subscription_id = one_of(${local.step_subscription_ids})"
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_backlog_minutes * 60
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
}

resource "google_monitoring_alert_policy" "log_counter" {
  for_each = var.alerts_enabled ? {
    intake_failed = {
      name    = "callpipe: intake could not queue webhooks"
      content = "Intake answered 5xx (Pub/Sub or its directory unavailable): CallRail does not send those webhooks again. The hourly reconciliation queues their calls once the cause is gone; `callpipe reconcile TENANT` does it at once."
    }
    invalid_signature = {
      name    = "callpipe: signatures fail for an onboarded company"
      content = "Webhooks of an onboarded company match none of its active signing tokens: most likely the token was rotated in CallRail. Add the new one with `callpipe tenants add-token --company-id COM…`; the hourly reconciliation queues the calls refused meanwhile."
    }
    webhooks_lost = {
      name    = "callpipe: calls arrived without their webhook"
      content = "The reconciliation found calls CallRail has whose webhook never reached the pipeline, and queued them (the log line names them). Check the company's webhook in CallRail: CallRail disables a webhook that keeps failing."
    }
  } : {}

  display_name          = each.value.name
  combiner              = "OR"
  notification_channels = local.alert_channels

  documentation {
    mime_type = "text/markdown"
    content   = each.value.content
  }

  conditions {
    display_name = "log entries counted by ${google_logging_metric.log_counter[each.key].name}"
    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.log_counter[each.key].name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.tenant_id"]
      }
    }
  }
}
