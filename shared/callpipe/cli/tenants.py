"""``callpipe tenants``: onboard tenants and manage their CallRail webhook signing tokens."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Annotated, Any

import typer

from callpipe.apikeys import InvalidApiKey, api_key_from_input
from callpipe.cli.common import fail, print_json, settings
from callpipe.ids import InvalidIdentifier
from callpipe.secrets import SecretStore
from callpipe.tenancy import (
    CompanyAlreadyMapped,
    InvalidSigningToken,
    OnboardingRequest,
    RevokeOutcome,
    RowsNotWritten,
    TenantExists,
    TenantNotFound,
    TenantRecord,
    TenantRepository,
    signing_token_from_input,
)
from callpipe.wiring import backend_mismatch, build_secret_store

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Onboard tenants (businesses) and manage their CallRail companies and tokens.",
    no_args_is_help=True,
)


def _repository() -> TenantRepository:
    from callpipe.devstack.processes import port_open
    from callpipe.spanner_db import open_database

    config = settings()
    emulator = config.spanner_emulator_host
    if emulator:
        host, _, port = emulator.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            fail(
                f"SPANNER_EMULATOR_HOST={emulator!r} is not host:port: set it like "
                "127.0.0.1:9010 (or unset it to use the real database)"
            )
        if not port_open(host or "127.0.0.1", int(port)):
            fail(
                f"the Spanner emulator at {emulator} does not answer: start the stack with `make run`"
            )
    return TenantRepository(open_database(config))


def _secret_store() -> SecretStore:
    """The secret store, refused unless it goes with the database the rows are written to.

    Called before any Spanner access, so a refusal leaves nothing behind.
    """
    config = settings()
    problem = backend_mismatch(config)
    if problem:
        fail(problem)
    return build_secret_store(config)


def _not_written(error: RowsNotWritten, check: str) -> str:
    """What an operator needs after a failed commit: what became of the rows and which
    secrets (names only) were stored for them."""
    names = ", ".join(error.secret_names) or "none"
    if error.refused:
        return (
            f"{error}. Nothing was written to Spanner; the secrets stored for it are unused "
            f"and can be deleted: {names}"
        )
    return (
        f"{error}. The rows may or may not have been written: check with {check}. "
        f"Secrets stored for them: {names}"
    )


@app.command("add")
def add(
    tenant_id: Annotated[str, typer.Option(help="Tenant id: lowercase letters, digits, hyphens.")],
    name: Annotated[str, typer.Option(help="The business's display name.")],
    callrail_account_id: Annotated[str, typer.Option(help="CallRail numeric account id.")],
    callrail_company_id: Annotated[
        str, typer.Option(help="CallRail company resource id (COM...).")
    ],
    signing_token: Annotated[
        list[str] | None,
        typer.Option(
            help="The company's webhook signing token (repeat for several). Read from "
            "CALLPIPE_SIGNING_TOKEN when omitted; prompted for when neither is given.",
        ),
    ] = None,
    legacy_company_id: Annotated[
        str | None, typer.Option(help="The legacy numeric company id, if webhooks carry it.")
    ] = None,
    office_id: Annotated[str, typer.Option(help="Office id within the tenant.")] = "main",
    office_name: Annotated[
        str | None, typer.Option(help="Office display name (defaults to the tenant name).")
    ] = None,
    time_zone: Annotated[
        str | None, typer.Option(help="Office time zone, e.g. America/Chicago.")
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(help="Name of an environment variable holding the CallRail API key."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Onboard a tenant: its first office, its CallRail company and signing token(s).

    Tokens and keys go to the secret store (local files, or Secret Manager in production);
    Spanner keeps only references to them.
    """
    store = _secret_store()
    tokens = list(signing_token or [])
    if not tokens and os.environ.get("CALLPIPE_SIGNING_TOKEN"):
        tokens = [os.environ["CALLPIPE_SIGNING_TOKEN"]]
    if not tokens:
        tokens = [typer.prompt("Webhook signing token", hide_input=True)]
    try:
        tokens = [signing_token_from_input(t) for t in tokens]
    except InvalidSigningToken as error:
        fail(str(error))
    api_key = None
    if api_key_env:
        api_key = _api_key_from_env(api_key_env)
    request = OnboardingRequest(
        tenant_id=tenant_id,
        name=name,
        callrail_account_id=callrail_account_id,
        callrail_company_id=callrail_company_id,
        legacy_company_id=legacy_company_id,
        office_id=office_id,
        office_name=office_name,
        time_zone=time_zone,
        signing_tokens=tokens,
        api_key=api_key,
    )
    try:
        token_ids = _repository().onboard(request, store)
    except (TenantExists, CompanyAlreadyMapped, InvalidIdentifier) as error:
        fail(str(error))
    except RowsNotWritten as error:
        fail(_not_written(error, f"`callpipe tenants show {tenant_id}`"))
    result = {
        "tenant_id": tenant_id,
        "company_id": callrail_company_id,
        "office_id": office_id,
        "token_ids": token_ids,
    }
    if as_json:
        print_json(result)
    else:
        typer.echo(
            f"tenant {tenant_id} onboarded: company {callrail_company_id} → office {office_id}, "
            f"{len(token_ids)} signing token(s) ({', '.join(token_ids)})"
        )


