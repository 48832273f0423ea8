resource "google_spanner_instance" "main" {
  name             = var.spanner_instance
  config           = coalesce(var.spanner_config, "regional-${var.region}")
  display_name     = "callpipe ${var.environment}"
  processing_units = var.spanner_processing_units
  force_destroy    = false
}

# The DDL is given here only to create a new database with the whole schema in one go.
# Later schema changes are applied by `callpipe deploy ddl` (cloudbuild.yaml, before this
# apply): Terraform's ddl list is append-only by position, so editing or reordering
# schema.sql would otherwise plan a destroy-and-recreate of the database.
resource "google_spanner_database" "main" {
  instance                 = google_spanner_instance.main.name
  name                     = var.spanner_database
  database_dialect         = "GOOGLE_STANDARD_SQL"
  version_retention_period = var.spanner_version_retention_period
  ddl                      = module.spanner_ddl.statements
  deletion_protection      = true
  enable_drop_protection   = true

  lifecycle {
    ignore_changes = [ddl]

    # Calls expire in Spanner after the interval schema.sql gives; recordings and archives
    # after retention_days. The two must say the same.
    precondition {
      condition = (
        length(module.spanner_ddl.retention_days) == 1
        && try(module.spanner_ddl.retention_days[0] == var.retention_days, false)
      )
      error_message = "retention_days must equal the ROW DELETION POLICY interval of Calls and WebhookEvents in schemas/spanner/schema.sql. Changing that interval on a deployed database is a reviewed, manual DDL change (ALTER TABLE ... REPLACE ROW DELETION POLICY), then schema.sql and retention_days."
    }
  }
}
