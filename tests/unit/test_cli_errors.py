"""One line for a failed Google Cloud call, with a hint when a local emulator is the one
not answering."""

from __future__ import annotations

import pytest
from google.api_core.exceptions import NotFound, RetryError, ServiceUnavailable
from google.auth.exceptions import DefaultCredentialsError

from callpipe.cli.common import cloud_error_message


def test_an_emulator_that_does_not_answer_gets_the_hint_to_start_the_stack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:8999")
    refused = ServiceUnavailable("failed to connect to all addresses")
    for error in (RetryError("Timeout of 15.0s exceeded", refused), refused):
        message = cloud_error_message(error)
        assert message is not None and message.endswith("is the local stack running (`make run`)?")
    # a real answer from the emulator is not about the stack being down
    assert "make run" not in (cloud_error_message(NotFound("no topic")) or "")


def test_without_emulators_there_is_no_stack_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PUBSUB_EMULATOR_HOST", "SPANNER_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    message = cloud_error_message(ServiceUnavailable("backend"))
    assert message is not None and "make run" not in message
    credentials = cloud_error_message(DefaultCredentialsError("none"))
    assert credentials is not None and "gcloud auth" in credentials
    assert cloud_error_message(ValueError("a bug")) is None
