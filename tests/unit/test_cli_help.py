"""`callpipe --help` and each command's help: every paragraph reads as one, unbroken."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
import typer.rich_utils
from typer.testing import CliRunner

from callpipe.cli import app


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, command in getattr(group, "commands", {}).items():
        yield (*path, name), command
        yield from _commands(command, (*path, name))


def _words(text: str) -> str:
    """Text as a reader sees it: markup and line breaks gone, spaces collapsed."""
    return " ".join(re.sub(r"`+", "", text).split())


COMMANDS = dict(_commands(typer.main.get_command(app)))


def test_every_command_is_found() -> None:
    assert {("tenants", "add"), ("calls", "rerun"), ("deploy", "ddl"), ("reconcile",)} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_each_paragraph_of_a_commands_help_is_shown_as_one(
    path: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A docstring's line breaks are where its source wraps, not where the reader's terminal
    does: on a wide terminal each paragraph must come out on one line, and a group's
    listing shows each command's summary whole."""
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 2000)
    command = COMMANDS[path]
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=2000)
    assert result.exit_code == 0, result.output
    lines = [_words(line.strip(" │")) for line in result.output.splitlines()]
    for paragraph in (command.help or "").split("\n\n"):
        assert any(_words(paragraph) in line for line in lines), paragraph