@app.command("list")
def list_tenants(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List tenants with their companies and active token counts."""
    records = _repository().list_tenants()
    if as_json:
        print_json([_record_dict(r) for r in records])
        return
    if not records:
        typer.echo("no tenants yet: add one with `callpipe tenants add`")
        return
    typer.echo(f"{'TENANT':<20} {'STATUS':<8} {'ACCOUNT':<12} {'COMPANIES':<40} TOKENS  NAME")
    for r in records:
        companies = ",".join(c.company_id for c in r.companies) or "-"
        tokens = sum(1 for c in r.companies for t in c.tokens if t.active)
        typer.echo(
            f"{r.tenant_id:<20} {r.status:<8} {r.callrail_account_id or '-':<12} {companies:<40} {tokens:<7} {r.name}"
        )


@app.command("show")
def show(
    tenant_id: Annotated[str, typer.Argument(help="The tenant id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show one tenant: offices, companies and token ids (never the tokens)."""
    record = _repository().get_tenant(tenant_id)
    if record is None:
        fail(f"tenant {tenant_id} does not exist")
    data = _record_dict(record)
    if as_json:
        print_json(data)
        return
    typer.echo(f"tenant   {record.tenant_id} ({record.name}), {record.status}")
    typer.echo(
        f"account  {record.callrail_account_id or '-'}; API key secret: {record.api_key_secret or 'none'}"
    )
    for office in record.offices:
        typer.echo(
            f"office   {office.office_id}: {office.name} ({office.time_zone or 'no time zone'})"
        )
    for company in record.companies:
        legacy = f", legacy id {company.legacy_company_id}" if company.legacy_company_id else ""
        typer.echo(f"company  {company.company_id}{legacy} → office {company.office_id}")
        for token in company.tokens:
            state = "active" if token.active else "revoked"
            typer.echo(f"  token  {token.token_id} {state}, secret {token.secret_name}")


@app.command("add-token")
def add_token(
    company_id: Annotated[
        str, typer.Option(help="CallRail company resource id (COM…) or legacy numeric id.")
    ],
    signing_token: Annotated[
        str | None, typer.Option(help="The new token (or CALLPIPE_SIGNING_TOKEN, or a prompt).")
    ] = None,
) -> None:
    """Add a signing token to a company (rotation: both tokens verify until one is revoked)."""
    store = _secret_store()
    given = (
        signing_token
        or os.environ.get("CALLPIPE_SIGNING_TOKEN")
        or typer.prompt("Webhook signing token", hide_input=True)
    )
    try:
        token = signing_token_from_input(given)
    except InvalidSigningToken as error:
        fail(str(error))
    try:
        token_id = _repository().add_signing_token(company_id, token, store)
    except TenantNotFound as error:
        fail(str(error))
    except RowsNotWritten as error:
        fail(_not_written(error, "`callpipe tenants show`"))
    typer.echo(
        f"token {token_id} added to {company_id}; intake verifies with it within seconds "
        "(it reloads a company whose tokens do not match a signature)"
    )


def _api_key_from_env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value.strip():
        fail(f"environment variable {name} is empty or not set; nothing was changed")
    try:
        return api_key_from_input(value)
    except InvalidApiKey as error:
        fail(f"environment variable {name}: {error}; nothing was changed")


@app.command("set-api-key")
def set_api_key(
    tenant_id: Annotated[str, typer.Option(help="The tenant id.")],
    api_key_env: Annotated[
        str | None,
        typer.Option(help="Read the key from this environment variable (else a hidden prompt)."),
    ] = None,
) -> None:
    """Set or rotate the tenant's CallRail API key (fetch and download use it)."""
    store = _secret_store()
    if api_key_env:
        key = _api_key_from_env(api_key_env)
    else:
        try:
            # an empty or mangled key would replace a working one, and every fetch fail
            key = api_key_from_input(typer.prompt("CallRail API key", hide_input=True))
        except InvalidApiKey as error:
            fail(f"{error}; nothing was changed")
    try:
        name = _repository().set_api_key(tenant_id, key, store)
    except TenantNotFound as error:
        fail(str(error))
    typer.echo(f"API key of {tenant_id} stored in secret {name}; steps pick it up within a minute")


@app.command("revoke-token")
def revoke_token(
    company_id: Annotated[
        str, typer.Option(help="CallRail company resource id (COM…) or legacy numeric id.")
    ],
    token_id: Annotated[str, typer.Option(help="The token id (see `tenants show`).")],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Revoke even the company's last active token: all its webhooks are then refused.",
        ),
    ] = False,
) -> None:
    """Revoke a signing token: webhooks signed with it are refused after the cache TTL.

    The company's last active token is kept unless --force: add its replacement first.
    """
    revocation = _repository().revoke_signing_token(company_id, token_id, force=force)
    match revocation.outcome:
        case RevokeOutcome.NOT_FOUND:
            fail(f"company {company_id} has no token {token_id}")
        case RevokeOutcome.ALREADY_REVOKED:
            when = f" at {revocation.revoked_at}" if revocation.revoked_at else ""
            typer.echo(
                f"token {token_id} of {company_id} is already revoked{when}; nothing changed"
            )
        case RevokeOutcome.LAST_ACTIVE:
            fail(
                f"token {token_id} is the last active token of {company_id}: without it every "
                "webhook of the company is refused (401). Add the new token first with "
                "`callpipe tenants add-token`, or pass --force"
            )
        case RevokeOutcome.REVOKED:
            typer.echo(f"token {token_id} of {company_id} revoked")
            if revocation.active_left == 0:
                typer.secho(
                    f"warning: {company_id} has no active token left: its webhooks are refused "
                    "until one is added",
                    fg=typer.colors.YELLOW,
                    err=True,
                )


def _record_dict(record: TenantRecord) -> dict[str, Any]:
    data = asdict(record)
    for company in data["companies"]:
        for token in company["tokens"]:
            token["created_at"] = str(token["created_at"]) if token["created_at"] else None
    return data
