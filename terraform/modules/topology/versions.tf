# No provider on purpose: this module is pure derivation, so tests can evaluate it with a
# bare `terraform init` and compare its result with callpipe.topology offline.
terraform {
  required_version = ">= 1.5"
}
