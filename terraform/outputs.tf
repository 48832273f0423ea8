output "intake_url" {
  description = "The URL to configure as the CallRail webhook (POST), or null without an intake step."
  value       = try("${google_cloudfunctions2_function.step["intake"].service_config[0].uri}/api/v1/callrail/webhook", null)
}

output "function_uris" {
  description = "Step name => the function's HTTPS URI."
  value       = { for name, fn in google_cloudfunctions2_function.step : name => fn.service_config[0].uri }
}

output "service_accounts" {
  description = "Step name => the email of its runtime service account."
  value       = { for name, sa in google_service_account.step : name => sa.email }
}

output "push_invoker_service_account" {
  description = "The identity Pub/Sub push subscriptions present to the functions."
  value       = google_service_account.push_invoker.email
}

output "topics" {
  description = "Every Pub/Sub topic, dead-letter topics included."
  value       = sort([for topic in google_pubsub_topic.topic : topic.name])
}

output "subscriptions" {
  description = "Every Pub/Sub subscription: the steps' push subscriptions and the hold ones."
  value = sort(concat(
    [for sub in google_pubsub_subscription.step : sub.name],
    [for sub in google_pubsub_subscription.hold : sub.name],
  ))
}

output "buckets" {
  description = "recordings and webhooks => bucket name."
  value       = { for key, bucket in google_storage_bucket.data : key => bucket.name }
}

output "spanner_database" {
  description = "The Spanner database's full resource name."
  value       = "projects/${var.project_id}/instances/${google_spanner_instance.main.name}/databases/${google_spanner_database.main.name}"
}

output "function_source_bucket" {
  description = "Bucket of the content-hashed source zips."
  value       = google_storage_bucket.sources.name
}
