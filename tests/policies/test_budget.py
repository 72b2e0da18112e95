"""The budget ledger (DESIGN §2.3): exact, reusable for identical queries, never overdrawn."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from policies.budget import BudgetLedger, Release
from policies.errors import BudgetExhausted
from policies.principals import Principal, PrincipalStore, Role, generate_keypair, parse_key
from policies.scopes import ScopeStore, parse_grant
from products.catalogue import Catalogue
from products.errors import InvalidRequest
from products.manifest import parse_manifest
from products.transactions import read_then_write
from tests.policies.conftest import FakeClock

PRODUCT = parse_manifest(
    {
        "id": "p",
        "title": "P",
        "privacy_unit": "u",
        "max_rows_per_unit": 1,
        "columns": [
            {"name": "u", "type": "string", "classification": "identifier"},
            {"name": "x", "type": "integer", "classification": "sensitive", "bounds": [0, 10]},
        ],
    }
)


@pytest.fixture
def scopes(engine: Engine, clock: FakeClock) -> ScopeStore:
    principal = Principal(
        "ent",
        Role.ENTERPRISE,
        "E",
        (parse_key({"public_key": generate_keypair()[1].decode()}),),
        clock(),
    )
    with engine.begin() as conn:
        Catalogue.register(conn, PRODUCT, "op", clock())
        PrincipalStore.add(conn, principal, None)
    return ScopeStore(engine, clock)


def grant(scopes: ScopeStore, engine: Engine, scope_id: str, epsilon: str, per_query: str) -> None:
    g = parse_grant(
        {
            "id": scope_id,
            "enterprise": "ent",
            "product": "p",
            "purpose": "test",
            "operations": {"aggregate": {"columns": ["x"]}},
            "epsilon": epsilon,
            "max_epsilon_per_query": per_query,
            "rate_per_minute": 10,
            "daily_quota": 10,
            "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": "2027-01-01T00:00:00Z",
        },
        product_of={"p": PRODUCT}.get,
        enterprise_exists=lambda e: True,
        verification_product_of=lambda v: None,
    )
    with engine.begin() as conn:
        assert ScopeStore.grant(conn, g, "op", datetime(2026, 6, 1, tzinfo=UTC)) is not None


def charge(
    engine: Engine, key: str, epsilon: str, answer: dict[str, Any], index: int = 0
) -> Release:
    """One charge in a transaction of its own, as a call's commit makes it."""
    with read_then_write(engine) as conn:
        return BudgetLedger.charge(
            conn,
            scope_id="s",
            query_key=key,
            epsilon=Decimal(epsilon),
            delta=Decimal(0),
            answer=answer,
            request_id=None,
            audit_index=index,
            now=datetime(2026, 6, 1, tzinfo=UTC),
        )


def test_charges_are_exact_decimals(scopes: ScopeStore, engine: Engine, clock: FakeClock) -> None:
    grant(scopes, engine, "s", "1", "1")
    ledger = BudgetLedger(engine, clock)
    for i in range(10):
        charge(engine, f"q{i}", "0.1", {"i": i}, index=i)
    assert ledger.budget("s").spent == Decimal(1) and ledger.budget("s").remaining == 0
    with pytest.raises(BudgetExhausted) as exc:
        charge(engine, "q-last", "0.000000001", {})
    assert exc.value.details["budget"]["remaining"] == 0.0
    assert [c["audit_index"] for c in ledger.charges("s")] == list(range(10))


def test_identical_query_reuses_the_answer_without_charge(
    scopes: ScopeStore, engine: Engine, clock: FakeClock
) -> None:
    grant(scopes, engine, "s", "1", "1")
    ledger = BudgetLedger(engine, clock)
    first = charge(engine, "same", "0.6", {"noisy": 41.7})
    again = charge(engine, "same", "0.6", {"noisy": 99.0})
    assert (first.reused, again.reused) == (False, True)
    assert again.answer == {"noisy": 41.7} and again.charged == 0
    assert ledger.budget("s").spent == Decimal("0.6")
    assert [c["epsilon"] for c in ledger.charges("s")] == ["0.6"]


def test_per_query_cap_and_early_refusal(scopes: ScopeStore, engine: Engine) -> None:
    grant(scopes, engine, "s", "2", "0.5")
    with pytest.raises(InvalidRequest, match="max_epsilon_per_query"):
        scopes.get("s").check_affordable(Decimal("0.6"))
    scopes.get("s").check_affordable(Decimal("0.5"))
    charge(engine, "a", "0.5", {})
    charge(engine, "b", "0.5", {})
    charge(engine, "c", "0.5", {})
    scopes.get("s").check_affordable(Decimal("0.5"))
    charge(engine, "d", "0.5", {})
    with pytest.raises(BudgetExhausted):
        scopes.get("s").check_affordable(Decimal("0.000000001"))


@pytest.mark.parametrize(("n", "k"), [(24, 5)])
def test_concurrent_charges_never_overdraw(
    scopes: ScopeStore, engine: Engine, clock: FakeClock, n: int, k: int
) -> None:
    """N parallel distinct queries against a budget for K < N: exactly K succeed."""
    grant(scopes, engine, "s", str(k), "1")
    ledger = BudgetLedger(engine, clock)
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait()
        try:
            charge(engine, f"q{i}", "1", {"i": i})
            result = "ok"
        except BudgetExhausted:
            result = "exhausted"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == k and outcomes.count("exhausted") == n - k
    assert ledger.budget("s").spent == Decimal(k)
    assert len(ledger.charges("s")) == k
