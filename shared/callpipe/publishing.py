"""Publishing to Pub/Sub and waiting until it has the message.

A step acknowledges its input, and intake answers 2xx, only after Pub/Sub accepted the
output. Waiting per message is cheap because the batch latency is a couple of
milliseconds: concurrent requests share a batch instead of each paying a round trip.
"""

from __future__ import annotations

from typing import Any, Protocol


class PublishFailed(RuntimeError):
    """Pub/Sub did not accept the message in time (transient: answer 503 or redeliver)."""


class Publisher(Protocol):
    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str: ...


class PubSubPublisher:
    def __init__(
        self,
        project: str,
        batch_max_latency_seconds: float = 0.002,
        timeout_seconds: float = 10.0,
        client: Any | None = None,
    ) -> None:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]

        self._project = project
        self._timeout = timeout_seconds
        self._client = client or pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(
                max_messages=100,
                max_bytes=4 * 1024 * 1024,
                max_latency=batch_max_latency_seconds,
            ),
        )

    def topic_path(self, topic: str) -> str:
        return f"projects/{self._project}/topics/{topic}"

    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        from google.api_core import exceptions

        try:
            future = self._client.publish(self.topic_path(topic), data, **attributes)
            return str(future.result(timeout=self._timeout))
        except (exceptions.GoogleAPIError, TimeoutError, RuntimeError) as error:
            raise PublishFailed(
                f"Pub/Sub did not accept the message on {topic}: {error.__class__.__name__}"
            ) from error

    def topic_exists(self, topic: str) -> bool:
        from google.api_core import exceptions

        try:
            self._client.get_topic(request={"topic": self.topic_path(topic)}, timeout=3)
        except exceptions.NotFound:
            return False
        return True
