"""Every failure is a JSON error with a DESIGN §5 code; never HTML, never a 500."""

from __future__ import annotations

from flask import Flask

from sandbox.runtime import Runtime
from tests.sandbox.conftest import REGISTRY_MANIFEST, Caller, error_code


def test_health_and_keys_are_unsigned_and_unaudited(app: Flask, rt: Runtime) -> None:
    c = app.test_client()
    before = rt.audit.size()
    health = c.get("/v1/health")
    assert health.status_code == 200 and health.get_json() == {"status": "ok"}
    keys = c.get("/v1/keys").get_json()
    assert keys["keys"][0]["kid"] == rt.keys.current.kid
    assert keys["keys"][0]["crv"] == "Ed25519" and "d" not in keys["keys"][0]
    assert "X-Audit-Index" not in health.headers
    assert rt.audit.size() == before


def test_unsigned_call_is_refused_and_audited(app: Flask, rt: Runtime) -> None:
    resp = app.test_client().get("/v1/products")
    assert resp.status_code == 401 and error_code(resp) == "unauthenticated"
    assert resp.is_json and int(resp.headers["X-Audit-Index"]) == rt.audit.size() - 1


def test_unknown_path_is_json_404_and_audited(operator: Caller) -> None:
    resp = operator.get("/v1/nothing-here")
    assert resp.status_code == 404 and error_code(resp) == "not_found"
    assert "X-Audit-Index" in resp.headers
    anon = operator.client.get("/nope")
    assert anon.status_code == 401 and anon.is_json


def test_wrong_method_is_json_405(operator: Caller) -> None:
    resp = operator.call("DELETE", "/v1/products")
    assert resp.status_code == 405 and error_code(resp) == "method_not_allowed"


def test_malformed_json_and_wrong_type(operator: Caller) -> None:
    bad = operator.call("POST", "/v1/products", body=b'{"id": ', content_type="application/json")
    assert bad.status_code == 400 and error_code(bad) == "invalid_request"
    text = operator.call("POST", "/v1/products", body=b"id=x", content_type="text/plain")
    # DESIGN §5 has no 415: a wrong Content-Type is a 400 invalid_request.
    assert text.status_code == 400 and error_code(text) == "invalid_request"
    array = operator.call("POST", "/v1/products", body=b"[1]", content_type="application/json")
    assert array.status_code == 400
    binary = operator.call(
        "POST", "/v1/products", body=b"\xff\xfe", content_type="application/json"
    )
    assert binary.status_code == 400


def test_oversized_json_is_413_and_nothing_is_written(operator: Caller, rt: Runtime) -> None:
    manifest = dict(REGISTRY_MANIFEST, description="x" * (rt.settings.max_json_bytes + 10))
    resp = operator.post("/v1/products", manifest)
    assert resp.status_code == 413 and error_code(resp) == "too_large"
    assert rt.catalogue.products() == []


def test_errors_never_leak_html(operator: Caller) -> None:
    for resp in (operator.get("/v1/products/%00"), operator.get("/v1/products/" + "a" * 5000)):
        assert resp.is_json and resp.status_code < 500
