resource "google_pubsub_topic" "topic" {
  for_each = module.topology.topics

  name = each.key
  labels = {
    kind = each.value.dead_letter_of == null ? "pipeline" : "dead-letter"
  }
}

# One push subscription per Pub/Sub-triggered step, created here rather than by an Eventarc
# trigger: only a subscription of our own can carry the topology's retry policy and
# dead-letter policy. The topic path in the URL lets functions-framework give the CloudEvent
# it builds from the push body the right source, exactly as the local stack's emulator push.
resource "google_pubsub_subscription" "step" {
  for_each = module.topology.step_subscriptions

  name                       = each.key
  topic                      = google_pubsub_topic.topic[each.value.topic].id
  ack_deadline_seconds       = each.value.ack_deadline_seconds
  message_retention_duration = "${each.value.message_retention_seconds}s"

  retry_policy {
    minimum_backoff = "${each.value.retry.minimum_backoff_seconds}s"
    maximum_backoff = "${each.value.retry.maximum_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.topic[each.value.dead_letter_topic].id
    max_delivery_attempts = each.value.max_delivery_attempts
  }

  push_config {
    push_endpoint = "${google_cloudfunctions2_function.step[each.value.step].service_config[0].uri}/projects/${var.project_id}/topics/${each.value.topic}"

    oidc_token {
      service_account_email = google_service_account.push_invoker.email
      # Cloud Run checks the audience against the service URL, not the full push URL.
      audience = google_cloudfunctions2_function.step[each.value.step].service_config[0].uri
    }
  }

  # Without this a subscription idle for 31 days is deleted, and the step's messages with it.
  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloud_run_service_iam_member.push_invoker,
    google_service_account_iam_member.pubsub_token_creator,
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}

# Pull subscriptions that only keep messages for operators: "<topic>.dlq.hold" on every DLQ
# and the topology's holds (see `callpipe dlq` and `callpipe quarantine`).
resource "google_pubsub_subscription" "hold" {
  for_each = module.topology.hold_subscriptions

  name                       = each.key
  topic                      = google_pubsub_topic.topic[each.value.topic].id
  ack_deadline_seconds       = each.value.ack_deadline_seconds
  message_retention_duration = "${each.value.message_retention_seconds}s"

  expiration_policy {
    ttl = ""
  }
}

# Dead-lettering is done by the Pub/Sub service agent: it must publish to each DLQ and
# acknowledge (subscriber) on the source subscription, or messages are never forwarded.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = { for name, topic in module.topology.topics : name => topic if topic.dead_letter_of != null }

  topic  = google_pubsub_topic.topic[each.key].name
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = module.topology.step_subscriptions

  subscription = google_pubsub_subscription.step[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
