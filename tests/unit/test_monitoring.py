"""The log-based metrics of terraform/monitoring.tf count the lines the code really writes.

Each metric's filter (Cloud Logging query language, the subset the file uses) is evaluated
against log entries made as Cloud Run makes them from a function's JSON line on stdout:
the line produced here by the code path the metric is about, through callpipe.logs's
formatter. A renamed field or outcome would silently stop an alert; this test fails then.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from callpipe.intake.service import log_outcome
from callpipe.logs import CloudLoggingFormatter
from callpipe.messages import ReconcileRequested
from callpipe.publishing import PublishFailed
from callpipe.reconciling import ReconcileStep
from tests.unit.conftest import (
    TENANT_ID,
    FailingPublisher,
    IntakeHarness,
    RecordingPublisher,
    event_body,
)
from tests.unit.test_reconcile import NOW, CallRail, call, reconciler
from tests.unit.test_terraform import TERRAFORM_DIR, _locals, _parse_dir

_TERM = re.compile(r'^(?P<path>[\w.]+)\s*(?P<op>>=|<=|=|>|<|:)\s*(?P<value>"[^"]*"|[\w.*-]+)$')


def _lookup(entry: dict[str, Any], path: str) -> Any:
    value: Any = entry
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _term(term: str, entry: dict[str, Any]) -> bool:
    found = _TERM.match(term.strip())
    assert found, f"term {term!r} is outside the subset this test evaluates"
    actual = _lookup(entry, found["path"])
    op, raw = found["op"], found["value"]
    if op == ":" and raw == "*":
        return actual is not None
    if op == ":":
        return isinstance(actual, str) and raw.strip('"') in actual
    if raw.startswith('"'):
        return op == "=" and str(actual) == raw.strip('"')
    if not isinstance(actual, int | float):
        return False
    number = float(raw)
    return {
        "=": actual == number,
        ">": actual > number,
        ">=": actual >= number,
        "<": actual < number,
        "<=": actual <= number,
    }[op]


def matches(query: str, entry: dict[str, Any]) -> bool:
    """The entry matches every ``AND``-ed term of ``query``; a term is a comparison (=, >,
    >=, <, <=, :* and :"x") or a parenthesised ``OR`` of comparisons."""
    for term in query.split(" AND "):
        term = term.strip()
        if term.startswith("(") and term.endswith(")"):
            if not any(_term(part, entry) for part in term[1:-1].split(" OR ")):
                return False
        elif not _term(term, entry):
            return False
    return True


def as_cloud_run_entry(line: str) -> dict[str, Any]:
    """What Cloud Logging stores for a JSON line a function printed on stdout."""
    payload = json.loads(line)
    return {
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": "fn"}},
        "logName": "projects/p/logs/run.googleapis.com%2Fstdout",
        "severity": payload.pop("severity"),
        "jsonPayload": payload,
    }


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The entries of every line logged while the test runs, formatted as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(CloudLoggingFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield lambda: [as_cloud_run_entry(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture(scope="module")
def signals() -> dict[str, dict[str, Any]]:
    blocks = _parse_dir(TERRAFORM_DIR)
    return dict(_locals(blocks)["log_signals"])


@pytest.fixture(scope="module")
def metric_filters(signals: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The filters of the signals about the functions' own lines."""
    function_log = _locals(_parse_dir(TERRAFORM_DIR))["function_log"]
    return {
        name: spec["filter"].replace("${local.function_log}", function_log)
        for name, spec in signals.items()
        if "${local.function_log}" in spec["filter"]
    }


def counted(filters: dict[str, str], entries: list[dict[str, Any]]) -> dict[str, int]:
    return {name: sum(matches(query, e) for e in entries) for name, query in filters.items()}


def test_a_webhook_intake_could_not_queue_is_counted_as_failed(
    make_intake: Callable[..., IntakeHarness],
    metric_filters: dict[str, str],
    lines: Callable[[], list[dict[str, Any]]],
) -> None:
    outcome = make_intake(publisher=FailingPublisher()).post(event_body("post_call"))
    assert outcome.status == 503
    log_outcome(outcome, 12.0)
    assert counted(metric_filters, lines()) == {
        "intake_failed": 1,
        "invalid_signature": 0,
        "webhooks_lost": 0,
        "step_gave_up": 0,
        "results_missing": 0,
    }


