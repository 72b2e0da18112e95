"""The budget ledger (DESIGN §2.3): exact, reusable for identical queries, never overdrawn."""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from policies.budget import BudgetLedger
from policies.errors import BudgetExhausted, OperationNotAllowed
from policies.principals import PrincipalStore, Role, generate_keypair, parse_key
from policies.scopes import ScopeStore, parse_grant, to_nano
from products.catalogue import Catalogue
from products.manifest import parse_manifest
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
    Catalogue(engine, Path("/nonexistent"), clock).register(PRODUCT, "op")
    PrincipalStore(engine, clock).add(
        "ent",
        Role.ENTERPRISE,
        "E",
        [parse_key({"public_key": generate_keypair()[1].decode()})],
        created_by=None,
    )
    return ScopeStore(engine, clock)


def grant(scopes: ScopeStore, scope_id: str, epsilon: str, per_query: str) -> None:
    scopes.grant(
        parse_grant(
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
        ),
        "op",
    )


def test_charges_are_exact_decimals(scopes: ScopeStore, engine: Engine, clock: FakeClock) -> None:
    grant(scopes, "s", "1", "1")
    ledger = BudgetLedger(engine, clock)
    for i in range(10):
        ledger.release("s", f"q{i}", to_nano(Decimal("0.1")), {"i": i}, None)
    assert ledger.budget("s").spent == Decimal(1) and ledger.budget("s").remaining == 0
    with pytest.raises(BudgetExhausted) as exc:
        ledger.release("s", "q-last", to_nano(Decimal("0.000000001")), {}, None)
    assert exc.value.details["budget"]["remaining"] == 0.0


def test_identical_query_reuses_the_answer_without_charge(
    scopes: ScopeStore, engine: Engine, clock: FakeClock
) -> None:
    grant(scopes, "s", "1", "1")
    ledger = BudgetLedger(engine, clock)
    first = ledger.release("s", "same", to_nano(Decimal("0.6")), {"noisy": 41.7}, "j1")
    again = ledger.release("s", "same", to_nano(Decimal("0.6")), {"noisy": 99.0}, "j2")
    assert (first.reused, again.reused) == (False, True)
    assert again.answer == {"noisy": 41.7} and again.charged_nano == 0
    assert ledger.budget("s").spent == Decimal("0.6")
    assert [c["epsilon"] for c in ledger.charges("s")] == ["0.6"]


def test_per_query_cap_and_early_refusal(
    scopes: ScopeStore, engine: Engine, clock: FakeClock
) -> None:
    grant(scopes, "s", "2", "0.5")
    ledger = BudgetLedger(engine, clock)
    with pytest.raises(OperationNotAllowed):
        ledger.check_affordable(scopes.get("s"), to_nano(Decimal("0.6")))
    ledger.check_affordable(scopes.get("s"), to_nano(Decimal("0.5")))


@pytest.mark.parametrize(("n", "k"), [(24, 5)])
def test_concurrent_charges_never_overdraw(
    scopes: ScopeStore, engine: Engine, clock: FakeClock, n: int, k: int
) -> None:
    """N parallel distinct queries against a budget for K < N: exactly K succeed."""
    grant(scopes, "s", str(k), "1")
    ledger = BudgetLedger(engine, clock)
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait()
        try:
            ledger.release("s", f"q{i}", to_nano(Decimal(1)), {"i": i}, None)
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
