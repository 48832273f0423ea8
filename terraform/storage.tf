# Recordings and the raw webhook archive: written once (if_generation_match=0), read rarely
# after the first weeks, kept for the retention period, so age-based class transitions pay.
resource "google_storage_bucket" "data" {
  for_each = local.buckets

  name                        = each.value
  location                    = coalesce(var.bucket_location, var.region)
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  # Deleting the bucket would delete tenants' recordings; that must be a deliberate act.
  force_destroy = false

  dynamic "lifecycle_rule" {
    for_each = var.coldline_after_days < var.retention_days ? [var.coldline_after_days] : []
    content {
      condition {
        age                   = lifecycle_rule.value
        matches_storage_class = ["STANDARD"]
      }
      action {
        type          = "SetStorageClass"
        storage_class = "COLDLINE"
      }
    }
  }

  dynamic "lifecycle_rule" {
    for_each = var.archive_after_days < var.retention_days ? [var.archive_after_days] : []
    content {
      condition {
        age                   = lifecycle_rule.value
        matches_storage_class = ["STANDARD", "COLDLINE"]
      }
      action {
        type          = "SetStorageClass"
        storage_class = "ARCHIVE"
      }
    }
  }

  lifecycle_rule {
    condition {
      age = var.retention_days
    }
    action {
      type = "Delete"
    }
  }
}

# A new recording under tenants/ triggers transcription through Pub/Sub, once the topology
# has the topic (the same event fake-gcs-server publishes into the emulator locally).
locals {
  recordings_notification = contains(keys(module.topology.topics), var.recordings_notification_topic)
}

data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

resource "google_pubsub_topic_iam_member" "gcs_notification_publisher" {
  count = local.recordings_notification ? 1 : 0

  topic  = google_pubsub_topic.topic[var.recordings_notification_topic].name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_storage_notification" "recordings" {
  count = local.recordings_notification ? 1 : 0

  bucket             = google_storage_bucket.data["recordings"].name
  topic              = google_pubsub_topic.topic[var.recordings_notification_topic].id
  payload_format     = "JSON_API_V1"
  event_types        = ["OBJECT_FINALIZE"]
  object_name_prefix = "tenants/"

  depends_on = [google_pubsub_topic_iam_member.gcs_notification_publisher]
}
