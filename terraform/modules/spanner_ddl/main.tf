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
  # The intervals of the tables' row deletion policies (RETENTION_DAYS): the root module
  # refuses a retention_days the schema does not say.
  retention_days = distinct([
    for found in regexall("ROW DELETION POLICY \\(OLDER_THAN\\([A-Za-z_]+, INTERVAL ([0-9]+) DAY\\)\\)", local.without_comments) :
    tonumber(found[0])
  ])
}

output "retention_days" {
  description = "The distinct intervals, in days, of the row deletion policies in the schema."
  value       = local.retention_days
}

output "statements" {
  description = "The DDL statements in file order."
  value       = local.statements
}
