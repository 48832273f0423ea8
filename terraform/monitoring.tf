# --- Alerts: every failure visible without anyone watching the logs ---------------------
#
# Pub/Sub's own metrics say when a step gave up on a message (a dead-letter hold is not
# empty) or falls behind (a step subscription's oldest message is old). Log-based metrics
# count what only the logs tell: intake or Cloud Run refusing webhooks (CallRail never
# sends one again), signatures failing for an onboarded company (a token rotated in
# CallRail and not here), and the reconcile step queuing calls whose webhook never came.
# The filters on the functions' lines match what callpipe.logs writes, and the one on
# Cloud Run's request log matches its documented fields (tests/unit/test_monitoring.py).

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

locals {
  # What only the log lines tell, each counted by a log-based metric (by tenant, for charts)
  # and, where someone must act, alerted on directly by a log-match condition (no wait for
  # a new metric to exist, one notification per burst).
  log_signals = {
    intake_failed = {
      description = "Webhooks intake answered with a 5xx it logged itself (the line says why)."
      filter      = "${local.function_log} AND jsonPayload.step=\"intake\" AND jsonPayload.status>=500"
      alert       = null
    }
    intake_unreachable = {
      description = "Requests to intake answered 429 or 5xx, by intake or by Cloud Run (no instance free, a crash, a timeout): CallRail does not send those webhooks again."
      filter      = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"intake\" AND logName:\"run.googleapis.com%2Frequests\" AND (httpRequest.status=429 OR httpRequest.status>=500)"
      alert = {
        name    = "callpipe: webhooks refused by intake"
        content = "Intake or Cloud Run answered CallRail with a 429 or 5xx: CallRail does not send those webhooks again. Intake's own lines (`jsonPayload.step=\"intake\"`, `outcome`) say why when it answered; otherwise the instances were all busy (`max_instances`) or failed. The hourly reconciliation queues the calls once the cause is gone; `callpipe reconcile TENANT` does it at once."
      }
    }
    step_gave_up = {
      description = "Messages a Pub/Sub step dead-lettered, failed on their last delivery (Pub/Sub then dead-letters them) or could not dead-letter, and deliveries it could not decode."
      filter      = "${local.function_log} AND jsonPayload.logger=\"callpipe.steps\" AND (jsonPayload.outcome=\"dead_lettered\" OR jsonPayload.outcome=\"retries_exhausted\" OR jsonPayload.outcome=\"dead_letter_failed\" OR jsonPayload.outcome=\"bad_envelope\")"
      alert = {
        name    = "callpipe: a step gave up on a message"
        content = "A step dead-lettered a message (permanent failure), failed its last delivery, could not dead-letter a message (it is retried), or dropped a delivery it could not decode. The log line names the step, the reason (`reason`, `error`) and the call (`tenant_id`, `call_id`). See the call with `callpipe calls show CALL_ID` and the message with `callpipe dlq list <topic>`; once the cause is fixed, `callpipe dlq replay <topic>`. Unlike the dead-letter hold alert, this one notifies for every new burst while older dead letters wait."
      }
    }
    invalid_signature = {
      description = "Webhooks of an onboarded company whose signature matched none of its active tokens."
      filter      = "${local.function_log} AND jsonPayload.step=\"intake\" AND jsonPayload.outcome=\"invalid_signature\" AND jsonPayload.tenant_id:*"
      alert = {
        name    = "callpipe: signatures fail for an onboarded company"
        content = "Webhooks of an onboarded company match none of its active signing tokens: most likely the token was rotated in CallRail. Add the new one with `callpipe tenants add-token --company-id COM…`; the hourly reconciliation queues the calls refused meanwhile."
      }
    }
    results_missing = {
      description = "Calls that went on without their transcript or analysis because Speech-to-Text or Vertex AI refused or stayed down past the retries."
      filter      = "${local.function_log} AND jsonPayload.logger=\"callpipe.steps\" AND (jsonPayload.outcome=\"analysis_failed\" OR jsonPayload.reason=\"transcription_failed\")"
      alert = {
        name    = "callpipe: calls stored without transcript or analysis"
        content = "Speech-to-Text or Vertex AI refused a call (403: the API disabled or a role missing; 400: the request) or stayed down past the retries, and the call was stored without its transcript or analysis. The line says why (`detail`, `jsonPayload.step`). Once the cause is fixed, `callpipe calls rerun --failed` runs those calls again from the recording."
      }
    }
    webhooks_lost = {
      description = "Reconciliation runs that queued calls whose webhook never came."
      filter      = "${local.function_log} AND jsonPayload.logger=\"callpipe.reconciling\" AND severity=\"WARNING\" AND jsonPayload.queued>0"
      alert = {
        name    = "callpipe: calls arrived without their webhook"
        content = "The reconciliation found calls CallRail has whose webhook never reached the pipeline, and queued them (the log line names them; `left_for_next_run` counts those over RECONCILE_MAX_CALLS_PER_RUN). Follow one with `callpipe calls show CALL_ID`. Check the company's webhook in CallRail: CallRail disables a webhook that keeps failing."
      }
    }
  }
}

