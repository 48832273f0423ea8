"""Validation of the identifiers that end up in object paths, row keys and log lines.

An id that could escape its ``tenants/<tenant_id>/`` prefix (slashes, dots, control
characters) is refused at the boundary instead of being sanitised later.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_TENANT_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_RESOURCE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# CallRail's numeric ids (account, legacy company): the Spanner columns hold 32 characters.
_NUMERIC_ID = re.compile(r"^[0-9]{1,32}$")


class InvalidIdentifier(ValueError):
    pass


def check_tenant_id(value: str) -> str:
    if not _TENANT_ID.fullmatch(value):
        raise InvalidIdentifier(
            f"invalid tenant id {value!r}: use 1-63 lowercase letters, digits and inner hyphens"
        )
    return value


def is_resource_id(value: str) -> bool:
    return _RESOURCE_ID.fullmatch(value) is not None


def check_resource_id(value: str) -> str:
    if not is_resource_id(value):
        raise InvalidIdentifier(f"invalid id {value[:80]!r}: use 1-64 letters, digits, '_' or '-'")
    return value


def check_numeric_id(value: str, what: str) -> str:
    if not _NUMERIC_ID.fullmatch(value):
        raise InvalidIdentifier(f"invalid {what} {value[:80]!r}: use 1-32 digits")
    return value


TenantId = Annotated[str, AfterValidator(check_tenant_id)]
ResourceId = Annotated[str, AfterValidator(check_resource_id)]
