"""Faults at every step of a call (sandbox/api/calls.py, sandbox/actions/call.py): never
two entries for one call, never an answer without its entry, and a store or disk that
fails answers 503 ``unavailable`` with ``Retry-After``."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from flask import Flask

from audit.log import StoreError
from policies.budget import BudgetLedger
from products.errors import DomainError
from sandbox.actions import products as products_actions
from sandbox.runtime import Runtime
from tests.sandbox.api.test_queries_api import COUNT_BY_DISTRICT, query, scope  # noqa: F401
from tests.sandbox.conftest import AUDIENCE, REGISTRY_MANIFEST, REGISTRY_ROWS, Caller, error_code


class Boom(RuntimeError):
    """The injected fault."""


def boom(*_: Any, **__: Any) -> Any:
    raise Boom("injected fault")


def store_down(*_: Any, **__: Any) -> Any:
    raise sa.exc.OperationalError("SELECT 1", {}, Exception("could not connect to server"))


def append_fails(*_: Any, **__: Any) -> Any:
    raise StoreError("audit store failed: disk I/O error")


# (step, what fails there, the status a caller gets, whether an entry records the call)
FAULTS: list[tuple[str, Callable[[pytest.MonkeyPatch, Runtime], None], int, bool]] = [
    (
        "in the action: the engine",
        lambda mp, rt: mp.setattr("sandbox.actions.queries.execute", boom),
        500,
        True,
    ),
    (
        "in the action: a store read",
        lambda mp, rt: mp.setattr(rt.ledger, "reused", store_down),
        503,
        True,
    ),
    (
        "at commit: the charge",
        lambda mp, rt: mp.setattr(BudgetLedger, "charge", staticmethod(boom)),
        500,
        True,
    ),
    (
        "at commit: the store under the charge",
        lambda mp, rt: mp.setattr(BudgetLedger, "charge", staticmethod(store_down)),
        503,
        True,
    ),
    (
        "at commit: the append itself",
        lambda mp, rt: mp.setattr(rt.audit, "append", append_fails),
        503,
        False,
    ),
    (
        "after commit: the receipt",
        lambda mp, rt: mp.setattr(rt.keys, "sign_receipt", boom),
        503,
        True,
    ),
]


@pytest.mark.parametrize(
    ("step", "fault", "status", "recorded"), FAULTS, ids=[f[0] for f in FAULTS]
)
def test_a_fault_at_any_step_leaves_one_entry_and_no_answer_without_it(
    scope: str,  # noqa: F811
    enterprise: Caller,
    regulator: Caller,
    rt: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    fault: Callable[[pytest.MonkeyPatch, Runtime], None],
    status: int,
    recorded: bool,
) -> None:
    before = rt.audit.size()
    with monkeypatch.context() as mp:
        fault(mp, rt)
        resp = query(enterprise, COUNT_BY_DISTRICT)
    assert resp.status_code == status, (step, resp.get_json())
    body = resp.get_json()
    assert "rows" not in body and "receipt" not in body, step  # no answer leaves
    if status == 503:
        assert error_code(resp) == "unavailable" and int(resp.headers["Retry-After"]) >= 1
    assert rt.audit.size() == before + (1 if recorded else 0), step  # never two entries
    if recorded:
        index = int(resp.headers["X-Audit-Index"])
        entry = rt.audit.entries(cursor=index, limit=1).entries[0].entry
        assert entry["action"] == "query.aggregate"
    else:
        assert "X-Audit-Index" not in resp.headers
    charges = rt.ledger.charges("sc-q")
    if step == "after commit: the receipt":
        # The answer was released and charged with its entry; its delivery failed. The
        # caller is told which entry holds it, and asking again costs nothing.
        assert [c["audit_index"] for c in charges] == [int(resp.headers["X-Audit-Index"])]
        assert body["error"]["details"] == {"audit_index": charges[0]["audit_index"],
                                            "recorded": True}  # fmt: skip
        again = query(enterprise, COUNT_BY_DISTRICT)
        assert again.status_code == 200 and again.get_json()["epsilon_spent"] == 0.0
    else:
        assert charges == [], step  # nothing released, nothing charged


def test_a_full_disk_during_an_upload_is_unavailable_and_leaves_no_version(
    rt: Runtime, operator: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.sandbox.conftest import REGISTRY_MANIFEST

    assert operator.post("/v1/products", REGISTRY_MANIFEST).status_code == 201

    def full(*_: Any, **__: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(products_actions, "load_file", full)
    resp = operator.call(
        "PUT",
        "/v1/products/enterprise_registry/data",
        body=REGISTRY_ROWS.encode(),
        content_type="text/csv",
    )
    assert resp.status_code == 503 and error_code(resp) == "unavailable"
    assert int(resp.headers["Retry-After"]) >= 1
    assert operator.get("/v1/products/enterprise_registry").get_json()["version"] is None
    staged = list((rt.settings.products_dir / "enterprise_registry").glob("load-*"))
    assert staged == []


def test_domain_errors_raised_anywhere_keep_their_code(
    rt: Runtime, enterprise: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Refusal(DomainError):
        code = "conflict"

    def refuse(*_: Any, **__: Any) -> Any:
        raise Refusal("refused deep inside")

    monkeypatch.setattr(rt.catalogue, "products", refuse)
    resp = enterprise.get("/v1/products")
    assert resp.status_code == 409 and error_code(resp) == "conflict"


# -- the edge: what reaches an action, and what never does ---------------------------


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


def test_a_refusal_before_the_body_is_read_closes_the_connection(
    operator: Caller, rt: Runtime
) -> None:
    # A keep-alive connection whose body was not read would have the rest of that body
    # taken for the next request.
    too_big = operator.post(
        "/v1/products",
        dict(REGISTRY_MANIFEST, description="x" * (rt.settings.max_json_bytes + 10)),
    )
    assert too_big.status_code == 413 and too_big.headers["Connection"] == "close"
    fine = operator.get("/v1/products")
    assert fine.status_code == 200 and "Connection" not in fine.headers


def test_a_browsers_favicon_request_leaves_no_entry(app: Flask, rt: Runtime) -> None:
    before = rt.audit.size()
    assert app.test_client().get("/favicon.ico").status_code == 204
    assert rt.audit.size() == before
