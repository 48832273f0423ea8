output "steps" {
  description = "Every step, normalised: trigger, publishes, memory, env, retry, dead_letter_topic."
  value       = local.steps
}

output "pubsub_steps" {
  description = "The steps triggered by a Pub/Sub topic (through a push subscription)."
  value       = local.pubsub_steps
}

output "http_steps" {
  description = "The steps triggered by HTTP."
  value       = local.http_steps
}

output "topics" {
  description = "Every topic, the <topic>.dlq ones included, with dead_letter_of set on those."
  value       = local.topics
}

output "step_subscriptions" {
  description = "The \"<topic>.<step>\" subscriptions with retry and dead-letter settings."
  value       = local.step_subscriptions
}

output "hold_subscriptions" {
  description = "The pull subscriptions that keep messages: \"<topic>.dlq.hold\" and the holds."
  value       = local.hold_subscriptions
}

output "subscriptions" {
  description = "step_subscriptions and hold_subscriptions together, keyed by name."
  value       = merge(local.step_subscriptions, local.hold_subscriptions)
}

output "publish_grants" {
  description = "\"<step>/<topic>\" => {step, topic}: the topics each step may publish to."
  value       = local.publish_grants
}

output "defaults" {
  description = "The topology's defaults: ack deadline, retention, retry, max delivery attempts."
  value       = local.defaults
}

output "schedules" {
  description = "name => {topic, cron, time_zone, description, message}: the scheduled messages."
  value       = local.schedules
}

output "dead_letter_holds" {
  description = "The \"<topic>.dlq.hold\" subscriptions, sorted: what the steps dead-lettered."
  value       = local.dead_letter_holds
}
