"""``callpipe tokens``: mint tenant API tokens (JWTs) for local use and support.

A tenant token is signed with the key ``api-jwt-signing-key`` of the secret store, an
operator token with ``api-operator-signing-key``. Outside production a key is created on
first use, so a fresh ``make run`` needs no setup; in production the keys must already
exist (created once, see README), and this never makes one.
"""

from __future__ import annotations

from typing import Annotated

import typer

from callpipe.api.auth import (
    DEFAULT_TTL_SECONDS,
    MAX_TTL_SECONDS,
    OPERATOR_KEY_SECRET,
    SIGNING_KEY_SECRET,
    issue_token,
    load_signing_key,
)
from callpipe.cli.common import fail, info, settings
from callpipe.ids import InvalidIdentifier, check_tenant_id
from callpipe.secrets import SecretNotFound, SecretStoreUnavailable
from callpipe.wiring import build_secret_store

app = typer.Typer(
    rich_markup_mode="markdown", help="Mint bearer tokens for the tenant API.", no_args_is_help=True
)


@app.callback()
def tokens() -> None:
    """Mint bearer tokens for the tenant API."""
    # A callback keeps ``issue`` a subcommand even while it is the only one.


@app.command("issue")
def issue(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="The tenant the token may read.")
    ] = None,
    operator: Annotated[
        bool, typer.Option("--operator", help="An operator token: reads every tenant.")
    ] = False,
    ttl: Annotated[
        int,
        typer.Option("--ttl", min=1, max=MAX_TTL_SECONDS, help="Lifetime in seconds."),
    ] = DEFAULT_TTL_SECONDS,
    subject: Annotated[
        str | None, typer.Option("--subject", help="The 'sub' claim (who the token is for).")
    ] = None,
) -> None:
    """Print a signed JWT for the API's `Authorization: Bearer <token>` header."""
    if tenant is None and not operator:
        fail("name the tenant with --tenant, or pass --operator")
    if tenant is not None:
        try:
            check_tenant_id(tenant)
        except InvalidIdentifier as error:
            fail(str(error))
    config = settings()
    store = build_secret_store(config)
    secret = OPERATOR_KEY_SECRET if operator else SIGNING_KEY_SECRET
    try:
        key = load_signing_key(store, create_if_missing=not config.is_production, secret=secret)
    except SecretNotFound:
        fail(f"the API signing key '{secret}' does not exist in Secret Manager")
    except SecretStoreUnavailable as error:
        fail(str(error))
    token = issue_token(key, tenant_id=tenant, operator=operator, ttl_seconds=ttl, subject=subject)
    info(f"token for {'operator' if operator else 'tenant ' + str(tenant)}, valid {ttl} s")
    typer.echo(token)
