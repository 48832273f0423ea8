variable "schema_sql" {
  description = "The text of schemas/spanner/schema.sql."
  type        = string
}

# Same rule as callpipe.spanner_db.read_ddl_statements: drop whole-line "--" comments,
# split on ";", trim, drop empty statements.
locals {
  without_comments = join("\n", [
    for line in split("\n", var.schema_sql) : line if !startswith(trimspace(line), "--")
  ])
  statements = [
    for statement in split(";", local.without_comments) : trimspace(statement)
    if trimspace(statement) != ""
  ]
}

locals {
  # The row deletion intervals of the tables that hold calls (RETENTION_DAYS): the root
  # module refuses a retention_days the schema does not say. Other tables' policies, if
  # any, are theirs.
  retention_days = distinct(flatten([
    for statement in local.statements : [
      for found in regexall("(?is)ROW\\s+DELETION\\s+POLICY\\s*\\(\\s*OLDER_THAN\\s*\\(\\s*\\w+\\s*,\\s*INTERVAL\\s+([0-9]+)\\s+DAY", statement) :
      tonumber(found[0])
    ] if length(regexall("(?i)^CREATE\\s+TABLE\\s+(Calls|WebhookEvents)\\s*\\(", statement)) > 0
  ]))
}

output "retention_days" {
  description = "The distinct intervals, in days, of the row deletion policies of Calls and WebhookEvents."
  value       = local.retention_days
}

output "statements" {
  description = "The DDL statements in file order."
  value       = local.statements
}
