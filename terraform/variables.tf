variable "project_id" {
  description = "The Google Cloud project the pipeline is deployed into."
  type        = string
}

variable "region" {
  description = "Region of the functions, the Spanner instance (regional-<region>) and the buckets."
  type        = string
  default     = "us-central1"
}

variable "environment" {
  description = "Name of this deployment (production, staging, ...): a label on every resource. The functions always run with ENVIRONMENT=production."
  type        = string
  default     = "production"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,62}$", var.environment))
    error_message = "environment must be a valid label value: lowercase letters, digits and hyphens."
  }
}

variable "labels" {
  description = "Extra labels for every resource that takes labels."
  type        = map(string)
  default     = {}
}

# --- Spanner ---------------------------------------------------------------------------

variable "spanner_instance" {
  description = "Spanner instance id (SPANNER_INSTANCE of the functions)."
  type        = string
  default     = "callpipe"
}

variable "spanner_database" {
  description = "Spanner database id (SPANNER_DATABASE of the functions)."
  type        = string
  default     = "callpipe"
}

variable "spanner_config" {
  description = "Spanner instance configuration; null means regional-<region>."
  type        = string
  default     = null
}

variable "spanner_processing_units" {
  description = "Spanner compute capacity in processing units (100 is the smallest; 1000 = 1 node)."
  type        = number
  default     = 100

  validation {
    condition     = var.spanner_processing_units >= 100 && (var.spanner_processing_units < 1000 ? var.spanner_processing_units % 100 == 0 : var.spanner_processing_units % 1000 == 0)
    error_message = "Use multiples of 100 below 1000 and multiples of 1000 from there on."
  }
}

variable "spanner_version_retention_period" {
  description = "How far back point-in-time recovery can read (1h to 7d)."
  type        = string
  default     = "7d"
}

# --- Cloud Storage ---------------------------------------------------------------------

variable "audio_storage_bucket" {
  description = "Name of the recordings bucket (AUDIO_STORAGE_BUCKET); null means <project_id>-callpipe-recordings."
  type        = string
  default     = null
}

variable "webhook_archive_bucket" {
  description = "Name of the raw webhook archive bucket (WEBHOOK_ARCHIVE_BUCKET); null means <project_id>-callpipe-webhooks."
  type        = string
  default     = null
}

variable "bucket_location" {
  description = "Location of the data buckets; null means the region."
  type        = string
  default     = null
}

variable "retention_days" {
  description = "Days a recording or archived webhook is kept before the bucket deletes it (RETENTION_DAYS; 2555 is about 7 years)."
  type        = number
  default     = 2555

  validation {
    condition     = var.retention_days >= 1
    error_message = "retention_days must be at least 1."
  }
}

variable "coldline_after_days" {
  description = "Age in days at which objects move from Standard to Coldline."
  type        = number
  default     = 90
}

variable "archive_after_days" {
  description = "Age in days at which objects move to Archive storage."
  type        = number
  default     = 365
}

variable "recordings_notification_topic" {
  description = "Topic that receives the recordings bucket's OBJECT_FINALIZE notifications, created only when the topology declares it."
  type        = string
  default     = "recordings.stored"
}

# --- Functions -------------------------------------------------------------------------

variable "build_dir" {
  description = "Directory holding functions/<step>/ as written by `callpipe deploy bundle`; null means ../build next to this module."
  type        = string
  default     = null
}

variable "python_runtime" {
  description = "Cloud Functions runtime of every step."
  type        = string
  default     = "python311"
}

variable "function_cpu" {
  description = "vCPUs per function instance (a string, as Cloud Run takes it). Concurrency above 1 needs at least 1."
  type        = string
  default     = "1"
}

variable "max_request_concurrency" {
  description = "Requests one instance serves at once, for steps without a concurrency in the topology; also the gunicorn THREADS of functions-framework for WSGI steps (an ASGI step serves them all on its event loop)."
  type        = number
  default     = 8
}

variable "http_timeout_seconds" {
  description = "Request timeout of the HTTP-triggered steps. Pub/Sub steps use the topology's ack deadline."
  type        = number
  default     = 60
}

variable "min_instances" {
  description = "Minimum instances per step; intake keeps one warm because CallRail never retries a webhook that timed out."
  type        = map(number)
  default     = { intake = 1 }
}

variable "internal_ingress" {
  description = "Ingress of the Pub/Sub-triggered functions. ALLOW_INTERNAL_ONLY still admits Pub/Sub push from the same project."
  type        = string
  default     = "ALLOW_INTERNAL_ONLY"

  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.internal_ingress)
    error_message = "internal_ingress must be ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
}

variable "service_account_prefix" {
  description = "Prefix of the per-step service account ids (<prefix><step>, at most 30 characters)."
  type        = string
  default     = "cp-"
}

variable "log_level" {
  description = "LOG_LEVEL of every function."
  type        = string
  default     = "INFO"
}

variable "environment_variables" {
  description = "Extra environment variables for every function (tuning, not secrets). The topology's env of a step wins over these."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for key in keys(var.environment_variables) :
      !contains(["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION", "FUNCTION_TARGET", "FUNCTION_SIGNATURE_TYPE"], key) && !startswith(key, "X_GOOGLE_")
    ])
    error_message = "Cloud Run sets PORT, K_* and FUNCTION_* itself and refuses X_GOOGLE_* keys."
  }
}

variable "step_environment_variables" {
  description = "Extra environment variables per step name; they win over everything else."
  type        = map(map(string))
  default     = {}
}

variable "paused_schedules" {
  description = "Names of schedules in schemas/pipeline.yaml whose Cloud Scheduler job is created paused (e.g. [\"reconcile\"] while a tenant's CallRail account is migrated)."
  type        = list(string)
  default     = []
}

variable "alerts_enabled" {
  description = "Create the alert policies of monitoring.tf (dead letters, backlog, intake failures, signature failures, lost webhooks)."
  type        = bool
  default     = true
}

variable "alert_emails" {
  description = "E-mail addresses notified by every alert policy (none: the incidents only show in Cloud Monitoring). Cloud Build passes _ALERT_EMAILS."
  type        = list(string)
  default     = []
}

variable "alert_backlog_minutes" {
  description = "Age of a step subscription's oldest unacknowledged message that raises the backlog alert."
  type        = number
  default     = 60

  validation {
    condition     = var.alert_backlog_minutes >= 5
    error_message = "alert_backlog_minutes must be at least 5."
  }
}

# --- Speech-to-Text and Vertex AI --------------------------------------------------------

variable "speech_location" {
  description = "Speech-to-Text location (SPEECH_LOCATION): us or eu, the multi-regions Chirp 3 runs in; null means eu for a europe-* region, else us."
  type        = string
  default     = null
}

variable "vertex_ai_location" {
  description = "Vertex AI region Gemini is called in (VERTEX_AI_LOCATION); null means the region. The model must be offered there."
  type        = string
  default     = null
}
