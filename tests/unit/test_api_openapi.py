"""schemas/openapi.yaml describes exactly the API that callpipe.api.app implements."""

from __future__ import annotations

import re
import typing
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from callpipe.api.analytics import aggregate
from callpipe.api.app import ROUTES, Route
from callpipe.api.queries import _FIELD_NAMES, ATTRIBUTION, DETAIL_COLUMNS, SUMMARY_COLUMNS
from tests.conftest import REPO

SPEC: dict[str, Any] = yaml.safe_load((REPO / "schemas/openapi.yaml").read_text())


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = SPEC["paths"][route.template][route.method.lower()]
    return op


def test_paths_and_methods_are_the_route_table() -> None:
    documented = {(path, method.upper()) for path, item in SPEC["paths"].items() for method in item}
    assert documented == {(r.template, r.method) for r in ROUTES}
    assert {operation(r)["operationId"] for r in ROUTES} == {r.name for r in ROUTES}


def test_only_health_is_unauthenticated() -> None:
    for route in ROUTES:
        public = operation(route).get("security") == []
        assert public == (not route.authenticated), route.template


def test_every_authenticated_operation_documents_the_errors_the_api_answers() -> None:
    """400 parameters, 401 token, 404 not the caller's, 503 a backing service down: a
    client generated from the spec must know each as a typed error."""
    for route in ROUTES:
        if route.authenticated:
            responses = operation(route)["responses"]
            assert {"200", "400", "401", "404", "503"} <= set(responses), route.template


def _query_fields(model: type[BaseModel]) -> dict[str, Any]:
    return {(f.alias or name): f for name, f in model.model_fields.items()}


def _enum_values(annotation: Any) -> set[str] | None:
    for arg in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(arg) is typing.Literal:
            return set(typing.get_args(arg))
        if isinstance(arg, type) and issubclass(arg, Enum):
            return {member.value for member in arg}
    return None


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.template}")
def test_parameters_match_the_models(route: Route) -> None:
    parameters = [resolve(p) for p in operation(route).get("parameters", [])]
    path_names = set(re.findall(r"\{(\w+)\}", route.template))
    assert {p["name"] for p in parameters if p["in"] == "path"} == path_names
    assert all(p["required"] for p in parameters if p["in"] == "path")

    fields = _query_fields(route.params)
    documented = {p["name"]: p for p in parameters if p["in"] == "query"}
    assert set(documented) == set(fields)
    for name, field in fields.items():
        schema = resolve(documented[name]["schema"])
        assert documented[name]["required"] == field.is_required(), name
        values = _enum_values(field.annotation)
        if values is not None:
            assert set(schema["enum"]) == values, name
        bounds = {type(m).__name__: m for m in field.metadata}
        if "Ge" in bounds:
            assert schema["minimum"] == bounds["Ge"].ge, name
        if "Le" in bounds:
            assert schema["maximum"] == bounds["Le"].le, name
        if field.default is not None:
            assert schema.get("default") == field.default, name


def _properties(schema_name: str) -> set[str]:
    return set(SPEC["components"]["schemas"][schema_name]["properties"])


def test_response_models_match_what_the_handlers_build() -> None:
    summary = {_FIELD_NAMES[c] for c in SUMMARY_COLUMNS}
    assert _properties("RequestSummary") == summary
    # The detail drops the internal storage URI and adds the stages and links.
    detail = {_FIELD_NAMES[c] for c in DETAIL_COLUMNS} - {"recording_uri"}
    assert _properties("RequestDetail") == detail | {"stages", "links", "attribution"}
    attribution = SPEC["components"]["schemas"]["RequestDetail"]["properties"]["attribution"]
    assert set(attribution["properties"]) == set(ATTRIBUTION)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    analytics = aggregate("t", start, start + timedelta(days=2), [])
    assert _properties("Analytics") == set(analytics)
    assert set(SPEC["components"]["schemas"]["Analytics"]["required"]) == set(analytics)
