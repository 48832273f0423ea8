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

output "statements" {
  description = "The DDL statements in file order."
  value       = local.statements
}
