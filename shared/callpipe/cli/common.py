"""What the CLI commands share: settings, adapters, output helpers."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer

from callpipe.config import Settings


def settings() -> Settings:
    return Settings()


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def info(message: str) -> None:
    typer.secho(message, err=True, fg=typer.colors.BRIGHT_BLACK)
