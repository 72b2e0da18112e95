"""The OpenAPI document and the parsers agree: the document is written from the schemas
that parse each request (``@blp.arguments``), so what it says is required, closed or
typed is exactly what the server refuses."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from sandbox.api.permissions import ENDPOINTS
from sandbox.api.schemas import Error
from tests.sandbox.conftest import Caller

UNSIGNED = {"/v1/health", "/v1/keys", "/v1/docs"}


@pytest.fixture
def doc(app: Flask) -> dict[str, Any]:
    spec: dict[str, Any] = app.test_client().get("/v1/openapi.json").get_json()
    return spec


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if method in ("get", "post", "put", "delete")
    ]


def component(doc: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    name = ref["$ref"].rsplit("/", 1)[-1]
    schema: dict[str, Any] = doc["components"]["schemas"][name]
    return schema


def caller_for(app: Flask, path: str, method: str, callers: dict[str, Caller]) -> Caller:
    """A caller of a role the endpoint table lets in (the parser runs only for it)."""
    for rule in app.url_map.iter_rules():
        if rule.rule.replace("<", "{").replace(">", "}") == path and method in rule.methods:
            roles, _ = ENDPOINTS[rule.endpoint]
            for role in ("operator", "enterprise", "regulator"):
                if any(r.value == role for r in roles):
                    return callers[role]
    raise AssertionError(f"no route for {method} {path}")


def concrete(path: str) -> str:
    return (
        path.replace("{vp_id}", "vp")
        .replace("{scope_id}", "sc")
        .replace("{principal_id}", "p")
        .replace("{product_id}", "prod")
    )


def test_every_route_is_documented_and_every_signed_one_is_in_the_role_table(
    app: Flask, doc: dict[str, Any]
) -> None:
    documented = {(m, p) for m, p, _ in operations(doc)}
    for rule in app.url_map.iter_rules():
        # The console is a browser edge with its own sign-in (docs/console.md), not the
        # /v1 API this document describes.
        if rule.endpoint in ("static", "api-docs.openapi_json", "favicon"):
            continue
        if rule.endpoint.startswith("console."):
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (method, path) in documented, (method, path)
            if path not in UNSIGNED:
                assert rule.endpoint in ENDPOINTS, rule.endpoint


def test_errors_are_documented_with_the_design_error_body(doc: dict[str, Any]) -> None:
    default = doc["components"]["responses"]["DEFAULT_ERROR"]
    assert default["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    for method, path, op in operations(doc):
        assert "422" not in op["responses"], (method, path)  # DESIGN §5 has no 422
        parsed = "requestBody" in op or any(p["in"] == "query" for p in op.get("parameters", []))
        upload = (method, path) == ("PUT", "/v1/products/{product_id}/data")
        if parsed and path not in UNSIGNED and not upload:
            assert "400" in op["responses"], (method, path)


def test_required_and_unknown_fields_are_what_the_parsers_refuse(
    app: Flask, doc: dict[str, Any], operator: Caller, enterprise: Caller, regulator: Caller
) -> None:
    callers = {"operator": operator, "enterprise": enterprise, "regulator": regulator}
    checked = 0
    for method, path, op in operations(doc):
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body is None:
            continue
        schema = component(doc, body["schema"])
        who = caller_for(app, path, method, callers)
        required = sorted(schema.get("required", []))
        empty = who.call(method, concrete(path), json_body={})
        if required:
            assert empty.status_code == 400, (path, empty.get_json())
            assert Error().validate(empty.get_json()) == {}
            fields = empty.get_json()["error"]["details"]["fields"]
            assert sorted(fields) == required, (path, fields)
        assert schema.get("additionalProperties") is False, path
        extra = who.call(method, concrete(path), json_body={"not_a_field": 1})
        assert extra.status_code == 400, path
        assert "not_a_field" in extra.get_json()["error"]["details"]["fields"], path
        checked += 1
    assert checked >= 12


def test_query_parameters_are_what_the_parsers_read(
    doc: dict[str, Any], operator: Caller, enterprise: Caller, regulator: Caller
) -> None:
    callers = {"operator": operator, "enterprise": enterprise, "regulator": regulator}
    checked = 0
    for method, path, op in operations(doc):
        params = [p for p in op.get("parameters", []) if p["in"] == "query"]
        if not params:
            continue
        who = regulator if path.startswith("/v1/audit") else callers["operator"]
        for p in params:
            if p["schema"].get("type") != "integer":
                continue
            resp = who.call(method, f"{concrete(path)}?{p['name']}=not-a-number")
            assert resp.status_code == 400, (path, p["name"], resp.get_json())
            assert p["name"] in resp.get_json()["error"]["details"]["fields"]
            checked += 1
        unknown = who.call(method, f"{concrete(path)}?surprise=1")
        assert unknown.status_code == 400, (path, unknown.get_json())
    assert checked >= 8
