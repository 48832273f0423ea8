# Derives topics, subscriptions and per-step facts from schemas/pipeline.yaml with the same
# naming conventions as shared/callpipe/topology.py; tests/unit/test_terraform.py evaluates
# this module and compares the result with Topology.all_topics() and .subscriptions().

locals {
  defaults = var.topology.defaults

  steps = {
    for name, step in var.topology.steps : name => {
      source        = step.source
      entry_point   = step.entry_point
      trigger_type  = step.trigger.type
      asgi          = try(step.asgi, null) == null ? false : step.asgi
      concurrency   = try(step.concurrency, null)
      trigger_topic = try(step.trigger.topic, null)
      publishes     = try(step.publishes, null) == null ? [] : step.publishes
      memory        = try(step.memory, null) == null ? "512Mi" : step.memory
      max_instances = try(step.max_instances, null) == null ? 10 : step.max_instances
      env           = try(step.env, null) == null ? {} : step.env
      # A step's retry block replaces the default one as a whole, as in topology.py.
      retry = try(step.retry, null) == null ? local.defaults.retry : step.retry
      max_delivery_attempts = (
        try(step.max_delivery_attempts, null) == null
        ? local.defaults.max_delivery_attempts
        : step.max_delivery_attempts
      )
      dead_letter_topic = step.trigger.type == "pubsub" ? "${step.trigger.topic}.dlq" : null
      # Long work (transcribing a 20-minute call) needs a longer answer window.
      ack_deadline_seconds = (
        try(step.ack_deadline_seconds, null) == null
        ? local.defaults.ack_deadline_seconds
        : step.ack_deadline_seconds
      )
    }
  }

  pubsub_steps = { for name, step in local.steps : name => step if step.trigger_type == "pubsub" }
  http_steps   = { for name, step in local.steps : name => step if step.trigger_type == "http" }

  topics = merge(
    {
      for name, topic in var.topology.topics : name => {
        description    = topic.description
        dead_letter_of = null
      }
    },
    {
      for name, step in local.pubsub_steps : step.dead_letter_topic => {
        description    = "Dead letters of ${step.trigger_topic} (step ${name}); replay with `callpipe dlq replay ${step.trigger_topic}`."
        dead_letter_of = step.trigger_topic
      }
    },
  )

  step_subscriptions = {
    for name, step in local.pubsub_steps : "${step.trigger_topic}.${name}" => {
      topic                     = step.trigger_topic
      step                      = name
      ack_deadline_seconds      = step.ack_deadline_seconds
      message_retention_seconds = local.defaults.message_retention_seconds
      retry                     = step.retry
      dead_letter_topic         = step.dead_letter_topic
      max_delivery_attempts     = step.max_delivery_attempts
    }
  }

  # Pull subscriptions that only keep messages: one on every DLQ (Pub/Sub drops what is
  # published to a topic without subscriptions) and the topology's explicit holds.
  # The DLQs' hold subscriptions, where whatever a step gave up on waits for an operator.
  dead_letter_hold_topics = {
    for name, step in local.pubsub_steps : "${step.dead_letter_topic}.hold" => step.dead_letter_topic
  }
  dead_letter_holds = sort(keys(local.dead_letter_hold_topics))

  hold_topics = merge(
    local.dead_letter_hold_topics,
    try({ for name, hold in var.topology.holds : name => hold.topic }, {}),
  )

  hold_subscriptions = {
    for name, topic in local.hold_topics : name => {
      topic                     = topic
      step                      = null
      ack_deadline_seconds      = local.defaults.ack_deadline_seconds
      message_retention_seconds = local.defaults.message_retention_seconds
      retry                     = null
      dead_letter_topic         = null
      max_delivery_attempts     = null
    }
  }

  # Messages published on a unix-cron schedule (Cloud Scheduler jobs).
  schedules = {
    for name, schedule in try(var.topology.schedules, null) == null ? {} : var.topology.schedules : name => {
      topic       = schedule.topic
      cron        = schedule.cron
      time_zone   = try(schedule.time_zone, null) == null ? "Etc/UTC" : schedule.time_zone
      description = schedule.description
      message     = try(schedule.message, null) == null ? {} : schedule.message
    }
  }

  # A step publishes to its declared topics and, for permanent failures, to its own DLQ.
  publish_grants = merge([
    for name, step in local.steps : {
      for topic in distinct(concat(step.publishes, compact([step.dead_letter_topic]))) :
      "${name}/${topic}" => { step = name, topic = topic }
    }
  ]...)
}
