# The pipeline's topology is read from the same file the local stack provisions from; every
# topic, subscription and function below is derived from it (see modules/topology).
module "topology" {
  source   = "./modules/topology"
  topology = yamldecode(file("${path.module}/../schemas/pipeline.yaml"))
}

module "spanner_ddl" {
  source     = "./modules/spanner_ddl"
  schema_sql = file("${path.module}/../schemas/spanner/schema.sql")
}

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  labels = merge(var.labels, {
    app = "callpipe"
    env = var.environment
  })

  build_dir = coalesce(var.build_dir, "${path.module}/../build")

  buckets = {
    recordings = coalesce(var.audio_storage_bucket, "${var.project_id}-callpipe-recordings")
    webhooks   = coalesce(var.webhook_archive_bucket, "${var.project_id}-callpipe-webhooks")
  }

  pubsub_service_agent    = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  scheduler_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-cloudscheduler.iam.gserviceaccount.com"

  # What each step needs beyond the topics it publishes to (those come from the topology).
  # The topology schema has no place for it, so it lives here; a step missing from this map
  # fails the plan (precondition on its function) and tests/unit/test_terraform.py.
  #   spanner_role:    database role, or null for none
  #   buckets:         keys of local.buckets it reads and writes objects in
  #   secret_prefixes: Secret Manager secret ids it may read, by prefix (names are per
  #                    company/tenant and created at onboarding, so they cannot be listed here)
  step_access = {
    intake = {
      # Only reads the company directory; writes go through register-call.
      spanner_role    = "roles/spanner.databaseReader"
      buckets         = []
      secret_prefixes = ["callrail-webhook-token-"]
      project_roles   = []
    }
    api = {
      # Reads tenants' calls; signs recording URLs (objectViewer would do: the list of
      # bucket roles is shared, so it gets the same grant as the other readers).
      spanner_role    = "roles/spanner.databaseReader"
      buckets         = ["recordings"]
      secret_prefixes = ["api-jwt-signing-key", "api-operator-signing-key"]
      project_roles   = []
    }
    register-call = {
      spanner_role    = "roles/spanner.databaseUser"
      buckets         = ["webhooks"]
      secret_prefixes = []
      project_roles   = []
    }
    fetch-call = {
      # Writes the call's CallRail view and the shared rate-limit rows.
      spanner_role    = "roles/spanner.databaseUser"
      buckets         = []
      secret_prefixes = ["callrail-api-key-"]
      project_roles   = []
    }
    download-recording = {
      spanner_role    = "roles/spanner.databaseUser"
      buckets         = ["recordings"]
      secret_prefixes = ["callrail-api-key-"]
      project_roles   = []
    }
    transcribe = {
      # Reads the recording, writes transcript.json next to it, records progress.
      spanner_role    = "roles/spanner.databaseUser"
      buckets         = ["recordings"]
      secret_prefixes = []
      # Speech-to-Text v2 (Recognize and BatchRecognize from the bucket).
      project_roles = ["roles/speech.client"]
    }
    analyze = {
      spanner_role    = "roles/spanner.databaseUser"
      buckets         = []
      secret_prefixes = []
      # Gemini on Vertex AI.
      project_roles = ["roles/aiplatform.user"]
    }
    persist = {
      spanner_role    = "roles/spanner.databaseUser"
      buckets         = []
      secret_prefixes = []
      project_roles   = []
    }
    reconcile = {
      # Reads tenants and calls, writes the shared CallRail rate-limit rows; lists calls
      # with the tenant's API key.
      spanner_role    = "roles/spanner.databaseUser"
      buckets         = []
      secret_prefixes = ["callrail-api-key-"]
      project_roles   = []
    }
  }

  common_environment = {
    ENVIRONMENT           = "production"
    GOOGLE_CLOUD_PROJECT  = var.project_id
    GOOGLE_CLOUD_LOCATION = var.region
    # Where recordings and transcripts are processed: by default next to the data (an EU
    # region keeps them in the EU).
    SPEECH_LOCATION        = coalesce(var.speech_location, startswith(var.region, "europe-") ? "eu" : "us")
    VERTEX_AI_LOCATION     = coalesce(var.vertex_ai_location, var.region)
    SPANNER_INSTANCE       = google_spanner_instance.main.name
    SPANNER_DATABASE       = google_spanner_database.main.name
    AUDIO_STORAGE_BUCKET   = google_storage_bucket.data["recordings"].name
    WEBHOOK_ARCHIVE_BUCKET = google_storage_bucket.data["webhooks"].name
    RETENTION_DAYS         = tostring(var.retention_days)
    LOG_LEVEL              = var.log_level
    # functions-framework serves WSGI steps with gunicorn gthread: one thread per concurrent
    # request. ASGI steps (intake) ignore it: one event loop serves them all.
    THREADS = tostring(var.max_request_concurrency)
  }

  function_environment = {
    for name, step in module.topology.steps : name => merge(
      local.common_environment,
      var.environment_variables,
      step.env,
      # functions-framework reads it to serve the function as ASGI
      step.asgi ? { FUNCTION_USE_ASGI = "true" } : {},
      # the subscription's dead-letter policy: the step records its last attempt's failure
      step.trigger_type == "pubsub" ? { MAX_DELIVERY_ATTEMPTS = tostring(step.max_delivery_attempts) } : {},
      lookup(var.step_environment_variables, name, {}),
    )
  }
}
