"""PubSubPublisher and AsyncPubSubPublisher against the Pub/Sub emulator: what the server
accepts and assigns. Batching, retries and failures the emulator cannot produce are in
tests/unit/test_publishing.py and tests/unit/test_publishing_async.py."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from callpipe.devstack.stack import LocalStack
from callpipe.publishing import PublishFailed, PubSubPublisher
from callpipe.publishing_async import AsyncPubSubPublisher
from tests.conftest import Tap

TOPIC = "calls.completed"  # only hold subscriptions consume it: nothing reacts to a test message

PublishOne = Callable[[str, bytes, dict[str, str]], str]


def async_publisher(stack: LocalStack, timeout_seconds: float = 10.0) -> AsyncPubSubPublisher:
    return AsyncPubSubPublisher(
        stack.config.project,
        timeout_seconds=timeout_seconds,
        emulator_host=stack.env()["PUBSUB_EMULATOR_HOST"],
    )


def marked(seen: Tap, marker: str, expect: int) -> list[Any]:
    """What the tap received from this test (the topic is shared with other tests)."""
    return [m for m in seen.drain(expect=expect) if m.attributes.get("test_marker") == marker]


def assert_each_got_its_own_message(seen: Tap, marker: str, ids: dict[int, str]) -> None:
    """Message i was published with data b"m<i>" and attribute i=<i>, and got ids[i]."""
    messages = marked(seen, marker, len(ids))
    assert sorted(m.data for m in messages) == sorted(b"m%d" % i for i in ids)
    assert {m.attributes["i"]: m.message_id for m in messages} == {
        str(i): message_id for i, message_id in ids.items()
    }


@pytest.fixture(params=["threads", "asyncio"])
def publish_one(request: pytest.FixtureRequest, stack: LocalStack) -> PublishOne:
    """One publish, and its message id, through either publisher."""
    if request.param == "threads":
        return PubSubPublisher(stack.config.project, timeout_seconds=5).publish
    publisher = async_publisher(stack, timeout_seconds=5)
    return lambda topic, data, attributes: asyncio.run(publisher.publish(topic, data, attributes))


def test_publish_returns_the_server_message_id_with_data_and_attributes(
    publish_one: PublishOne, tap: Callable[[str], Tap]
) -> None:
    seen = tap(TOPIC)
    marker = uuid.uuid4().hex
    message_id = publish_one(TOPIC, b'{"call":1}', {"tenant_id": "acme", "test_marker": marker})
    (message,) = marked(seen, marker, 1)
    assert message.message_id == message_id
    assert message.data == b'{"call":1}'
    assert dict(message.attributes) == {"tenant_id": "acme", "test_marker": marker}


def test_concurrent_publishes_each_get_their_own_message(
    stack: LocalStack, tap: Callable[[str], Tap]
) -> None:
    seen = tap(TOPIC)
    marker = uuid.uuid4().hex
    publisher = PubSubPublisher(stack.config.project)
    ids: dict[int, str] = {}

    def publish(i: int) -> None:
        ids[i] = publisher.publish(TOPIC, b"m%d" % i, {"test_marker": marker, "i": str(i)})

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert_each_got_its_own_message(seen, marker, ids)


def test_an_unknown_topic_is_a_publish_failure(publish_one: PublishOne) -> None:
    with pytest.raises(PublishFailed, match="NOT_FOUND"):
        publish_one("no.such.topic", b"x", {})


def test_topic_exists(stack: LocalStack) -> None:
    publisher = PubSubPublisher(stack.config.project)
    assert publisher.topic_exists(TOPIC) is True
    assert publisher.topic_exists("no.such.topic") is False


# -- AsyncPubSubPublisher ------------------------------------------------------------------


def test_async_concurrent_publishes_each_get_their_own_message(
    stack: LocalStack, tap: Callable[[str], Tap]
) -> None:
    seen = tap(TOPIC)
    marker = uuid.uuid4().hex
    publisher = async_publisher(stack)

    async def publish_all() -> list[str]:
        return await asyncio.gather(
            *[
                publisher.publish(TOPIC, b"m%d" % i, {"test_marker": marker, "i": str(i)})
                for i in range(50)
            ]
        )

    ids = asyncio.run(publish_all())
    assert len(set(ids)) == 50
    assert_each_got_its_own_message(seen, marker, dict(enumerate(ids)))


def test_async_publisher_works_from_one_event_loop_after_another(
    stack: LocalStack, tap: Callable[[str], Tap]
) -> None:
    seen = tap(TOPIC)
    marker = uuid.uuid4().hex
    publisher = async_publisher(stack)
    ids = [
        asyncio.run(publisher.publish(TOPIC, b"loop-%d" % i, {"test_marker": marker}))
        for i in range(2)
    ]
    messages = marked(seen, marker, 2)
    assert sorted((m.data, m.message_id) for m in messages) == sorted(
        zip([b"loop-0", b"loop-1"], ids, strict=True)
    )
