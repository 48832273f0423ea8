"""Builds the tenant API from settings, once per process."""

from __future__ import annotations

from typing import Any

from callpipe.api.analytics import TenantAnalytics
from callpipe.api.app import CachedKey, TenantApi
from callpipe.api.auth import OPERATOR_KEY_SECRET, TokenVerifier, load_signing_key
from callpipe.api.queries import CallQueries
from callpipe.api.signed_urls import EmulatorUrls, GcsV4Signer, RecordingUrls, UrlSigner
from callpipe.config import Settings
from callpipe.spanner_db import open_database, spanner_check
from callpipe.wiring import build_secret_store


def spanner_health(database: Any) -> dict[str, Any]:
    check = spanner_check(database)
    return {"status": "ok" if check["ok"] else "degraded", "checks": {"spanner": check}}


def build_signer(settings: Settings) -> UrlSigner:
    # The storage client itself honours STORAGE_EMULATOR_HOST; the URL must too, or a local
    # player would be sent to storage.googleapis.com. Never in production.
    if settings.storage_emulator_host and not settings.is_production:
        return EmulatorUrls(settings.storage_emulator_host)
    return GcsV4Signer()


def build_api(settings: Settings) -> TenantApi:
    database = open_database(settings)
    store = build_secret_store(settings)
    key = CachedKey(lambda: load_signing_key(store))
    operator_key = CachedKey(lambda: load_signing_key(store, secret=OPERATOR_KEY_SECRET))
    return TenantApi(
        verifier=TokenVerifier(
            key,
            refresh_key=key.refresh,
            operator_key=operator_key,
            refresh_operator_key=operator_key.refresh,
        ),
        queries=CallQueries(database),
        analytics=TenantAnalytics(database),
        recordings=RecordingUrls(build_signer(settings), settings.audio_storage_bucket),
        health=lambda: spanner_health(database),
    )
