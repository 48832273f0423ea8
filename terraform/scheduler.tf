# The topology's schedules (schemas/pipeline.yaml, "schedules"): each is a Cloud Scheduler
# job publishing its message to its topic, the same message the local stack publishes at
# the same minutes.
resource "google_cloud_scheduler_job" "schedule" {
  for_each = module.topology.schedules

  name        = "callpipe-${each.key}"
  region      = var.region
  description = each.value.description
  schedule    = each.value.cron
  time_zone   = each.value.time_zone
  paused      = contains(var.paused_schedules, each.key)

  pubsub_target {
    topic_name = google_pubsub_topic.topic[each.value.topic].id
    data       = base64encode(jsonencode(each.value.message))
    attributes = { schedule = each.key }
  }
}

# Cloud Scheduler publishes as its service agent; granted on those topics only.
resource "google_pubsub_topic_iam_member" "scheduler_publisher" {
  for_each = toset([for schedule in module.topology.schedules : schedule.topic])

  topic  = google_pubsub_topic.topic[each.key].name
  role   = "roles/pubsub.publisher"
  member = local.scheduler_service_agent
}
