"""Attacks found in review, kept as tests: each must stay a clean 4xx with an entry."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import jwt

from sandbox.runtime import Runtime
from tests.sandbox.conftest import AUDIENCE, REGISTRY_MANIFEST, REGISTRY_ROWS, Caller, error_code


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_lone_surrogate_issuer_cannot_break_the_audit_log(enterprise: Caller, rt: Runtime) -> None:
    token = (
        b64(b'{"alg":"EdDSA","typ":"pds-call+jwt","kid":"k"}')
        + "."
        + b64(b'{"iss":"\\ud800","jti":"\\udfff"}')
        + ".AAAA"
    )
    before = rt.audit.size()
    bad = enterprise.get("/v1/products", token=token)
    assert bad.status_code == 401 and int(bad.headers["X-Audit-Index"]) == before
    good = enterprise.get("/v1/products")
    assert good.status_code == 200 and int(good.headers["X-Audit-Index"]) == before + 1


def test_lone_surrogates_in_bodies_are_refused_and_nothing_is_written(
    operator: Caller, rt: Runtime
) -> None:
    body = (
        json.dumps(REGISTRY_MANIFEST)
        .replace('"Enterprise registrations"', '"bad \\ud800 title"')
        .encode()
    )
    resp = operator.call("POST", "/v1/products", body=body, content_type="application/json")
    assert resp.status_code == 400 and error_code(resp) == "invalid_request"
    assert rt.catalogue.products() == []
    assert operator.get("/v1/products").status_code == 200


def _scope(operator: Caller) -> None:
    operator.post("/v1/products", REGISTRY_MANIFEST)
    operator.call(
        "PUT",
        "/v1/products/enterprise_registry/data",
        body=REGISTRY_ROWS.encode(),
        content_type="text/csv",
    )
    resp = operator.post(
        "/v1/scopes",
        {
            "id": "sc",
            "enterprise": "ent-acme",
            "product": "enterprise_registry",
            "purpose": "x",
            "operations": {"aggregate": {"columns": ["registered_capital"]}},
            "epsilon": 1,
            "rate_per_minute": 100,
            "daily_quota": 100,
            "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": "2099-01-01T00:00:00Z",
        },
    )
    assert resp.status_code == 201


def test_hostile_literals_and_times(
    operator: Caller, enterprise: Caller, regulator: Caller
) -> None:
    _scope(operator)
    for sql in (
        "SELECT COUNT(*) FROM enterprise_registry WHERE registered_capital > " + "9" * 5000,
        "SELECT COUNT(*) FROM enterprise_registry WHERE registered_capital > 1 -- \ud800",
    ):
        body = json.dumps({"scope": "sc", "sql": sql, "epsilon": 0.1}).encode()
        resp = enterprise.call("POST", "/v1/queries", body=body, content_type="application/json")
        assert resp.status_code == 400, resp.get_json()
    for when in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        resp = operator.post(
            "/v1/scopes",
            {
                "id": "sc2",
                "enterprise": "ent-acme",
                "product": "enterprise_registry",
                "purpose": "x",
                "operations": {"verify": []},
                "epsilon": 1,
                "rate_per_minute": 1,
                "daily_quota": 1,
                "valid_from": when,
                "valid_until": "2099-01-01T00:00:00Z" if when.startswith("0") else when,
            },
        )
        assert resp.status_code == 400, resp.get_json()
    for query in (
        "from=0001-01-01T00:00:00%2B01:00",
        "to=9999-12-31T23:59:59-01:00",
        "cursor=100000000000000000000",
        "limit=99999999999999999999",
    ):
        resp = regulator.get(f"/v1/audit/entries?{query}")
        assert resp.status_code == 400, (query, resp.get_json())


def test_uploads_are_not_stored_before_the_caller_is_known(
    operator: Caller, enterprise: Caller, rt: Runtime
) -> None:
    operator.post("/v1/products", REGISTRY_MANIFEST)
    uploads = rt.settings.products_dir / ".uploads"
    anonymous = operator.client.put(
        "/v1/products/enterprise_registry/data",
        data=REGISTRY_ROWS.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert anonymous.status_code == 401
    wrong_role = enterprise.call(
        "PUT",
        "/v1/products/enterprise_registry/data",
        body=REGISTRY_ROWS.encode(),
        content_type="text/csv",
    )
    assert wrong_role.status_code == 403
    assert not uploads.exists() or not any(uploads.iterdir())
    tampered = operator.call(
        "PUT",
        "/v1/products/enterprise_registry/data",
        body=REGISTRY_ROWS.encode() + b"U9,x,A,active,1\n",
        sign_body=REGISTRY_ROWS.encode(),
        content_type="text/csv",
    )
    assert (
        tampered.status_code == 401
        and tampered.get_json()["error"]["details"]["reason"] == "bh_mismatch"
    )
    assert rt.catalogue.get("enterprise_registry").current is None
    assert not any(uploads.iterdir())


def test_refused_calls_are_recorded_under_the_endpoint_action(
    operator: Caller, regulator: Caller
) -> None:
    resp = operator.post("/v1/queries", {"scope": "x", "sql": "SELECT 1", "epsilon": 1})
    assert resp.status_code == 403
    entry = regulator.get(
        f"/v1/audit/entries?cursor={resp.headers['X-Audit-Index']}&limit=1"
    ).get_json()["entries"][0]["entry"]
    assert entry["action"] == "query.aggregate" and entry["decision"] == "deny"
    bad_json = operator.call("POST", "/v1/scopes", body=b"{", content_type="application/json")
    entry = regulator.get(
        f"/v1/audit/entries?cursor={bad_json.headers['X-Audit-Index']}&limit=1"
    ).get_json()["entries"][0]["entry"]
    assert entry["action"] == "scope.grant"


def test_audience_must_be_the_platform_or_an_array_holding_it(enterprise: Caller) -> None:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "ent-acme",
        "aud": [AUDIENCE, "other"],
        "jti": "a1",
        "htm": "GET",
        "htu": "/v1/products",
        "bh": b64(hashlib.sha256(b"").digest()),
        "iat": now,
        "exp": now + 60,
    }
    token = jwt.encode(
        claims,
        enterprise.private_pem,
        algorithm="EdDSA",
        headers={"kid": enterprise.kid, "typ": "pds-call+jwt"},
    )
    # RFC 7519 §4.1.3: an array containing the platform's audience is addressed to it.
    assert enterprise.get("/v1/products", token=token).status_code == 200
    claims.update(aud=["other", "more"], jti="a2")
    token = jwt.encode(
        claims,
        enterprise.private_pem,
        algorithm="EdDSA",
        headers={"kid": enterprise.kid, "typ": "pds-call+jwt"},
    )
    resp = enterprise.get("/v1/products", token=token)
    assert (
        resp.status_code == 401
        and resp.get_json()["error"]["details"]["reason"] == "wrong_audience"
    )


def test_nul_characters_are_refused_at_the_edge(
    operator: Caller, enterprise: Caller, rt: Runtime
) -> None:
    # PostgreSQL text refuses NUL; one such string in a group-commit batch would fail
    # every caller's entry in it, so no NUL gets past the edge.
    token = (
        b64(b'{"alg":"EdDSA","typ":"pds-call+jwt","kid":"k"}')
        + "."
        + b64(b'{"iss":"ent-acme\\u0000","jti":"\\u0000"}')
        + ".AAAA"
    )
    bad = enterprise.get("/v1/products", token=token)
    assert bad.status_code == 401
    entry = rt.audit.entries(limit=1000).entries[-1].entry
    assert entry["actor"] == "anonymous"
    body = json.dumps(REGISTRY_MANIFEST).replace('"Enterprise registrations"', '"a\\u0000b"')
    resp = operator.call(
        "POST", "/v1/products", body=body.encode(), content_type="application/json"
    )
    assert resp.status_code == 400 and error_code(resp) == "invalid_request"
    assert rt.catalogue.products() == []


def test_nul_characters_in_paths_and_queries_are_refused(
    operator: Caller, regulator: Caller
) -> None:
    # On PostgreSQL such a value used as a query parameter was a 500 (DataError).
    for caller, path in (
        (operator, "/v1/scopes/sc%00x"),
        (operator, "/v1/principals/ent%00x"),
        (regulator, "/v1/audit/entries?actor=a%00b"),
    ):
        resp = caller.get(path)
        assert resp.status_code == 400 and error_code(resp) == "invalid_request", path
        assert resp.headers["X-Audit-Index"]


# --- found by fuzzing every endpoint (2026-12-02): each was a 500 ----------------------


def _post_raw(caller: Caller, path: str, body: bytes) -> Any:
    return caller.call("POST", path, body=body, content_type="application/json")


def test_unreadable_numbers_and_deep_nesting_in_bodies(operator: Caller, rt: Runtime) -> None:
    before = rt.audit.size()
    huge = b'{"id": "p", "max_rows_per_unit": ' + b"9" * 5000 + b"}"
    deep_objects = b'{"a": ' * 400 + b"1" + b"}" * 400
    deep_arrays = b'{"columns": ' + b"[" * 1200 + b"]" * 1200 + b"}"
    for body in (huge, deep_objects, deep_arrays):
        resp = _post_raw(operator, "/v1/products", body)
        assert resp.status_code == 400 and error_code(resp) == "invalid_request", resp.data[:200]
        assert "X-Audit-Index" in resp.headers
    assert rt.audit.size() == before + 3
    assert operator.get("/v1/products").get_json()["products"] == []


def test_numbers_beyond_the_column_range_are_refused(operator: Caller) -> None:
    manifest = json.loads(json.dumps(REGISTRY_MANIFEST))
    capital = manifest["columns"][-1]
    for change in (
        {"bins": [0, 10**400]},  # float: beyond a double
        {"bounds": [0, 10**400]},
        {"bounds": [0, 1.7976931348623157e308]},  # finite, but noise scales overflow
        {"bounds": [0, 5e-324]},
    ):
        manifest["columns"][-1] = {**capital, **change}
        resp = operator.post("/v1/products", manifest)
        assert resp.status_code == 400 and error_code(resp) == "invalid_request", change
    manifest["columns"][-1] = {**capital, "type": "integer", "bounds": [0, 10**400]}
    resp = operator.post("/v1/products", manifest)
    assert resp.status_code == 400, resp.get_json()
    # The refused manifest left nothing behind: the catalogue still answers.
    listed = operator.get("/v1/products")
    assert listed.status_code == 200 and listed.get_json()["products"] == []
    manifest["columns"][-1] = {**capital, "bounds": [-1e100, 1e100]}
    assert operator.post("/v1/products", manifest).status_code == 201


def test_a_manifest_stored_under_earlier_rules_stays_readable(
    operator: Caller, enterprise: Caller, rt: Runtime
) -> None:
    # Registration rules may tighten; a product registered before must still be listed
    # and described (the catalogue re-reads stored manifests), not fail the catalogue.
    assert operator.post("/v1/products", REGISTRY_MANIFEST).status_code == 201
    old = json.loads(json.dumps(REGISTRY_MANIFEST))
    old["columns"][-1]["bounds"] = [0, 1e200]  # refused for new products now
    old["columns"].append({"name": "_draw", "type": "string", "classification": "attribute"})
    with rt.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE products SET manifest = ? WHERE id = 'enterprise_registry'",
            (json.dumps(old),),
        )
    assert operator.post("/v1/products", {**old, "id": "again"}).status_code == 400
    for path in ("/v1/products", "/v1/products/enterprise_registry"):
        resp = enterprise.get(path)
        assert resp.status_code == 200, resp.get_json()


def test_reserved_and_newline_terminated_names_are_refused(operator: Caller) -> None:
    resp = operator.post("/v1/products", {**REGISTRY_MANIFEST, "id": "registry\n"})
    assert resp.status_code == 400
    for name in ("_unit_rank", "_unit_key", "_draw", "capital\n"):
        manifest = json.loads(json.dumps(REGISTRY_MANIFEST))
        manifest["columns"].append(
            {"name": name, "type": "integer", "classification": "attribute", "bounds": [0, 9]}
        )
        resp = operator.post("/v1/products", manifest)
        assert resp.status_code == 400 and error_code(resp) == "invalid_request", name
    manifest = json.loads(json.dumps(REGISTRY_MANIFEST))
    manifest["columns"].append({"name": "_source", "type": "string", "classification": "attribute"})
    assert operator.post("/v1/products", manifest).status_code == 201


def test_deeply_nested_sql_and_huge_quantile_exponents(
    operator: Caller, enterprise: Caller
) -> None:
    _scope(operator)
    for sql, code in (
        (
            "SELECT COUNT(*) FROM enterprise_registry WHERE "
            + "(" * 300
            + "registered_capital > 1"
            + ")" * 300,
            "invalid_sql",
        ),
        (
            "SELECT COUNT(*) FROM enterprise_registry WHERE "
            + "NOT " * 300
            + "registered_capital > 1",
            "invalid_sql",
        ),
        # Each took minutes of CPU before (a 10**99999999 denominator).
        ("SELECT QUANTILE_CONT(registered_capital, 1e-99999999) FROM enterprise_registry", None),
        ("SELECT QUANTILE_CONT(registered_capital, 1e99999999) FROM enterprise_registry", None),
    ):
        for path in ("/v1/queries/preview", "/v1/queries"):
            resp = enterprise.post(path, {"scope": "sc", "sql": sql, "epsilon": 0.1})
            assert resp.status_code == 400, (sql[:60], resp.get_json())
            if code:
                assert error_code(resp) == code
