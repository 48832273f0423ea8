# --- Runtime identities: one service account per step ----------------------------------

resource "google_service_account" "step" {
  for_each = module.topology.steps

  account_id   = "${var.service_account_prefix}${each.key}"
  display_name = "callpipe ${each.key}"
  description  = "Runtime identity of the callpipe ${each.key} function."

  lifecycle {
    precondition {
      condition     = length("${var.service_account_prefix}${each.key}") <= 30
      error_message = "Service account id ${var.service_account_prefix}${each.key} is over 30 characters: shorten service_account_prefix."
    }
  }
}

locals {
  spanner_grants = {
    for name, access in local.step_access : name => access.spanner_role
    if access.spanner_role != null && contains(keys(module.topology.steps), name)
  }

  bucket_grants = merge([
    for name, access in local.step_access : {
      for bucket in access.buckets : "${name}/${bucket}" => { step = name, bucket = bucket }
    } if contains(keys(module.topology.steps), name)
  ]...)

  secret_grants = {
    for name, access in local.step_access : name => access.secret_prefixes
    if length(access.secret_prefixes) > 0 && contains(keys(module.topology.steps), name)
  }

  project_role_grants = merge([
    for name, access in local.step_access : {
      for role in access.project_roles : "${name}/${role}" => { step = name, role = role }
    } if contains(keys(module.topology.steps), name)
  ]...)
}

resource "google_project_iam_member" "step_project_role" {
  for_each = local.project_role_grants

  project = var.project_id
  role    = each.value.role
  member  = google_service_account.step[each.value.step].member
}

resource "google_pubsub_topic_iam_member" "step_publisher" {
  for_each = module.topology.publish_grants

  topic  = google_pubsub_topic.topic[each.value.topic].name
  role   = "roles/pubsub.publisher"
  member = google_service_account.step[each.value.step].member
}

# Publishers check that their topic exists (intake's /health does); publisher alone does
# not include pubsub.topics.get.
resource "google_pubsub_topic_iam_member" "step_viewer" {
  for_each = module.topology.publish_grants

  topic  = google_pubsub_topic.topic[each.value.topic].name
  role   = "roles/pubsub.viewer"
  member = google_service_account.step[each.value.step].member
}

resource "google_spanner_database_iam_member" "step" {
  for_each = local.spanner_grants

  instance = google_spanner_instance.main.name
  database = google_spanner_database.main.name
  role     = each.value
  member   = google_service_account.step[each.key].member
}

resource "google_storage_bucket_iam_member" "step" {
  for_each = local.bucket_grants

  bucket = google_storage_bucket.data[each.value.bucket].name
  role   = "roles/storage.objectAdmin"
  member = google_service_account.step[each.value.step].member
}

# Secret ids embed the company or tenant and are created at onboarding, so access is granted
# on the project with a condition on the id prefix instead of secret by secret.
resource "google_project_iam_member" "step_secret_accessor" {
  for_each = local.secret_grants

  project = var.project_id
  role    = "roles/secretmanager.secretAccessor"
  member  = google_service_account.step[each.key].member

  condition {
    title       = "callpipe-${each.key}-secrets"
    description = "Only the secrets the ${each.key} step reads."
    expression = join(" || ", [
      for prefix in each.value :
      "resource.name.startsWith(\"projects/${data.google_project.this.number}/secrets/${prefix}\")"
    ])
  }
}

# --- Push delivery: Pub/Sub calls the private functions with an OIDC token ---------------

resource "google_service_account" "push_invoker" {
  account_id   = "callpipe-push-invoker"
  display_name = "callpipe Pub/Sub push invoker"
  description  = "Identity in the OIDC token Pub/Sub push subscriptions send to the step functions."
}

resource "google_cloud_run_service_iam_member" "push_invoker" {
  for_each = module.topology.pubsub_steps

  location = google_cloudfunctions2_function.step[each.key].location
  service  = google_cloudfunctions2_function.step[each.key].name
  role     = "roles/run.invoker"
  member   = google_service_account.push_invoker.member
}

# Projects created before April 2021 need this for Pub/Sub to mint the push OIDC tokens.
resource "google_service_account_iam_member" "pubsub_token_creator" {
  service_account_id = google_service_account.push_invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# HTTP steps are called from outside Google Cloud (CallRail posts webhooks; tenants call the
# API with their own JWT), so they are public and authenticate requests themselves.
resource "google_cloud_run_service_iam_member" "public" {
  for_each = module.topology.http_steps

  location = google_cloudfunctions2_function.step[each.key].location
  service  = google_cloudfunctions2_function.step[each.key].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# --- Build identity: what Cloud Build uses to turn a source zip into an image ----------

resource "google_service_account" "builder" {
  account_id   = "callpipe-function-builder"
  display_name = "callpipe function builder"
  description  = "Builds the callpipe function images from their source zips."
}

resource "google_project_iam_member" "builder" {
  for_each = toset(["roles/logging.logWriter"])

  project = var.project_id
  role    = each.key
  member  = google_service_account.builder.member
}

resource "google_artifact_registry_repository_iam_member" "builder" {
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.builder.member
}

# The build reads our source object and the copy Cloud Functions stages in its own
# gcf-v2-sources-* bucket.
resource "google_project_iam_member" "builder_sources" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = google_service_account.builder.member

  condition {
    title       = "callpipe-function-sources"
    description = "Only the function source buckets."
    expression = join(" || ", [
      "resource.name == \"projects/_/buckets/${google_storage_bucket.sources.name}\"",
      "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.sources.name}/\")",
      "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-${data.google_project.this.number}-\")",
    ])
  }
}

# The API signs recording URLs (GCS V4) through IAM signBlob with its own identity, which
# needs the token-creator role on itself.
resource "google_service_account_iam_member" "api_signs_urls" {
  count = contains(keys(module.topology.steps), "api") ? 1 : 0

  service_account_id = google_service_account.step["api"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = google_service_account.step["api"].member
}