def test_a_bad_signature_is_counted_only_for_an_onboarded_company(
    harness: IntakeHarness,
    metric_filters: dict[str, str],
    lines: Callable[[], list[dict[str, Any]]],
) -> None:
    known = harness.post(event_body("post_call"), signature="AAAA" + "=" * 24)
    assert (known.status, known.outcome) == (401, "invalid_signature")
    log_outcome(known, 3.0)
    accepted = harness.post(event_body("post_call", resource_id="CAL" + "a" * 32))
    assert accepted.status == 202
    log_outcome(accepted, 3.0)
    assert counted(metric_filters, lines())["invalid_signature"] == 1
    assert counted(metric_filters, lines())["intake_failed"] == 0


def test_a_step_giving_up_is_counted_and_a_retry_is_not(
    metric_filters: dict[str, str], lines: Callable[[], list[dict[str, Any]]]
) -> None:
    from callpipe.messages import CallReceived
    from callpipe.steps import PermanentError, run_step
    from tests.unit.conftest import make_call_received
    from tests.unit.test_steps import push_body

    message = make_call_received()

    def deliver(handler: Callable[[Any], dict[str, Any]], attempt: int | None = None) -> None:
        body = push_body(message.to_data(), message.attributes())
        if attempt is not None:
            body["deliveryAttempt"] = attempt
        run_step(
            "register-call",
            body,
            CallReceived,
            handler,
            RecordingPublisher(),
            "calls.received.dlq",
            max_delivery_attempts=5,
        )

    def permanent(message: Any) -> dict[str, Any]:
        raise PermanentError("unknown_tenant", "no tenant acme-dental")

    def transient(message: Any) -> dict[str, Any]:
        raise ConnectionError("Spanner did not answer")

    deliver(permanent)
    assert counted(metric_filters, lines())["step_gave_up"] == 1
    with pytest.raises(ConnectionError):
        deliver(transient, attempt=3)  # retried: not yet given up
    assert counted(metric_filters, lines())["step_gave_up"] == 1
    with pytest.raises(ConnectionError):
        deliver(transient, attempt=5)  # the last delivery: Pub/Sub dead-letters it
    entries = lines()
    assert counted(metric_filters, entries)["step_gave_up"] == 2
    gave_up = [e for e in entries if matches(metric_filters["step_gave_up"], e)]
    assert {e["jsonPayload"]["call_id"] for e in gave_up} == {message.call_id}


def test_a_call_stored_without_its_transcript_or_analysis_is_counted(
    metric_filters: dict[str, str], lines: Callable[[], list[dict[str, Any]]]
) -> None:
    """Speech-to-Text or Vertex AI refusing (a disabled API answers 403) is no dead letter:
    the call goes on without the result, and only this signal tells."""
    from callpipe.analysis import AnalysisFailed
    from callpipe.messages import CallTranscribed, RecordingsEvent
    from callpipe.steps import run_step
    from callpipe.transcripts import TranscriptionFailed
    from tests.unit.doubles import Progress, Publisher
    from tests.unit.test_steps import push_body
    from tests.unit.test_transcribe_analyze_steps import (
        Analyzer,
        Engine,
        Objects,
        analyze_step,
        stored_event,
        transcribe_step,
        transcribed,
        without_recording,
    )

    def deliver(step: str, message: Any, model: Any, handler: Any) -> None:
        data = message.to_data()
        if isinstance(message, RecordingsEvent):  # as the topic carries it: not the wrapper
            inner = message.stored or message.without
            assert inner is not None
            data = inner.model_dump_json(by_alias=True).encode()
            if message.stored:
                data = json.dumps({"kind": "storage#object", **json.loads(data)}).encode()
        body = push_body(data, message.attributes())
        run_step(step, body, model, handler, Publisher(), f"{step}.dlq", None, 10)

    refused = TranscriptionFailed("403 PERMISSION_DENIED: Speech-to-Text disabled", permanent=True)
    engine, ok = Engine(refused), Engine()
    deliver(
        "transcribe",
        stored_event(),
        RecordingsEvent,
        transcribe_step(engine, Objects(), Progress(), Publisher()),
    )
    deliver(
        "transcribe",
        without_recording(),
        RecordingsEvent,
        transcribe_step(ok, Objects(), Progress(), Publisher()),
    )
    denied = AnalysisFailed("403 PERMISSION_DENIED: Vertex AI API disabled", permanent=True)
    deliver(
        "analyze",
        transcribed(),
        CallTranscribed,
        analyze_step(Analyzer([denied]), Progress(), Publisher()),
    )
    deliver(
        "analyze", transcribed(), CallTranscribed, analyze_step(Analyzer(), Progress(), Publisher())
    )

    entries = lines()
    missing = [e for e in entries if matches(metric_filters["results_missing"], e)]
    assert [e["jsonPayload"]["step"] for e in missing] == ["transcribe", "analyze"]
    outcomes = [e["jsonPayload"]["outcome"] for e in entries if "outcome" in e["jsonPayload"]]
    assert outcomes.count("no_transcript") == 2 and "analyzed" in outcomes  # all four ran
    assert counted(metric_filters, entries)["step_gave_up"] == 0


