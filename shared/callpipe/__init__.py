"""callpipe: multi-tenant ingestion pipeline for CallRail call webhooks on Google Cloud."""

__version__ = "0.1.0"
