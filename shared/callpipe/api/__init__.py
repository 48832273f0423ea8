"""The tenant API: JWT auth, tenant-scoped Spanner reads, analytics and recording URLs.

The HTTP function (functions/api/main.py) only adapts Flask to :func:`callpipe.api.app`.
"""
