# No provider, so tests can evaluate the split offline and compare it with
# callpipe.spanner_db.read_ddl_statements.
terraform {
  required_version = ">= 1.5"
}
