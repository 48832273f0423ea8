"""``callpipe quarantine`` and ``callpipe dlq``: see and replay what did not go through."""

from __future__ import annotations

from typing import Annotated

import typer

from callpipe.cli.common import fail, print_json, settings
from callpipe.replay import PullSubscription, peek, replay_dead_letters, replay_quarantine
from callpipe.topology import load_topology

quarantine_app = typer.Typer(
    help="Webhooks from companies not onboarded yet, kept 7 days for replay.", no_args_is_help=True
)
dlq_app = typer.Typer(
    help="Dead-lettered messages of each step: list and replay.", no_args_is_help=True
)

QUARANTINE_HOLD = "webhooks.quarantine.hold"


@quarantine_app.command("list")
def quarantine_list(
    limit: Annotated[int, typer.Option(help="At most this many messages.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show quarantined webhooks (company, reason, when) without removing them."""
    from callpipe.messages import QuarantinedWebhook

    items = []
    for pulled in peek(PullSubscription(settings().google_cloud_project, QUARANTINE_HOLD), limit):
        message = QuarantinedWebhook.model_validate_json(pulled.data)
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
            f"{item['received_at']}  {item['company_key']:<40} {item['reason']:<22} {item['correlation_id']}"
        )


@quarantine_app.command("replay")
def quarantine_replay(
    company: Annotated[str | None, typer.Option(help="Only this company's webhooks.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many messages.")] = 1000,
) -> None:
    """Run quarantined webhooks through intake again (after `tenants add`).

    Each is verified with the company's tokens and judged against its original receipt
    time; accepted ones are queued, ones still unknown stay in quarantine.
    """
    from callpipe.intake.wiring import build_intake_runtime

    s = settings()
    intake = build_intake_runtime(s).intake
    results = replay_quarantine(
        PullSubscription(s.google_cloud_project, QUARANTINE_HOLD), intake, limit, company
    )
    for result in results:
        typer.echo(
            f"{result.attributes.get('company_key', '?'):<40} {result.outcome:<28} {result.detail}"
        )
    accepted = sum(1 for r in results if r.outcome == "accepted")
    typer.echo(f"{accepted} accepted, {len(results) - accepted} other, of {len(results)} replayed")


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
        {"message_id": p.message_id, **{k: v for k, v in p.attributes.items() if k != "event_key"}}
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
    results = replay_dead_letters(
        PullSubscription(s.google_cloud_project, _dlq_hold(topic)),
        build_publisher(s),
        topic,
        limit,
        match=match or None,
    )
    for result in results:
        typer.echo(f"{result.message_id:<20} {result.detail}")
    typer.echo(f"{len(results)} message(s) replayed into {topic}")
