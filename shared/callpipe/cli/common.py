"""What the CLI commands share: settings, adapters, output helpers."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NoReturn

import typer

from callpipe.config import Settings
from callpipe.errors import headline

_EMULATOR_HOSTS = ("PUBSUB_EMULATOR_HOST", "SPANNER_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")


def settings() -> Settings:
    return Settings()


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def cloud_error_message(error: BaseException) -> str | None:
    """One line for an error of a Google client (API call, retries, credentials), else None.

    Their messages hold resource names and the service's reason, never the values written.
    """
    from google.api_core.exceptions import GoogleAPIError, RetryError, ServiceUnavailable
    from google.auth.exceptions import GoogleAuthError

    detail = headline(error)
    if isinstance(error, GoogleAuthError):
        return (
            f"no usable Google credentials ({error.__class__.__name__}: {detail}); "
            "run `gcloud auth application-default login`, or point the CLI at the local stack"
        )
    if isinstance(error, GoogleAPIError):
        hint = ""
        if isinstance(error, RetryError | ServiceUnavailable) and any(
            os.environ.get(name) for name in _EMULATOR_HOSTS
        ):
            hint = "; is the local stack running (`make run`)?"
        return f"a Google Cloud request failed ({error.__class__.__name__}): {detail}{hint}"
    return None


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def info(message: str) -> None:
    typer.secho(message, err=True, fg=typer.colors.BRIGHT_BLACK)


_AGE = re.compile(r"(\d+)\s*([mhd])")
_AGE_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def moment_option(text: str, option: str, end_of_day: bool = False) -> datetime:
    """A time given on the command line: a date (YYYY-MM-DD, a UTC day), an ISO 8601 time
    (UTC unless it says), or an age before now ("90m", "24h", "7d")."""
    age = _AGE.fullmatch(text.strip())
    if age:
        return datetime.now(UTC) - timedelta(**{_AGE_UNITS[age[2]]: int(age[1])})
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day, time.max if end_of_day else time.min, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(
            f"{option} {text!r} is neither a date (YYYY-MM-DD), an ISO 8601 time nor an age "
            "(90m, 24h, 7d)"
        )
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
