"""The raw webhook archive in Cloud Storage.

Every authentic webhook is written once, byte for byte, under its tenant's prefix so it can
be audited or replayed: ``tenants/<tenant>/webhooks/<call>/<date>-<event>-<hash>.json``.
Writes use ``if_generation_match=0``: a second write of the same event is a no-op.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from callpipe.ids import check_resource_id, check_tenant_id
from callpipe.messages import CallReceived


def archive_object_name(message: CallReceived) -> str:
    tenant = check_tenant_id(message.tenant_id)
    call = check_resource_id(message.call_id)
    digest = hashlib.sha256(message.webhook.body).hexdigest()[:16]
    day = message.webhook.received_at.strftime("%Y%m%d")
    return f"tenants/{tenant}/webhooks/{call}/{day}-{message.event_type.value}-{digest}.json"


class WebhookArchive:
    def __init__(self, bucket_name: str, client: Any | None = None) -> None:
        from google.cloud import storage  # type: ignore[attr-defined]

        self._client = client or storage.Client()
        self._bucket_name = bucket_name
        self._bucket = self._client.bucket(bucket_name)

    def store(self, message: CallReceived) -> str:
        """Write the raw webhook; return its gs:// URI (also when it was already there)."""
        from google.api_core import exceptions

        name = archive_object_name(message)
        blob = self._bucket.blob(name)
        blob.metadata = {
            "tenant_id": message.tenant_id,
            "call_id": message.call_id,
            "event_type": message.event_type.value,
            "correlation_id": message.correlation_id,
        }
        document = {
            "tenant_id": message.tenant_id,
            "office_id": message.office_id,
            "company_id": message.company_id,
            "call_id": message.call_id,
            "event_type": message.event_type.value,
            "event_key": message.event_key,
            "correlation_id": message.correlation_id,
            "signing_token_id": message.signing_token_id,
            "webhook": message.webhook.model_dump(mode="json"),
        }
        try:
            blob.upload_from_string(
                json.dumps(document, indent=1),
                content_type="application/json",
                if_generation_match=0,
            )
        except exceptions.PreconditionFailed:
            pass  # already archived by an earlier delivery of the same event
        return f"gs://{self._bucket_name}/{name}"

    def load(self, uri: str) -> dict[str, Any]:
        prefix = f"gs://{self._bucket_name}/"
        if not uri.startswith(prefix):
            raise ValueError(f"{uri} is not in the archive bucket {self._bucket_name}")
        data = self._bucket.blob(uri[len(prefix) :]).download_as_bytes()
        parsed: dict[str, Any] = json.loads(data)
        return parsed
