resource "google_storage_bucket" "sources" {
  name                        = "${var.project_id}-callpipe-function-sources"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  # Only build inputs live here; every object can be rebuilt from the repository.
  force_destroy = true
}

# The bundle directories are written by `callpipe deploy bundle` before the plan. The
# archive provider zips with fixed timestamps, and the mode is pinned here, so the hash only
# changes with the content: an unchanged step keeps its object name and is not redeployed.
data "archive_file" "step" {
  for_each = module.topology.steps

  type             = "zip"
  source_dir       = "${local.build_dir}/functions/${each.key}"
  output_path      = "${local.build_dir}/zips/${each.key}.zip"
  output_file_mode = "0644"
}

resource "google_storage_bucket_object" "step_source" {
  for_each = module.topology.steps

  name   = "${each.key}/${data.archive_file.step[each.key].output_md5}.zip"
  bucket = google_storage_bucket.sources.name
  source = data.archive_file.step[each.key].output_path
}

resource "google_artifact_registry_repository" "functions" {
  location      = var.region
  repository_id = "callpipe-functions"
  format        = "DOCKER"
  description   = "Images Cloud Build makes from the callpipe function sources."

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 5
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s"
    }
  }
}

resource "google_cloudfunctions2_function" "step" {
  for_each = module.topology.steps

  name        = each.key
  location    = var.region
  description = "callpipe step ${each.key} (${each.value.trigger_type}${each.value.trigger_topic == null ? "" : " ${each.value.trigger_topic}"})"

  build_config {
    runtime           = var.python_runtime
    entry_point       = each.value.entry_point
    service_account   = google_service_account.builder.id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.step_source[each.key].name
      }
    }
  }

  # No event_trigger: Pub/Sub steps are reached through the push subscriptions in pubsub.tf.
  service_config {
    available_memory                 = each.value.memory
    available_cpu                    = var.function_cpu
    max_instance_request_concurrency = coalesce(each.value.concurrency, var.max_request_concurrency)
    min_instance_count               = lookup(var.min_instances, each.key, 0)
    max_instance_count               = each.value.max_instances
    # A Pub/Sub step never works longer than Pub/Sub waits for its answer, so a message is
    # not redelivered to a second instance while the first is still on it.
    timeout_seconds                = each.value.trigger_type == "pubsub" ? each.value.ack_deadline_seconds : var.http_timeout_seconds
    ingress_settings               = each.value.trigger_type == "http" ? "ALLOW_ALL" : var.internal_ingress
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.step[each.key].email
    environment_variables          = local.function_environment[each.key]
  }

  lifecycle {
    precondition {
      condition     = contains(keys(local.step_access), each.key)
      error_message = "Step ${each.key} has no entry in local.step_access (terraform/main.tf): say which Spanner role, buckets and secrets it needs."
    }
  }

  depends_on = [
    google_project_iam_member.builder,
    google_project_iam_member.builder_sources,
    google_artifact_registry_repository_iam_member.builder,
    google_project_service.runtime,
  ]
}
