"""Envelopes apart from payloads: what arrives around a pipeline message.

A Pub/Sub push delivery reaches a ``@cloud_event`` function as a CloudEvent whose data is
``{"message": {"data": <base64>, "attributes": {...}, "messageId": ...}, "subscription": ...}``
(functions-framework converts the raw push of a subscription, the emulator's or Pub/Sub's,
into it; the push's ``deliveryAttempt`` is read from the request, see
:func:`push_delivery_attempt`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any


class EnvelopeError(ValueError):
    """The delivery is not a Pub/Sub message envelope (permanent)."""


@dataclass(frozen=True)
class PubSubMessage:
    data: bytes
    attributes: dict[str, str]
    message_id: str
    subscription: str | None
    delivery_attempt: int | None


def decode_pubsub_envelope(data: Any) -> PubSubMessage:
    if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
        raise EnvelopeError("the event data has no Pub/Sub 'message' object")
    message = data["message"]
    encoded = message.get("data", "")
    try:
        payload = base64.b64decode(encoded, validate=True) if encoded else b""
    except (binascii.Error, TypeError) as error:
        raise EnvelopeError(f"message data is not base64: {error}") from None
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise EnvelopeError("message attributes are not an object")
    return PubSubMessage(
        data=payload,
        attributes={str(k): str(v) for k, v in attributes.items()},
        message_id=str(message.get("messageId") or message.get("message_id") or ""),
        subscription=data.get("subscription"),
        delivery_attempt=_attempt(data.get("deliveryAttempt") or message.get("deliveryAttempt")),
    )


def push_delivery_attempt() -> int | None:
    """The delivery attempt of the Pub/Sub push being served, read from the HTTP request.

    functions-framework turns a raw push into a CloudEvent that keeps only the message, so
    the push's ``deliveryAttempt`` (sent when the subscription has a dead-letter policy)
    is lost from the event data. Outside a request, or without the field: None.
    """
    import flask

    if not flask.has_request_context():
        return None
    body = flask.request.get_json(silent=True)
    return _attempt(body.get("deliveryAttempt")) if isinstance(body, dict) else None


def _attempt(value: Any) -> int | None:
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None
