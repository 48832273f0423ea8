"""Builds the tenant API from settings, once per process."""

from __future__ import annotations

import os
from typing import Any

from callpipe.api.analytics import TenantAnalytics
from callpipe.api.app import CachedKey, TenantApi
from callpipe.api.auth import TokenVerifier, load_signing_key
from callpipe.api.queries import CallQueries
from callpipe.api.signed_urls import EmulatorUrls, GcsV4Signer, RecordingUrls, UrlSigner
from callpipe.config import Settings
from callpipe.spanner_db import open_database
from callpipe.wiring import build_secret_store


def spanner_health(database: Any) -> dict[str, Any]:
    try:
        with database.snapshot() as snapshot:
            list(snapshot.execute_sql("SELECT 1", timeout=3))
    except Exception as failure:  # noqa: BLE001 - health reports any failure as down
        return {
            "status": "degraded",
            "checks": {"spanner": {"ok": False, "error": failure.__class__.__name__}},
        }
    return {"status": "ok", "checks": {"spanner": {"ok": True}}}


def build_signer(settings: Settings) -> UrlSigner:
    # The storage client itself honours STORAGE_EMULATOR_HOST; the URL must too, or a local
    # player would be sent to storage.googleapis.com. Never in production.
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator and not settings.is_production:
        return EmulatorUrls(emulator)
    return GcsV4Signer()


def build_api(settings: Settings) -> TenantApi:
    database = open_database(settings)
    store = build_secret_store(settings)
    return TenantApi(
        verifier=TokenVerifier(CachedKey(lambda: load_signing_key(store))),
        queries=CallQueries(database),
        analytics=TenantAnalytics(database),
        recordings=RecordingUrls(build_signer(settings), settings.audio_storage_bucket),
        health=lambda: spanner_health(database),
    )
