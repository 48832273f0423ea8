"""CallRail signatures: base64(HMAC-SHA1(token, raw body)) in the ``Signature`` header."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from callpipe.callrail.signature import SigningToken, compute_signature, verify_signature
from tests.unit.conftest import event_body

BODY = event_body("post_call")
SECRET = "3f2a9c7e5b1d48e6a0c4f7b2d9e1a6c3"


def independent_signature(secret: str, body: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def test_compute_signature_matches_the_published_hmac_sha1_vector() -> None:
    # RFC 2104 / Wikipedia HMAC-SHA1 vector: de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9, in base64.
    assert (
        compute_signature("key", b"The quick brown fox jumps over the lazy dog")
        == "3nybhbi3iqa8ino29wqQcBydtNk="
    )


@pytest.mark.parametrize(
    ("secret", "body"),
    [
        (SECRET, BODY),
        ("short", b"{}"),
        ("t\u00f6ken-with-non-ascii-\u2713", b'{"resource_id":"CAL1"}'),
        (SECRET, b""),
        (SECRET, '{"customer_name": "Zo\u00eb"}'.encode()),
    ],
)
def test_compute_signature_equals_an_independent_hmac_sha1_base64(secret: str, body: bytes) -> None:
    assert compute_signature(secret, body) == independent_signature(secret, body)


def test_signature_is_sha1_not_the_seeds_sha256() -> None:
    sha256 = base64.b64encode(hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()).decode()
    assert len(base64.b64decode(compute_signature(SECRET, BODY))) == 20  # SHA-1 digest size
    assert verify_signature(BODY, sha256, [SigningToken("tok1", SECRET)]) is None


def test_right_token_is_returned() -> None:
    token = SigningToken("tok1", SECRET)
    assert verify_signature(BODY, independent_signature(SECRET, BODY), [token]) is token


def test_wrong_token_is_rejected() -> None:
    signature = independent_signature("not-the-company-token", BODY)
    assert verify_signature(BODY, signature, [SigningToken("tok1", SECRET)]) is None


def test_rotation_second_active_token_matches_and_is_returned() -> None:
    old = SigningToken("tok-old", "old-secret-0000")
    new = SigningToken("tok-new", SECRET)
    third = SigningToken("tok-other", "other-secret-1111")
    matched = verify_signature(BODY, independent_signature(SECRET, BODY), [old, new, third])
    assert matched is new
    assert matched.token_id == "tok-new"


def test_rotation_first_token_still_accepted_while_both_active() -> None:
    old = SigningToken("tok-old", "old-secret-0000")
    new = SigningToken("tok-new", SECRET)
    matched = verify_signature(BODY, independent_signature("old-secret-0000", BODY), [old, new])
    assert matched is old


@pytest.mark.parametrize("position", [0, len(BODY) // 2, len(BODY) - 1])
def test_one_tampered_byte_is_rejected(position: int) -> None:
    signature = independent_signature(SECRET, BODY)
    tampered = bytearray(BODY)
    tampered[position] ^= 0x01
    assert bytes(tampered) != BODY
    assert verify_signature(bytes(tampered), signature, [SigningToken("tok1", SECRET)]) is None


def test_reserialised_json_is_rejected_signature_covers_raw_bytes() -> None:
    import json

    reserialised = json.dumps(json.loads(BODY), indent=2).encode()
    signature = independent_signature(SECRET, BODY)
    assert verify_signature(reserialised, signature, [SigningToken("tok1", SECRET)]) is None


@pytest.mark.parametrize("template", [" {sig} ", "\t{sig}\n", "{sig}\r\n", "  {sig}"])
def test_whitespace_around_the_header_is_ignored(template: str) -> None:
    token = SigningToken("tok1", SECRET)
    header = template.format(sig=independent_signature(SECRET, BODY))
    assert verify_signature(BODY, header, [token]) is token


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_or_empty_header_is_rejected(header: str | None) -> None:
    assert verify_signature(BODY, header, [SigningToken("tok1", SECRET)]) is None


def test_no_tokens_rejects_even_a_well_formed_signature() -> None:
    assert verify_signature(BODY, independent_signature(SECRET, BODY), []) is None


@pytest.mark.parametrize(
    "header",
    [
        hmac.new(SECRET.encode(), BODY, hashlib.sha1).hexdigest(),  # hex instead of base64
        "sha1=" + independent_signature(SECRET, BODY),  # GitHub-style prefix
        independent_signature(SECRET, BODY).rstrip("="),  # padding dropped
        "\u00e9\u00e8\u00ea",  # non-ASCII garbage must not raise
    ],
)
def test_other_encodings_of_the_digest_are_rejected(header: str) -> None:
    assert verify_signature(BODY, header, [SigningToken("tok1", SECRET)]) is None


def test_signing_token_repr_and_str_hide_the_secret() -> None:
    token = SigningToken("tok1a2b3c4d", SECRET)
    for text in (repr(token), str(token), f"{token}", repr([token]), repr((token,))):
        assert SECRET not in text
        assert "tok1a2b3c4d" in text
