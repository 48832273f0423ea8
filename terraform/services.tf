# The APIs the functions call at run time. The bootstrap (README, Deployment) enables what
# Terraform and Cloud Build need to run at all; these only the functions use, and without
# them the pipeline degrades without failing: Speech-to-Text and Vertex AI answer 403,
# which the steps take for a permanent refusal (calls are stored without transcript or
# analysis), and the API cannot sign recording links (IAM Credentials' signBlob).
locals {
  runtime_services = [
    "aiplatform.googleapis.com",
    "iamcredentials.googleapis.com",
    "speech.googleapis.com",
  ]
}

resource "google_project_service" "runtime" {
  for_each = toset(local.runtime_services)

  project = var.project_id
  service = each.key
  # Other workloads of the project may use them too.
  disable_on_destroy = false
}
