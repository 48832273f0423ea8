"""``callpipe quarantine`` and ``callpipe dlq``: see and replay what did not go through."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from callpipe.cli.common import fail, print_json, settings
from callpipe.publishing import PublishFailed
from callpipe.replay import (
    PullSubscription,
    ReplayAckFailed,
    described,
    peek,
    read_quarantined,
    replay_dead_letters,
    replay_quarantine,
)
from callpipe.topology import load_topology

quarantine_app = typer.Typer(
    rich_markup_mode="markdown",
    help="Webhooks from companies not onboarded yet, kept 7 days for replay.",
    no_args_is_help=True,
)
dlq_app = typer.Typer(
    rich_markup_mode="markdown",
    help="Dead-lettered messages of each step: list and replay.",
    no_args_is_help=True,
)

QUARANTINE_HOLD = "webhooks.quarantine.hold"


@quarantine_app.command("list")
def quarantine_list(
    limit: Annotated[int, typer.Option(help="At most this many messages.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show quarantined webhooks (company, reason, when) without removing them."""
    items: list[dict[str, object]] = []
    for pulled in peek(PullSubscription(settings().google_cloud_project, QUARANTINE_HOLD), limit):
        message = read_quarantined(pulled)
        if isinstance(message, str):  # listed as such: one bad message hides no other
            items.append({"message_id": pulled.message_id, "reason": message})
            continue
        items.append(
            {
                "message_id": pulled.message_id,
                "company_key": message.company_key,
                "reason": message.reason,
                "received_at": message.webhook.received_at.isoformat(),
                "correlation_id": message.correlation_id,
                "bytes": len(message.webhook.body),
            }
        )
    if as_json:
        print_json(items)
        return
    if not items:
        typer.echo("quarantine is empty")
    for item in items:
        typer.echo(
            f"{item.get('received_at', '-')}  {item.get('company_key', '-')!s:<40} "
            f"{item['reason']!s:<22} {item.get('correlation_id', item['message_id'])}"
        )


@quarantine_app.command("replay")
def quarantine_replay(
    company: Annotated[str | None, typer.Option(help="Only this company's webhooks.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many messages.")] = 1000,
    drop_forged: Annotated[
        bool,
        typer.Option(
            "--drop-forged",
            help="Remove webhooks whose signature no token of their company matches "
            "(by default they stay: the company may have been onboarded with a wrong token).",
        ),
    ] = False,
) -> None:
    """Run quarantined webhooks through intake again (after `tenants add`).

    Each is verified with the company's tokens and judged against its original receipt
    time; accepted ones are queued, ones still unknown or whose signature does not match
    stay in quarantine (fix the token with `tenants add-token`, then replay again).
    """
    from callpipe.intake.wiring import build_intake_runtime

    s = settings()
    intake = build_intake_runtime(s).intake
    hold = PullSubscription(s.google_cloud_project, QUARANTINE_HOLD)
    counts: Counter[str] = Counter()
    with _stops_cleanly(counts, "quarantine"):
        for result in replay_quarantine(hold, intake, limit, company, drop_forged=drop_forged):
            counts["accepted" if result.outcome == "accepted" else "other"] += 1
            typer.echo(
                f"{result.attributes.get('company_key', '?'):<40} {result.outcome:<28} "
                f"{result.detail}"
            )
    total = counts["accepted"] + counts["other"]
    typer.echo(f"{counts['accepted']} accepted, {counts['other']} other, of {total} replayed")


@contextmanager
def _stops_cleanly(counts: Counter[str], hold: str) -> Iterator[None]:
    """A replay stopped by an error says how far it got and what stays in the hold."""
    try:
        yield
    except (PublishFailed, ReplayAckFailed) as error:
        done = sum(counts.values())
        fail(f"stopped after {done} message(s): {error}; the rest stays in the {hold} hold")


def _dlq_hold(topic: str) -> str:
    topology = load_topology()
    if topic not in topology.trigger_topics():
        fail(
            f"{topic} is not a step's trigger topic; choose one of {', '.join(topology.trigger_topics())}"
        )
    return f"{topology.dead_letter_topic_of(topic)}.hold"


@dlq_app.command("list")
def dlq_list(
    topic: Annotated[str, typer.Argument(help="The step's trigger topic, e.g. calls.received.")],
    limit: Annotated[int, typer.Option(help="At most this many messages.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show dead-lettered messages with their reasons, without removing them."""
    items = [
        {"message_id": p.message_id, **{k: v for k, v in described(p).items() if k != "event_key"}}
        for p in peek(PullSubscription(settings().google_cloud_project, _dlq_hold(topic)), limit)
    ]
    if as_json:
        print_json(items)
        return
    if not items:
        typer.echo(f"no dead letters for {topic}")
    for item in items:
        reason = item.get("dlq_reason", "delivery attempts exhausted")
        typer.echo(
            f"{item['message_id']:<20} {item.get('tenant_id', '-'):<16} {item.get('call_id', '-'):<36} {reason}"
        )


@dlq_app.command("replay")
def dlq_replay(
    topic: Annotated[str, typer.Argument(help="The step's trigger topic, e.g. calls.received.")],
    limit: Annotated[int, typer.Option(help="At most this many messages.")] = 1000,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's messages.")] = None,
    call_id: Annotated[str | None, typer.Option(help="Only this call's messages.")] = None,
) -> None:
    """Publish dead-lettered messages back to their topic (the step is idempotent)."""
    from callpipe.wiring import build_publisher

    s = settings()
    match = {k: v for k, v in (("tenant_id", tenant), ("call_id", call_id)) if v}
    counts: Counter[str] = Counter()
    with _stops_cleanly(counts, "dead-letter"):
        for result in replay_dead_letters(
            PullSubscription(s.google_cloud_project, _dlq_hold(topic)),
            build_publisher(s),
            topic,
            limit,
            match=match or None,
        ):
            counts["replayed"] += 1
            typer.echo(f"{result.message_id:<20} {result.detail}")
    typer.echo(f"{counts['replayed']} message(s) replayed into {topic}")
