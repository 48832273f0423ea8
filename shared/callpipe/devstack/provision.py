"""Provisioning the emulators from the topology and the schema files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from callpipe.spanner_db import read_ddl_statements
from callpipe.topology import REPO_ROOT, Topology

DDL_FILE = REPO_ROOT / "schemas" / "spanner" / "schema.sql"


def push_endpoint(project: str, topic: str, port: int) -> str:
    # The topic path in the URL lets functions-framework give the CloudEvent the right source.
    return f"http://127.0.0.1:{port}/projects/{project}/topics/{topic}"


def provision_pubsub(
    project: str,
    topology: Topology,
    push: bool = True,
    ports: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Create every topic and subscription of the topology (idempotent).

    With ``push=False`` the step subscriptions are pull subscriptions, so tests can drive a
    step themselves; DLQ policies and retry settings are the same either way.
    """
    from google.api_core import exceptions
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]
    from google.protobuf import duration_pb2

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    created: dict[str, Any] = {"topics": [], "subscriptions": []}
    for topic in topology.all_topics():
        try:
            publisher.create_topic(request={"name": publisher.topic_path(project, topic)})
            created["topics"].append(topic)
        except exceptions.AlreadyExists:
            pass
    for sub in topology.subscriptions():
        request: dict[str, Any] = {
            "name": subscriber.subscription_path(project, sub.name),
            "topic": publisher.topic_path(project, sub.topic),
            "ack_deadline_seconds": sub.ack_deadline_seconds,
            "message_retention_duration": duration_pb2.Duration(
                seconds=sub.message_retention_seconds
            ),
        }
        if sub.retry is not None:
            request["retry_policy"] = {
                "minimum_backoff": duration_pb2.Duration(seconds=sub.retry.minimum_backoff_seconds),
                "maximum_backoff": duration_pb2.Duration(seconds=sub.retry.maximum_backoff_seconds),
            }
        if sub.dead_letter_topic is not None:
            request["dead_letter_policy"] = {
                "dead_letter_topic": publisher.topic_path(project, sub.dead_letter_topic),
                "max_delivery_attempts": sub.max_delivery_attempts,
            }
        if push and sub.push_port is not None and sub.step is not None:
            port = (ports or {}).get(sub.step, sub.push_port)
            request["push_config"] = {"push_endpoint": push_endpoint(project, sub.topic, port)}
        try:
            subscriber.create_subscription(request=request)
            created["subscriptions"].append(sub.name)
        except exceptions.AlreadyExists:
            pass
    subscriber.close()
    return created


def provision_buckets(project: str, names: list[str]) -> None:
    from google.api_core import exceptions
    from google.cloud import storage  # type: ignore[attr-defined]

    client = storage.Client(project=project)
    for name in names:
        try:
            client.create_bucket(name)
        except exceptions.Conflict:
            pass


def provision_spanner(
    project: str, instance_id: str, database_id: str, ddl_file: Path = DDL_FILE
) -> None:
    from google.api_core import exceptions
    from google.cloud import spanner

    client = spanner.Client(project=project)
    instance = client.instance(
        instance_id,
        configuration_name=f"projects/{project}/instanceConfigs/emulator-config",
        display_name="callpipe local",
        node_count=1,
    )
    try:
        instance.create().result(timeout=60)
    except exceptions.AlreadyExists:
        pass
    statements = read_ddl_statements(ddl_file.read_text(encoding="utf-8"))
    database = instance.database(database_id, ddl_statements=statements)
    try:
        database.create().result(timeout=120)
    except exceptions.AlreadyExists:
        pass
