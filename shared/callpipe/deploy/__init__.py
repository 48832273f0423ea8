"""Deployment tooling run by cloudbuild.yaml: function source bundles and schema migration."""
