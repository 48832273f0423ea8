"""``callpipe webhooks``: make, sign and send CallRail-shaped webhooks (local testing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from callpipe.callrail.signature import compute_signature
from callpipe.cli.common import fail, print_json, settings
from callpipe.demo import (
    DEMO_ACCOUNT_ID,
    DEMO_COMPANY_ID,
    DEMO_LEGACY_COMPANY_ID,
    clone_demo_call,
    sample_post_call,
    webhook_from_call,
)

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Make, sign and send CallRail-shaped webhooks to an intake.",
    no_args_is_help=True,
)


@app.command("sample")
def sample(
    company_id: Annotated[
        str, typer.Option(help="company_resource_id to put in the payload.")
    ] = DEMO_COMPANY_ID,
    legacy_company_id: Annotated[
        str, typer.Option(help="Legacy numeric company_id.")
    ] = DEMO_LEGACY_COMPANY_ID,
    account_id: Annotated[
        str, typer.Option(help="CallRail account id (in timeline_url).")
    ] = DEMO_ACCOUNT_ID,
    call_id: Annotated[
        str | None, typer.Option(help="resource_id of the call (random when omitted).")
    ] = None,
    simulator_data: Annotated[
        Path | None,
        typer.Option(
            envvar="CALLRAIL_SIM_DATA_DIR",
            help="The CallRail simulator's data folder (a running `make run` sets it): the "
            "new call is added there, copied from one of its calls with the recording, so "
            "the pipeline can fetch it. The call's account is then the copied call's.",
        ),
    ] = None,
) -> None:
    """Print a Post-Call webhook body with a fresh timestamp and a new call id.

    With the simulator's data folder (from a running local stack, or --simulator-data) and
    no --call-id, the call also exists in the simulator, so every step can process it.
    """
    if simulator_data is None or call_id is not None:
        print_json(sample_post_call(company_id, legacy_company_id, account_id, call_id))
        return
    try:
        call = clone_demo_call(simulator_data)
    except (LookupError, OSError, ValueError) as error:
        fail(f"cannot add a call to the simulator's data in {simulator_data}: {error}")
    typer.echo(f"added call {call['id']} to the CallRail simulator ({simulator_data})", err=True)
    print_json(webhook_from_call(call, legacy_company_id, company_id=company_id))


def _read_body(file: Path) -> bytes:
    if str(file) == "-":
        return sys.stdin.buffer.read()
    try:
        return file.read_bytes()
    except OSError as error:
        fail(f"cannot read {file}: {error.strerror}")


def _signing_secret(company_id: str | None, body: bytes) -> str:
    from callpipe.cli.tenants import _repository
    from callpipe.wiring import build_secret_store

    if company_id is None:
        try:
            document = json.loads(body)
            company_id = str(
                document.get("company_resource_id") or document.get("company_id") or ""
            )
        except (ValueError, AttributeError):
            company_id = ""
        if not company_id:
            fail("the body names no company: pass --company-id")
    mapping = _repository().find_company(company_id)
    if mapping is None:
        fail(f"company {company_id} is not onboarded")
    active = [t for t in mapping.tokens if t.active]
    if not active:
        fail(f"company {company_id} has no active signing token")
    return build_secret_store(settings()).get(active[0].secret_name)


@app.command("sign")
def sign(
    file: Annotated[Path, typer.Argument(help="The body to sign ('-' for stdin), byte for byte.")],
    company_id: Annotated[
        str | None,
        typer.Option(help="Company whose newest active token signs (default: the body's)."),
    ] = None,
) -> None:
    """Print the Signature header value for a body (local stack: reads the token from the secret store)."""
    body = _read_body(file)
    typer.echo(compute_signature(_signing_secret(company_id, body), body))


@app.command("send")
def send(
    file: Annotated[Path, typer.Argument(help="The body to send ('-' for stdin).")],
    url: Annotated[
        str | None,
        typer.Option(help="Intake webhook URL (default: the running local stack's intake)."),
    ] = None,
    company_id: Annotated[
        str | None, typer.Option(help="Company whose token signs (default: the body's).")
    ] = None,
    unsigned: Annotated[bool, typer.Option(help="Send without a Signature header.")] = False,
) -> None:
    """Sign a body and POST it to the intake; print the status and the JSON answer."""
    import os

    import httpx

    url = url or (
        os.environ.get("CALLPIPE_INTAKE_URL", "http://127.0.0.1:8080") + "/api/v1/callrail/webhook"
    )
    body = _read_body(file)
    headers = {"Content-Type": "application/json", "User-Agent": "callpipe-cli"}
    if not unsigned:
        headers["Signature"] = compute_signature(_signing_secret(company_id, body), body)
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=15)
    except httpx.HTTPError as error:
        fail(f"cannot reach {url}: {error.__class__.__name__}")
    typer.echo(f"HTTP {response.status_code}")
    typer.echo(response.text)
    if response.status_code >= 300:
        raise typer.Exit(1)
