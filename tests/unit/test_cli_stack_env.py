"""The CLI finds a running local stack through the ``stack.env`` it wrote."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from callpipe.cli import load_stack_env


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("CALLPIPE_STATE_DIR", "ENVIRONMENT", "STACK_TEST_A", "STACK_TEST_B"):
        monkeypatch.delenv(name, raising=False)
    yield
    for name in ("STACK_TEST_A", "STACK_TEST_B"):  # set by the code under test, not monkeypatch
        os.environ.pop(name, None)


def write_env(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stack.env").write_text("STACK_TEST_A=from-file\nSTACK_TEST_B=from-file\n")


def test_the_state_folder_of_the_repository_is_read_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env(tmp_path / ".local")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STACK_TEST_B", "already-set")
    load_stack_env()
    assert os.environ["STACK_TEST_A"] == "from-file"
    assert os.environ["STACK_TEST_B"] == "already-set"  # the environment wins


def test_a_moved_state_folder_is_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_env(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALLPIPE_STATE_DIR", str(tmp_path / "elsewhere"))
    load_stack_env()
    assert os.environ["STACK_TEST_A"] == "from-file"


def test_production_never_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_env(tmp_path / ".local")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENVIRONMENT", "production")
    load_stack_env()
    assert "STACK_TEST_A" not in os.environ
