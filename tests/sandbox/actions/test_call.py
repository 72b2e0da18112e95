"""A call commits with its entry (sandbox/actions/call.py): its nonce, its scope's rate
and quota and the scope's status are decided there, and a call refused there gets the
refusal, never its answer, with an entry that says so."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from audit.entry import result_hash
from policies.calls import sign_call
from policies.scopes import GrantSchema, ScopeStatus, ScopeStore
from products.parsing import parse
from sandbox.actions import scopes
from sandbox.actions.call import Answer, Pending, commit
from sandbox.actions.call import Caller as CallContext
from sandbox.runtime import Runtime
from tests.sandbox.api.test_verifications_api import demo, grant  # noqa: F401  (fixture)
from tests.sandbox.conftest import AUDIENCE, Caller, error_code, local

PATH = "/v1/verifications/enterprise-good-standing"


def _body(rows: dict[str, Any], n: int = 0, scope: str = "sc-kyc") -> dict[str, Any]:
    return {"scope": scope, "subject": {"uscc": rows["enterprise_registry"][n]["uscc"]}}


def _token(caller: Caller, body: bytes) -> str:
    return sign_call(
        caller.private_pem,
        issuer=caller.id,
        kid=caller.kid,
        audience=AUDIENCE,
        method="POST",
        path_and_query=PATH,
        body=body,
    )


def _entry(rt: Runtime, index: int) -> dict[str, Any]:
    return json.loads(rt.audit.leaf(index))  # type: ignore[no-any-return]


def test_a_replayed_verification_is_refused_and_recorded_as_such(
    demo: dict[str, Any],  # noqa: F811
    enterprise: Caller,
    rt: Runtime,
) -> None:
    body = json.dumps(_body(demo)).encode()
    token = _token(enterprise, body)
    first = enterprise.call("POST", PATH, body=body, content_type="application/json", token=token)
    assert first.status_code == 200
    again = enterprise.call("POST", PATH, body=body, content_type="application/json", token=token)
    assert again.status_code == 401
    assert error_code(again) == "replayed"
    assert "match" not in again.get_json() and "receipt" not in again.get_json()
    entry = _entry(rt, int(again.headers["X-Audit-Index"]))
    assert entry["action"] == "auth.refused"
    assert entry["decision"] == "deny"
    assert entry["status"] == 401
    assert entry["reason"].startswith("replayed")
    # The caller can recompute result_hash from exactly what it received.
    assert entry["result_hash"] == result_hash(again.get_json())


def test_one_token_sent_concurrently_is_answered_once(
    demo: dict[str, Any],  # noqa: F811
    enterprise: Caller,
    rt: Runtime,
) -> None:
    # Copies of one token arriving together end up in the same commit batch or in
    # consecutive ones: either way exactly one is answered.
    body = json.dumps(_body(demo, 1)).encode()
    token = _token(enterprise, body)

    def send(_: int) -> int:
        resp = enterprise.client.open(
            PATH,
            method="POST",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        return resp.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(send, range(16)))
    assert statuses == [200] + [401] * 15


def test_a_suspension_by_another_process_applies_to_the_next_call_at_once(
    demo: dict[str, Any],  # noqa: F811
    enterprise: Caller,
    rt: Runtime,
) -> None:
    assert verify_status(enterprise, _body(demo, 2)) == 200  # the scope is now cached here
    # Another process: this process's cache is not told.
    cached = rt.scopes.cached("sc-kyc")
    move(rt, ScopeStatus.SUSPENDED, [ScopeStatus.ACTIVE])
    assert rt.scopes.cached("sc-kyc") is cached
    resp = enterprise.post(PATH, _body(demo, 3))
    assert resp.status_code == 403
    assert error_code(resp) == "scope_suspended"
    entry = _entry(rt, int(resp.headers["X-Audit-Index"]))
    assert (entry["decision"], entry["status"]) == ("deny", 403)
    assert entry["result_hash"] == result_hash(resp.get_json())
    move(rt, ScopeStatus.REVOKED, [ScopeStatus.SUSPENDED])
    resp = enterprise.post(PATH, _body(demo, 3))
    assert error_code(resp) == "scope_revoked"


def move(rt: Runtime, status: ScopeStatus, allowed_from: list[ScopeStatus]) -> None:
    with rt.engine.begin() as conn:
        moved = ScopeStore.set_status(
            conn, "sc-kyc", status, None, allowed_from=allowed_from, now=rt.clock()
        )
    assert moved is not None


def verify_status(caller: Caller, body: dict[str, Any]) -> int:
    return int(caller.post(PATH, body).status_code)


def test_limits_are_decided_at_commit_with_retry_after(
    demo: dict[str, Any],  # noqa: F811
    operator: Caller,
    enterprise: Caller,
    rt: Runtime,
) -> None:
    grant(operator, "sc-tight", "enterprise_registry", ["enterprise-good-standing"],
          rate_per_minute=3)  # fmt: skip

    def send(n: int) -> tuple[int, str | None]:
        resp = enterprise.post(PATH, _body(demo, n, "sc-tight"))
        return resp.status_code, resp.headers.get("Retry-After")

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(send, range(6)))
    assert sorted(s for s, _ in results) == [200, 200, 200, 429, 429, 429]
    assert all(r is not None and int(r) >= 1 for s, r in results if s == 429)
    assert all(r is None for s, r in results if s == 200)


@pytest.mark.parametrize("refusal", ["replayed", "rate_limited"])
def test_a_call_refused_at_commit_leaves_no_probe(
    demo: dict[str, Any],  # noqa: F811
    operator: Caller,
    enterprise: Caller,
    rt: Runtime,
    refusal: str,
) -> None:
    import sqlalchemy as sa

    from sandbox.verification.tables import verification_probes as probes

    grant(operator, "sc-one", "enterprise_registry", ["enterprise-good-standing"],
          rate_per_minute=1)  # fmt: skip
    body = json.dumps(_body(demo, 4, "sc-one")).encode()
    token = _token(enterprise, body)
    assert enterprise.call("POST", PATH, body=body, content_type="application/json",
                           token=token).status_code == 200  # fmt: skip
    if refusal == "replayed":
        resp = enterprise.call("POST", PATH, body=body, content_type="application/json",
                               token=token)  # fmt: skip
    else:
        resp = enterprise.post(PATH, _body(demo, 5, "sc-one"))
    assert error_code(resp) == refusal
    with rt.engine.connect() as conn:
        lookups = conn.execute(
            sa.select(sa.func.sum(probes.c.hits + probes.c.misses)).where(
                probes.c.scope_id == "sc-one"
            )
        ).scalar()
    assert lookups == 1  # only the admitted call was recorded for enumeration detection


def test_a_token_whose_window_ended_before_its_commit_is_refused_unclaimed(
    rt: Runtime, enterprise: Caller
) -> None:
    # Its nonce may have been pruned meanwhile: claiming it afresh would admit a replay.
    principal = rt.principals.get("ent-acme")
    late = CallContext.signed(
        principal,
        jti="j-late",
        nonce_expires_at=rt.clock() - timedelta(seconds=1),
        request_hash="0" * 64,
        client="127.0.0.1",
    )
    outcome = commit(rt, late, Pending("scope.list", answer=Answer({})))
    assert outcome.error is not None and (outcome.status, outcome.error.code) == (
        401,
        "token_expired",
    )
    entry = rt.audit.entries(limit=1000).entries[-1].entry
    assert (entry["action"], entry["decision"]) == ("auth.refused", "deny")
    assert not rt.nonces.seen("ent-acme", "j-late")  # nothing was claimed for it


def test_a_refused_call_changes_nothing_its_change_would_have(
    rt: Runtime, operator: Caller, enterprise: Caller
) -> None:
    from tests.sandbox.api.test_principals_scopes_api import scope_request, setup_product

    setup_product(operator)
    pending = scopes.grant(rt, parse(GrantSchema, scope_request(id="sc-twice"), "s"), "op-city")
    op = rt.principals.get("op-city")
    replayed = CallContext.signed(
        op, jti="j-1", nonce_expires_at=rt.clock() + timedelta(minutes=5),
        request_hash="0" * 64, client=None,
    )  # fmt: skip
    assert commit(rt, replayed, Pending("scope.list", answer=Answer({}))).allowed
    outcome = commit(rt, replayed, pending)  # the same jti again: a replay
    assert outcome.error is not None and outcome.error.code == "replayed"
    assert rt.scopes.list() == []  # the grant was not applied


def test_the_platform_and_local_callers_are_recorded_as_such(rt: Runtime) -> None:
    local(rt, Pending("scope.list", apply=lambda tx: Answer({"ok": True})))
    entry = rt.audit.entries(limit=1000).entries[-1].entry
    assert entry["actor"].startswith("cli:") and entry["role"] == "operator"
    assert entry["jti"] is None and entry["client"].startswith("cli@")
