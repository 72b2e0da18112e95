"""Scopes (DESIGN §4, §5): validated grants, visibility, lifecycle, refusal codes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from policies.errors import ScopeExpired, ScopeRevoked, ScopeSuspended
from policies.scopes import ScopeStatus, ScopeStore, parse_grant
from products.errors import InvalidRequest
from products.manifest import DataProduct, parse_manifest
from tests.policies.conftest import FakeClock, move_scope, seed, store_grant

PRODUCT = parse_manifest(
    {
        "id": "enterprise_registry",
        "title": "Registry",
        "privacy_unit": "uscc",
        "max_rows_per_unit": 1,
        "columns": [
            {"name": "uscc", "type": "string", "classification": "identifier"},
            {
                "name": "district",
                "type": "string",
                "classification": "attribute",
                "public_values": ["A", "B"],
            },
            {
                "name": "registered_capital",
                "type": "float",
                "classification": "sensitive",
                "bounds": [0, 1e8],
            },
        ],
    }
)


def grant_request(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "enterprise": "ent-acme",
        "product": "enterprise_registry",
        "purpose": "loan underwriting",
        "operations": {
            "aggregate": {"columns": ["district", "registered_capital"]},
            "verify": ["enterprise-check"],
        },
        "epsilon": 10.0,
        "delta": 0,
        "max_epsilon_per_query": 1.0,
        "rate_per_minute": 600,
        "daily_quota": 100000,
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2027-01-01T00:00:00Z",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def parse(data: dict[str, Any]) -> Any:
    products: dict[str, DataProduct] = {"enterprise_registry": PRODUCT}
    vps = {"enterprise-check": "enterprise_registry", "other-check": "social_insurance"}
    return parse_grant(
        data,
        product_of=products.get,
        enterprise_exists=lambda p: p == "ent-acme",
        verification_product_of=vps.get,
    )


def test_design_example_is_a_valid_grant() -> None:
    g = parse(grant_request())
    assert g.aggregate_columns == {"district", "registered_capital"}
    assert g.verify == {"enterprise-check"} and str(g.epsilon) == "10.0"


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"product": "nope"}, "product"),
        ({"enterprise": "ghost"}, "enterprise"),
        ({"purpose": "  "}, "purpose"),
        ({"purpose": None}, "purpose"),
        ({"operations": {"aggregate": {"columns": ["colour"]}}}, "operations.aggregate.columns"),
        ({"operations": {"aggregate": {"columns": ["uscc"]}}}, "operations.aggregate.columns"),
        ({"operations": {"verify": ["nope"]}}, "operations.verify"),
        ({"operations": {"verify": ["other-check"]}}, "operations.verify"),
        ({"operations": {"delete": {}}}, "operations"),
        ({"operations": {}}, "operations"),
        ({"epsilon": -1}, "epsilon"),
        ({"epsilon": 0}, "epsilon"),
        ({"epsilon": 1e9}, "epsilon"),
        ({"epsilon": "lots"}, "epsilon"),
        ({"epsilon": True}, "epsilon"),
        ({"epsilon": 0.0000000001}, "epsilon"),
        ({"max_epsilon_per_query": 20}, "max_epsilon_per_query"),
        ({"delta": 0.5}, "delta"),
        ({"delta": -1e-9}, "delta"),
        ({"rate_per_minute": 0}, "rate_per_minute"),
        ({"daily_quota": "many"}, "daily_quota"),
        ({"valid_until": "2025-01-01T00:00:00Z"}, "valid_until"),
        ({"valid_from": "yesterday"}, "valid_from"),
        ({"valid_from": "2026-01-01T00:00:00"}, "valid_from"),
        ({"id": "has spaces"}, "id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_grants_are_refused_with_field_level_messages(over: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse(grant_request(**over))
    assert field in exc.value.details["fields"], exc.value.details


@pytest.fixture
def store(engine: Engine, clock: FakeClock) -> ScopeStore:
    seed(engine, clock, PRODUCT, "ent-acme")
    return ScopeStore(engine, clock)


def test_lifecycle_suspend_resume_revoke(
    store: ScopeStore, engine: Engine, clock: FakeClock
) -> None:
    s = store_grant(engine, parse(grant_request(id="sc1")), clock())
    assert s is not None
    s.check_usable(clock())
    assert s.to_dict()["budget"] == {"epsilon": 10.0, "spent": 0.0, "remaining": 10.0}
    assert move_scope(engine, "sc1", ScopeStatus.SUSPENDED, [ScopeStatus.ACTIVE])
    with pytest.raises(ScopeSuspended):
        store.get("sc1").check_usable(clock())
    assert move_scope(engine, "sc1", ScopeStatus.ACTIVE, [ScopeStatus.SUSPENDED])
    store.get("sc1").check_usable(clock())
    assert move_scope(engine, "sc1", ScopeStatus.REVOKED, [ScopeStatus.ACTIVE])
    with pytest.raises(ScopeRevoked):
        store.get("sc1").check_usable(clock())
    assert move_scope(engine, "sc1", ScopeStatus.ACTIVE, [ScopeStatus.SUSPENDED]) is None
    assert store_grant(engine, parse(grant_request(id="sc1")), clock()) is None  # id taken
    with engine.connect() as conn:
        assert ScopeStore.status(conn, "sc1") == (ScopeStatus.REVOKED, None)
        assert ScopeStore.status(conn, "missing") == (ScopeStatus.REVOKED, None)


def test_validity_window(store: ScopeStore, engine: Engine, clock: FakeClock) -> None:
    s = store_grant(engine, parse(grant_request(id="sc2")), clock())
    assert s is not None
    with pytest.raises(ScopeExpired):
        s.check_usable(s.valid_until)
    with pytest.raises(ScopeExpired):
        s.check_usable(s.valid_from - timedelta(seconds=1))


def test_enterprise_listing(store: ScopeStore, engine: Engine, clock: FakeClock) -> None:
    store_grant(engine, parse(grant_request(id="sc3")), clock())
    assert [s.id for s in store.list(enterprise="ent-acme")] == ["sc3"]
    assert store.list(enterprise="someone-else") == []
