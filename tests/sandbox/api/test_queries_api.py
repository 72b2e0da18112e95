"""DP queries over HTTP (DESIGN §5, §8): answers, previews, budget, refusals, receipts."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from audit.entry import result_hash
from audit.receipts import check_receipt
from policies.scopes import ScopeStatus
from sandbox.actions import queries, scopes
from sandbox.actions.call import Caller as CallContext
from sandbox.actions.call import commit
from sandbox.actions.queries import QueryRequest
from sandbox.runtime import Runtime
from tests.sandbox.conftest import (
    REGISTRY_MANIFEST,
    REGISTRY_ROWS,
    Caller,
    error_code,
    local,
    store_refuses_entries,
)

COUNT_BY_DISTRICT = (
    "SELECT district, COUNT(*) AS n, SUM(registered_capital) AS capital "
    "FROM enterprise_registry GROUP BY district ORDER BY district"
)


@pytest.fixture
def scope(operator: Caller, enterprise: Caller) -> str:
    assert operator.post("/v1/products", REGISTRY_MANIFEST).status_code == 201
    assert (
        operator.call(
            "PUT",
            "/v1/products/enterprise_registry/data",
            body=REGISTRY_ROWS.encode(),
            content_type="text/csv",
        ).status_code
        == 200
    )
    resp = operator.post(
        "/v1/scopes",
        {
            "id": "sc-q",
            "enterprise": "ent-acme",
            "product": "enterprise_registry",
            "purpose": "market study",
            "operations": {"aggregate": {"columns": ["district", "status", "registered_capital"]}},
            "epsilon": 3,
            "max_epsilon_per_query": 1,
            "rate_per_minute": 1000,
            "daily_quota": 100000,
            "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": "2099-01-01T00:00:00Z",
        },
    )
    assert resp.status_code == 201, resp.get_json()
    return "sc-q"


def query(enterprise: Caller, sql: str, epsilon: Any = 0.5, scope: str = "sc-q") -> Any:
    return enterprise.post("/v1/queries", {"scope": scope, "sql": sql, "epsilon": epsilon})


def test_answer_shape_receipt_and_audit(
    scope: str, enterprise: Caller, regulator: Caller, rt: Runtime
) -> None:
    resp = query(enterprise, COUNT_BY_DISTRICT)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["columns"] == ["district", "n", "capital"]
    # Every public key in order, and NULL: the column is nullable, so NULL is a key too.
    assert [r[0] for r in body["rows"]] == ["A", "B", "C", None]
    assert body["epsilon_spent"] == 0.5
    assert body["budget"] == {"epsilon": 3.0, "spent": 0.5, "remaining": 2.5}
    assert {a["column"] for a in body["accuracy"]} == {"n", "capital"}
    jwks = enterprise.client.get("/v1/keys").get_json()
    claims = check_receipt(body["receipt"], jwks)
    index = int(resp.headers["X-Audit-Index"])
    assert claims["audit_index"] == index
    assert claims["result_hash"] == result_hash({k: v for k, v in body.items() if k != "receipt"})
    entry = regulator.get(f"/v1/audit/entries?cursor={index}&limit=1").get_json()["entries"][0][
        "entry"
    ]
    assert entry["action"] == "query.aggregate" and entry["epsilon"] == "0.5"
    assert entry["target"] == {"scope": "sc-q", "product": "enterprise_registry"}
    assert len(entry["sql_hash"]) == 64 and len(entry["rewritten_sql_hash"]) == 64
    assert entry["sql_hash"] != entry["rewritten_sql_hash"]
    assert entry["product_version"] == 1 and entry["result_hash"] == claims["result_hash"]
    charges = regulator.get("/v1/scopes/sc-q/charges").get_json()["charges"]
    assert [(c["epsilon"], c["delta"], c["audit_index"]) for c in charges] == [("0.5", "0", index)]


def test_no_raw_values_in_answers(scope: str, enterprise: Caller) -> None:
    text = query(enterprise, COUNT_BY_DISTRICT).get_data(as_text=True)
    assert "U0001" not in text and "Firm" not in text
    rows = json.loads(text)["rows"]
    assert all(isinstance(r[1], int) and isinstance(r[2], float) for r in rows)


def test_preview_spends_nothing(scope: str, enterprise: Caller, rt: Runtime) -> None:
    resp = enterprise.post(
        "/v1/queries/preview", {"scope": "sc-q", "sql": COUNT_BY_DISTRICT, "epsilon": 1}
    )
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["epsilon"] == 1.0 and [a["column"] for a in body["accuracy"]] == ["n", "capital"]
    assert all(a["ci95"] > 0 for a in body["accuracy"])
    assert rt.scopes.get("sc-q").spent_nano == 0


def test_identical_query_is_answered_again_without_charge(scope: str, enterprise: Caller) -> None:
    first = query(enterprise, COUNT_BY_DISTRICT).get_json()
    again = query(enterprise, COUNT_BY_DISTRICT.replace("SELECT", "select")).get_json()
    assert again["rows"] == first["rows"] and again["epsilon_spent"] == 0.0
    assert again["budget"]["spent"] == 0.5


def test_budget_is_never_overdrawn(scope: str, enterprise: Caller) -> None:
    for i in range(3):
        ok = query(
            enterprise,
            f"SELECT COUNT(*) FROM enterprise_registry WHERE registered_capital > {i}",
            epsilon=1,
        )
        assert ok.status_code == 200, ok.get_json()
    over = query(enterprise, "SELECT COUNT(*) FROM enterprise_registry", epsilon=0.001)
    assert over.status_code == 403 and error_code(over) == "budget_exhausted"
    assert over.get_json()["error"]["details"]["budget"]["remaining"] == 0.0


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ("SELECT uscc FROM enterprise_registry", "unsupported_query"),
        ("SELECT * FROM enterprise_registry", "unsupported_query"),
        ("SELECT uscc, COUNT(*) FROM enterprise_registry GROUP BY uscc", "column_not_allowed"),
        ("SELECT name, COUNT(*) FROM enterprise_registry GROUP BY name", "column_not_allowed"),
        ("SELECT COUNT(*) FROM enterprise_registry WHERE colour = 'red'", "unknown_column"),
        ("SELECT COUNT(*) FROM enterprise_registry; DROP TABLE x", "invalid_sql"),
        ("SELEC COUNT(*) FROM enterprise_registry", "invalid_sql"),
        ("SELECT COUNT(*) FROM read_csv('/etc/passwd')", "unsupported_query"),
    ],
)
def test_refusals_name_the_rule(
    scope: str, enterprise: Caller, rt: Runtime, sql: str, code: str
) -> None:
    resp = query(enterprise, sql)
    assert resp.status_code == 400 and error_code(resp) == code, resp.get_json()
    assert len(resp.get_json()["error"]["message"]) > 20
    assert rt.scopes.get("sc-q").spent_nano == 0


def test_scope_rules(
    scope: str, operator: Caller, enterprise: Caller, app: Any, rt: Runtime
) -> None:
    too_much = query(enterprise, COUNT_BY_DISTRICT, epsilon=1.5)
    assert too_much.status_code == 400 and error_code(too_much) == "invalid_request"
    assert "epsilon" in too_much.get_json()["error"]["details"]["fields"]
    for bad in (0, -1, "x", None):
        assert query(enterprise, COUNT_BY_DISTRICT, epsilon=bad).status_code == 400
    not_mine = query(enterprise, COUNT_BY_DISTRICT, scope="sc-none")
    assert not_mine.status_code == 404
    operator.post("/v1/scopes/sc-q/suspend")
    assert error_code(query(enterprise, COUNT_BY_DISTRICT)) == "scope_suspended"
    operator.post("/v1/scopes/sc-q/revoke")
    assert error_code(query(enterprise, COUNT_BY_DISTRICT)) == "scope_revoked"
    assert error_code(operator.post("/v1/queries", {})) == "forbidden"


def test_verify_only_scope_cannot_query(operator: Caller, enterprise: Caller, scope: str) -> None:
    resp = operator.post(
        "/v1/scopes",
        {
            "id": "sc-v",
            "enterprise": "ent-acme",
            "product": "enterprise_registry",
            "purpose": "kyc",
            "operations": {"aggregate": {"columns": ["district"], "functions": ["count"]}},
            "epsilon": 1,
            "rate_per_minute": 10,
            "daily_quota": 10,
            "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": "2099-01-01T00:00:00Z",
        },
    )
    assert resp.status_code == 201
    summed = query(
        enterprise, "SELECT SUM(registered_capital) FROM enterprise_registry", scope="sc-v"
    )
    assert error_code(summed) in ("operation_not_allowed", "column_not_allowed")


def test_rate_limit_counts_refused_calls(operator: Caller, enterprise: Caller, scope: str) -> None:
    operator.post(
        "/v1/scopes",
        {
            "id": "sc-r",
            "enterprise": "ent-acme",
            "product": "enterprise_registry",
            "purpose": "x",
            "operations": {"aggregate": {"columns": ["district"]}},
            "epsilon": 1,
            "rate_per_minute": 2,
            "daily_quota": 100,
            "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": "2099-01-01T00:00:00Z",
        },
    )
    assert query(enterprise, "SELECT bad", scope="sc-r").status_code == 400
    assert query(enterprise, "SELECT bad", scope="sc-r").status_code == 400
    limited = query(enterprise, COUNT_BY_DISTRICT, scope="sc-r")
    assert limited.status_code == 429 and error_code(limited) == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


def test_sample_is_synthetic(scope: str, enterprise: Caller) -> None:
    resp = enterprise.get("/v1/products/enterprise_registry/sample?n=20")
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["columns"] == ["uscc", "name", "district", "status", "registered_capital"]
    assert len(body["rows"]) == 20
    real = set(REGISTRY_ROWS.split())
    assert not any(",".join(map(str, r)) in real for r in body["rows"])
    assert enterprise.get("/v1/products/enterprise_registry/sample?n=x").status_code == 400
    assert enterprise.get("/v1/products/enterprise_registry/sample?n=99999999").status_code == 400


def test_unknown_keys_spend_delta_and_delta_is_never_overdrawn(
    operator: Caller, enterprise: Caller, rt: Runtime
) -> None:
    manifest = {
        "id": "shops",
        "title": "Shops",
        "privacy_unit": "shop",
        "max_rows_per_unit": 1,
        "columns": [
            {"name": "shop", "type": "string", "classification": "identifier"},
            {"name": "street", "type": "string", "classification": "attribute", "group_by": True},
        ],
    }
    assert operator.post("/v1/products", manifest).status_code == 201
    rows = "shop,street\n" + "".join(f"S{i},{'Main' if i % 2 else 'High'} St\n" for i in range(400))
    operator.call("PUT", "/v1/products/shops/data", body=rows.encode(), content_type="text/csv")
    grant = {
        "id": "sc-d",
        "enterprise": "ent-acme",
        "product": "shops",
        "purpose": "streets",
        "operations": {"aggregate": {"columns": ["street"]}},
        "epsilon": 10,
        "delta": 1e-6,
        "max_epsilon_per_query": 1,
        "rate_per_minute": 100,
        "daily_quota": 100,
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2099-01-01T00:00:00Z",
    }
    assert operator.post("/v1/scopes", grant).status_code == 201
    sql = "SELECT street, COUNT(*) FROM shops GROUP BY street"
    first = enterprise.post(
        "/v1/queries", {"scope": "sc-d", "sql": sql, "epsilon": 1, "delta": 6e-7}
    )
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["budget"]["delta_spent"] == 6e-7
    assert sorted(r[0] for r in first.get_json()["rows"]) == ["High St", "Main St"]
    second = enterprise.post(
        "/v1/queries", {"scope": "sc-d", "sql": sql, "epsilon": 0.5, "delta": 6e-7}
    )
    assert second.status_code == 403 and error_code(second) == "budget_exhausted"
    rest = enterprise.post(
        "/v1/queries", {"scope": "sc-d", "sql": sql + " ORDER BY 1", "epsilon": 0.5, "delta": 4e-7}
    )
    assert rest.status_code == 200, rest.get_json()
    # The scope's delta is spent: a query that needs some is a budget refusal (403), not
    # a rule about the column (which a scope granted no delta at all gets, below).
    spent = enterprise.post("/v1/queries", {"scope": "sc-d", "sql": sql, "epsilon": 0.25})
    assert spent.status_code == 403 and error_code(spent) == "budget_exhausted"
    no_delta_scope = dict(grant, id="sc-nd", delta=0)
    assert operator.post("/v1/scopes", no_delta_scope).status_code == 201
    refused = enterprise.post("/v1/queries", {"scope": "sc-nd", "sql": sql, "epsilon": 1})
    assert refused.status_code == 400 and error_code(refused) == "column_not_allowed"
    assert rt.scopes.get("sc-d").delta_spent_atto == 1_000_000_000_000


def test_a_charge_commits_only_with_its_entry(
    scope: str, enterprise: Caller, operator: Caller, rt: Runtime
) -> None:
    # While the store refuses the entry, no answer leaves, and no budget is spent nor
    # any release stored.
    with store_refuses_entries(rt, "query.aggregate"):
        failed = query(enterprise, COUNT_BY_DISTRICT)
    assert failed.status_code == 503 and error_code(failed) == "unavailable"
    assert operator.get("/v1/scopes/sc-q").get_json()["budget"]["spent"] == 0.0
    assert operator.get("/v1/scopes/sc-q/charges").get_json()["charges"] == []
    done = query(enterprise, COUNT_BY_DISTRICT)
    assert done.status_code == 200 and done.get_json()["epsilon_spent"] == 0.5  # not a reuse
    charges = operator.get("/v1/scopes/sc-q/charges").get_json()["charges"]
    assert [c["audit_index"] for c in charges] == [int(done.headers["X-Audit-Index"])]


def test_what_others_did_before_the_commit_decides_the_answer(
    scope: str, enterprise: Caller, rt: Runtime
) -> None:
    ent = rt.principals.get("ent-acme")

    def req(sql: str, epsilon: str = "0.5") -> QueryRequest:
        return QueryRequest("sc-q", sql, Decimal(epsilon))

    # 1. An identical query was released meanwhile: its answer is sent, nothing charged.
    mine = queries.run_query(rt, ent, req(COUNT_BY_DISTRICT))
    theirs = local(rt, queries.run_query(rt, ent, req(COUNT_BY_DISTRICT)))
    outcome = commit(rt, CallContext.local("test"), mine)
    assert outcome.body is not None and theirs.body is not None
    assert outcome.body["rows"] == theirs.body["rows"] and outcome.body["epsilon_spent"] == 0.0
    entry = rt.audit.entries(limit=1000).entries[-1].entry
    assert (entry["epsilon"], entry["reused"]) == ("0", True)
    assert entry["result_hash"] == result_hash(outcome.body)
    assert rt.ledger.budget("sc-q").spent == Decimal("0.5")  # the other release's charge only
    # 2. Others spent the budget meanwhile: refused, nothing charged or stored.
    late = queries.run_query(rt, ent, req(COUNT_BY_DISTRICT + " LIMIT 3"))
    for n in range(5):
        local(rt, queries.run_query(rt, ent, req(f"{COUNT_BY_DISTRICT} LIMIT {10 + n}")))
    outcome = commit(rt, CallContext.local("test"), late)
    assert outcome.error is not None and (outcome.status, outcome.error.code) == (
        403,
        "budget_exhausted",
    )
    entry = rt.audit.entries(limit=1000).entries[-1].entry
    assert (entry["decision"], entry["epsilon"]) == ("deny", "0")
    assert rt.ledger.budget("sc-q").spent == Decimal("3")
    assert len(rt.ledger.charges("sc-q")) == 6
    # 3. The scope was revoked meanwhile: refused, nothing charged or stored.
    after = queries.run_query(rt, ent, req(COUNT_BY_DISTRICT, "0.1"))
    local(rt, scopes.transition(rt, "sc-q", ScopeStatus.REVOKED, None))
    outcome = commit(rt, CallContext.local("test"), after)
    assert outcome.error is not None and outcome.error.code == "scope_revoked"
    assert len(rt.ledger.charges("sc-q")) == 6


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


def test_a_scope_grants_counts_and_histograms_separately(
    operator: Caller, enterprise: Caller
) -> None:
    # A count-only scope may not run histograms (binned counts), and a histogram-only
    # scope may run them but not plain counts.
    manifest = {
        "id": "firms",
        "title": "Firms",
        "privacy_unit": "firm",
        "max_rows_per_unit": 1,
        "columns": [
            {"name": "firm", "type": "string", "classification": "identifier"},
            {"name": "district", "type": "string", "classification": "attribute",
             "public_values": ["A", "B"]},
            {"name": "staff", "type": "integer", "classification": "sensitive",
             "bounds": [0, 100], "bins": [0, 10, 50, 100]},
        ],
    }  # fmt: skip
    assert operator.post("/v1/products", manifest).status_code == 201
    rows = "firm,district,staff\n" + "".join(f"F{i},{'AB'[i % 2]},{i % 90}\n" for i in range(200))
    operator.call("PUT", "/v1/products/firms/data", body=rows.encode(), content_type="text/csv")
    base = {
        "enterprise": "ent-acme",
        "product": "firms",
        "purpose": "x",
        "epsilon": 1,
        "rate_per_minute": 100,
        "daily_quota": 100,
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2099-01-01T00:00:00Z",
    }
    for sid, functions in (("sc-count", ["count"]), ("sc-hist", ["histogram"])):
        ops = {"aggregate": {"columns": ["district", "staff"], "functions": functions}}
        assert (
            operator.post("/v1/scopes", {**base, "id": sid, "operations": ops}).status_code == 201
        )
    histogram = "SELECT BIN(staff) AS band, COUNT(*) AS n FROM firms GROUP BY band"
    count = "SELECT district, COUNT(*) AS n FROM firms GROUP BY district"
    refused = query(enterprise, histogram, 0.1, "sc-count")
    assert refused.status_code == 403 and error_code(refused) == "operation_not_allowed"
    assert query(enterprise, count, 0.1, "sc-count").status_code == 200
    assert query(enterprise, histogram, 0.1, "sc-hist").status_code == 200
    assert error_code(query(enterprise, count, 0.1, "sc-hist")) == "operation_not_allowed"


def test_stored_releases_are_bounded_in_size_and_time(
    scope: str, enterprise: Caller, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every distinct answer was stored for ever: three queries grew the store by 25 MB.
    first = query(enterprise, COUNT_BY_DISTRICT)
    assert first.status_code == 200
    assert query(enterprise, COUNT_BY_DISTRICT).get_json()["epsilon_spent"] == 0.0  # reused
    # Past the retention the release is forgotten: the same query is a new release,
    # charged again, so repeating it still costs what it reveals.
    later = rt.clock() + timedelta(days=rt.settings.release_retention_days + 1)
    monkeypatch.setattr(rt, "clock", lambda: later)
    rt.sweep()
    monkeypatch.undo()
    again = query(enterprise, COUNT_BY_DISTRICT)
    assert again.status_code == 200 and again.get_json()["epsilon_spent"] == 0.5
    assert len(rt.ledger.charges("sc-q")) == 2
    # A release over the size bound is refused whatever its epsilon, and not charged.
    small = dataclasses.replace(rt.settings, max_release_bytes=100)
    monkeypatch.setattr(rt, "settings", small)
    big = query(enterprise, COUNT_BY_DISTRICT + " LIMIT 2")
    assert big.status_code == 413 and big.get_json()["error"]["details"]["rule"] == (
        "max_release_bytes"
    )
    assert len(rt.ledger.charges("sc-q")) == 2