def test_a_dead_letter_that_could_not_be_made_and_an_undecodable_delivery_are_counted(
    metric_filters: dict[str, str], lines: Callable[[], list[dict[str, Any]]]
) -> None:
    from callpipe.messages import CallReceived
    from callpipe.steps import PermanentError, run_step
    from tests.unit.conftest import FailingPublisher, make_call_received
    from tests.unit.test_steps import push_body

    message = make_call_received()

    def permanent(message: Any) -> dict[str, Any]:
        raise PermanentError("unknown_tenant", "no tenant acme-dental")

    for attempt in (2, 5):  # the DLQ refuses the message: retried, then Pub/Sub's to do
        body = {**push_body(message.to_data(), message.attributes()), "deliveryAttempt": attempt}
        with pytest.raises(PublishFailed):
            run_step(
                "register-call",
                body,
                CallReceived,
                permanent,
                FailingPublisher(),
                "calls.received.dlq",
                max_delivery_attempts=5,
            )
    run_step("register-call", {"no": "message"}, CallReceived, permanent, None, "x")  # type: ignore[arg-type]
    entries = [e for e in lines() if matches(metric_filters["step_gave_up"], e)]
    assert [e["jsonPayload"]["outcome"] for e in entries] == [
        "dead_letter_failed",
        "retries_exhausted",
        "bad_envelope",
    ]


def test_a_reconciliation_that_queued_calls_is_counted_and_one_that_did_not_is_not(
    metric_filters: dict[str, str], lines: Callable[[], list[dict[str, Any]]]
) -> None:
    def run(calls: list[dict[str, Any]]) -> None:
        publisher = RecordingPublisher()
        ReconcileStep(
            lambda: [],
            reconciler(CallRail(calls), publisher=publisher),
            publisher,
            "reconcile.requested",
            lookback=timedelta(hours=48),
            max_calls=200,
            clock=lambda: NOW,
        )(ReconcileRequested(tenant_id=TENANT_ID))

    run([])
    assert counted(metric_filters, lines())["webhooks_lost"] == 0
    run([call("CALlost", timedelta(hours=2))])
    entries = lines()
    assert counted(metric_filters, entries)["webhooks_lost"] == 1
    [lost] = [e for e in entries if matches(metric_filters["webhooks_lost"], e)]
    assert lost["jsonPayload"]["tenant_id"] == TENANT_ID  # the metric's label


def test_the_evaluator_tells_matching_entries_from_others() -> None:
    entry = {"severity": "WARNING", "jsonPayload": {"status": 503, "step": "intake"}}
    assert matches('jsonPayload.step="intake" AND jsonPayload.status>=500', entry)
    assert not matches('jsonPayload.step="api" AND jsonPayload.status>=500', entry)
    assert not matches("jsonPayload.status>503", entry)
    assert not matches("jsonPayload.tenant_id:*", entry)
    assert matches('severity="WARNING"', entry)


def request_entry(status: int, service: str = "intake") -> dict[str, Any]:
    """A Cloud Run request log entry, with the fields its documentation gives."""
    return {
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": service}},
        "logName": "projects/p/logs/run.googleapis.com%2Frequests",
        "severity": "ERROR" if status >= 500 else "INFO",
        "httpRequest": {"requestMethod": "POST", "status": status},
    }


def test_every_refusal_of_a_webhook_reaches_the_intake_unreachable_alert(
    signals: dict[str, dict[str, Any]],
) -> None:
    query = signals["intake_unreachable"]["filter"]
    # Cloud Run's 429 when every instance is busy, a crash's 500, a timeout's 504, our 503
    for status in (429, 500, 503, 504):
        assert matches(query, request_entry(status)), status
    for status in (202, 400, 401, 404, 413):
        assert not matches(query, request_entry(status)), status
    assert not matches(query, request_entry(503, service="api"))


def test_the_signals_someone_must_act_on_have_alerts(signals: dict[str, dict[str, Any]]) -> None:
    alerted = {name for name, spec in signals.items() if spec["alert"]}
    assert alerted == {
        "intake_unreachable",
        "invalid_signature",
        "webhooks_lost",
        "step_gave_up",
        "results_missing",
    }
    for name in alerted:
        assert "callpipe" in signals[name]["alert"]["content"]  # what to do, in the message