resource "google_logging_metric" "log_counter" {
  for_each = local.log_signals

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

locals {
  # What Pub/Sub's own metrics tell: a step gave up (a DLQ hold is not empty) or falls
  # behind (a step subscription's oldest message is old).
  pubsub_signals = {
    dead_letters = {
      name      = "callpipe: a step dead-lettered messages"
      content   = "A step gave up on a message; it waits in `<topic>.dlq.hold` with its reason (`dlq_reason`, `dlq_error`). List them with `callpipe dlq list <topic>`, fix the cause, then `callpipe dlq replay <topic>`. The incident closes when the hold is empty."
      condition = "a dead-letter hold has undelivered messages"
      metric    = "num_undelivered_messages"
      watched   = local.dead_letter_hold_ids
      threshold = 0
      duration  = "0s"
      period    = "300s"
    }
    backlog = {
      name      = "callpipe: a step is falling behind"
      content   = "A step's subscription holds a message older than ${var.alert_backlog_minutes} minutes: the step fails and retries it, or cannot keep up. Its function's logs (`jsonPayload.step`) say why; `callpipe status` shows the calls stuck at that stage."
      condition = "oldest unacknowledged message older than ${var.alert_backlog_minutes} minutes"
      metric    = "oldest_unacked_message_age"
      watched   = local.step_subscription_ids
      threshold = var.alert_backlog_minutes * 60
      duration  = "300s"
      period    = "60s"
    }
  }
}

resource "google_monitoring_alert_policy" "pubsub" {
  for_each = var.alerts_enabled ? local.pubsub_signals : {}

  display_name          = each.value.name
  combiner              = "OR"
  notification_channels = local.alert_channels

  documentation {
    mime_type = "text/markdown"
    content   = each.value.content
  }

  conditions {
    display_name = each.value.condition
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/${each.value.metric}\" AND resource.label.subscription_id = one_of(${each.value.watched})"
      comparison      = "COMPARISON_GT"
      threshold_value = each.value.threshold
      duration        = each.value.duration
      aggregations {
        alignment_period   = each.value.period
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
}

resource "google_monitoring_alert_policy" "log_match" {
  for_each = var.alerts_enabled ? { for name, signal in local.log_signals : name => signal.alert if signal.alert != null } : {}

  display_name          = each.value.name
  combiner              = "OR"
  notification_channels = local.alert_channels

  documentation {
    mime_type = "text/markdown"
    content   = each.value.content
  }

  conditions {
    display_name = "a log entry matches ${each.key}"
    condition_matched_log {
      filter = local.log_signals[each.key].filter
      label_extractors = {
        tenant_id = "EXTRACT(jsonPayload.tenant_id)"
      }
    }
  }

  # A log-match condition notifies at most once per period while entries keep matching;
  # the incident closes by itself, so the next burst notifies again.
  alert_strategy {
    notification_rate_limit {
      period = "300s"
    }
    auto_close = "1800s"
  }
}

# A warning on every plan while the alerts notify no one.
check "alerts_reach_someone" {
  assert {
    condition     = !var.alerts_enabled || length(var.alert_emails) > 0
    error_message = "The alert policies notify no one: set alert_emails (Cloud Build: the _ALERT_EMAILS substitution). Until then incidents only show in Cloud Monitoring."
  }
}
