"""Bearer-token verification of the tenant API (PyJWT, HS256 allow-list)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from typer.testing import CliRunner

from callpipe.api.auth import (
    OPERATOR_KEY_SECRET,
    SIGNING_KEY_SECRET,
    AuthError,
    TokenVerifier,
    issue_token,
    load_signing_key,
)
from callpipe.secrets import LocalSecretStore, SecretNotFound

KEY = "k" * 64
OTHER_KEY = "o" * 64


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(lambda: KEY)


def claims(**changes: object) -> dict[str, object]:
    now = datetime.now(UTC)
    base: dict[str, object] = {
        "sub": "tenant:acme",
        "tenant_id": "acme",
        "iss": "callpipe",
        "aud": "callpipe-api",
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthError) as caught:
        verifier.verify(token)
    return caught.value.code


def test_a_valid_tenant_token_names_its_tenant(verifier: TokenVerifier) -> None:
    principal = verifier.verify(issue_token(KEY, tenant_id="acme"))
    assert principal.tenant_id == "acme" and not principal.operator
    assert principal.may_read("acme") and not principal.may_read("other")


def test_an_operator_token_may_read_every_tenant(verifier: TokenVerifier) -> None:
    principal = verifier.verify(issue_token(KEY, tenant_id=None, operator=True))
    assert principal.operator and principal.tenant_id is None
    assert principal.may_read("acme") and principal.may_read("other")


def test_the_header_needs_the_bearer_scheme(verifier: TokenVerifier) -> None:
    token = issue_token(KEY, tenant_id="acme")
    assert verifier.verify_header(f"Bearer {token}").tenant_id == "acme"
    for header in (None, "", token, f"Basic {token}", "Bearer "):
        with pytest.raises(AuthError) as caught:
            verifier.verify_header(header)
        assert caught.value.code == "missing_token"


def test_an_expired_token_is_refused(verifier: TokenVerifier) -> None:
    past = datetime.now(UTC) - timedelta(hours=2)
    token = issue_token(KEY, tenant_id="acme", ttl_seconds=60, now=past)
    assert refused(verifier, token) == "token_expired"


def test_a_token_without_expiry_is_refused(verifier: TokenVerifier) -> None:
    token = jwt.encode(claims(exp=None), KEY, algorithm="HS256")
    assert refused(verifier, token) == "invalid_token"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"aud": "someone-else"}, "wrong_audience"),
        ({"iss": "not-callpipe"}, "wrong_issuer"),
        ({"aud": None}, "invalid_token"),
        ({"tenant_id": None}, "invalid_token"),
        ({"tenant_id": "../other"}, "invalid_token"),
        ({"role": "admin", "tenant_id": None}, "invalid_token"),
        ({"iat": None}, "invalid_token"),
        # longer than issue_token ever makes (7 days): not one of ours
        ({"exp": datetime.now(UTC) + timedelta(days=365)}, "invalid_token"),
        ({"iat": "yesterday"}, "invalid_token"),
    ],
)
def test_wrong_claims_are_refused(
    verifier: TokenVerifier, changes: dict[str, object], code: str
) -> None:
    assert refused(verifier, jwt.encode(claims(**changes), KEY, algorithm="HS256")) == code


def _unsigned(payload: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        raw = json.dumps(data, default=lambda d: int(d.timestamp())).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def test_alg_none_is_refused(verifier: TokenVerifier) -> None:
    assert refused(verifier, _unsigned(claims(role="operator"))) == "wrong_algorithm"


def test_other_algorithms_are_refused(verifier: TokenVerifier) -> None:
    assert refused(verifier, jwt.encode(claims(), KEY, algorithm="HS512")) == "wrong_algorithm"


def test_a_token_signed_with_another_key_is_refused(verifier: TokenVerifier) -> None:
    assert refused(verifier, issue_token(OTHER_KEY, tenant_id="acme")) == "invalid_signature"


def test_a_tampered_token_is_refused(verifier: TokenVerifier) -> None:
    header, payload, signature = issue_token(KEY, tenant_id="acme").split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["tenant_id"] = "victim"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    assert refused(verifier, f"{header}.{forged}.{signature}") == "invalid_signature"


def test_garbage_is_refused(verifier: TokenVerifier) -> None:
    assert refused(verifier, "not-a-jwt") == "invalid_token"


def test_the_allow_list_cannot_include_none() -> None:
    with pytest.raises(ValueError, match="none"):
        TokenVerifier(lambda: KEY, algorithms=["HS256", "none"])


def test_issue_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match="tenant"):
        issue_token(KEY, tenant_id=None)
    with pytest.raises(ValueError, match="ttl"):
        issue_token(KEY, tenant_id="acme", ttl_seconds=0)


def test_the_signing_key_is_created_only_when_asked(tmp_path: Path) -> None:
    store = LocalSecretStore(tmp_path)
    with pytest.raises(SecretNotFound):
        load_signing_key(store)
    key = load_signing_key(store, create_if_missing=True)
    assert len(key) >= 64
    assert load_signing_key(store) == key == store.get(SIGNING_KEY_SECRET)
    assert (tmp_path / SIGNING_KEY_SECRET).stat().st_mode & 0o777 == 0o600


def test_cli_issues_a_token_the_verifier_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from callpipe.cli import tokens

    monkeypatch.setenv("ENVIRONMENT", "local")
    monkeypatch.setenv("LOCAL_SECRETS_DIR", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(tokens.app, ["issue", "--tenant", "acme", "--ttl", "120"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    store = LocalSecretStore(tmp_path)
    verifier = TokenVerifier(
        lambda: store.get(SIGNING_KEY_SECRET), operator_key=lambda: store.get(OPERATOR_KEY_SECRET)
    )
    principal = verifier.verify(token)
    assert principal.tenant_id == "acme"
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert exp - datetime.now(UTC).timestamp() <= 121

    operator = runner.invoke(tokens.app, ["issue", "--operator"])
    assert operator.exit_code == 0, operator.output
    assert verifier.verify(operator.stdout.strip().splitlines()[-1]).operator
    assert store.get(OPERATOR_KEY_SECRET) != store.get(SIGNING_KEY_SECRET)  # two keys

    nobody = runner.invoke(tokens.app, ["issue"])
    assert nobody.exit_code == 1
    assert "name the tenant with --tenant, or pass --operator" in nobody.stderr
    assert nobody.stdout == ""  # no token
    bad_id = runner.invoke(tokens.app, ["issue", "--tenant", "Bad/Id"])
    assert bad_id.exit_code == 1
    assert "invalid tenant id 'Bad/Id'" in bad_id.stderr
    assert bad_id.stdout == ""


def test_cli_does_not_create_a_key_in_production(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from callpipe.cli import tokens

    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("SECRET_BACKEND", "local")
    monkeypatch.setenv("LOCAL_SECRETS_DIR", str(tmp_path))
    result = CliRunner().invoke(tokens.app, ["issue", "--tenant", "acme"])
    assert result.exit_code != 0
    assert not (tmp_path / SIGNING_KEY_SECRET).exists()


def test_numeric_string_times_pyjwt_accepts_do_not_crash_the_lifetime_check(
    verifier: TokenVerifier,
) -> None:
    issued = str(int(datetime.now(UTC).timestamp()))
    token = jwt.encode(claims(iat=issued), KEY, algorithm="HS256")
    assert verifier.verify(token).tenant_id == "acme"


def test_tenant_and_operator_tokens_each_verify_only_with_their_own_key() -> None:
    operator_key = "o" * 64
    verifier = TokenVerifier(lambda: KEY, operator_key=lambda: operator_key)
    assert verifier.verify(issue_token(KEY, tenant_id="acme")).tenant_id == "acme"
    assert verifier.verify(issue_token(operator_key, tenant_id=None, operator=True)).operator
    # whoever holds the tenants' key cannot make an operator
    with pytest.raises(AuthError) as refused:
        verifier.verify(issue_token(KEY, tenant_id=None, operator=True))
    assert refused.value.code == "invalid_signature"
    # nor is the operators' key a tenant's
    with pytest.raises(AuthError):
        verifier.verify(issue_token(operator_key, tenant_id="acme"))
