"""Scopes (DESIGN §4, §5): validated grants, visibility, lifecycle, refusal codes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from policies.errors import ScopeExpired, ScopeRevoked, ScopeSuspended
from policies.principals import PrincipalStore, Role, generate_keypair, parse_key
from policies.scopes import ScopeStore, parse_grant
from products.errors import Conflict, InvalidRequest
from products.manifest import DataProduct, parse_manifest
from tests.policies.conftest import FakeClock

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
        ({"extra": 1}, "_schema"),
    ],
)
def test_bad_grants_are_refused_with_field_level_messages(over: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse(grant_request(**over))
    assert field in exc.value.details["fields"], exc.value.details


@pytest.fixture
def store(engine: Engine, clock: FakeClock) -> ScopeStore:
    from products.catalogue import Catalogue

    Catalogue(engine, __import__("pathlib").Path("/nonexistent"), clock).register(PRODUCT, "op")
    PrincipalStore(engine, clock).add(
        "ent-acme",
        Role.ENTERPRISE,
        "ACME",
        [parse_key({"public_key": generate_keypair()[1].decode()})],
        created_by=None,
    )
    return ScopeStore(engine, clock)


def test_lifecycle_suspend_resume_revoke(store: ScopeStore, clock: FakeClock) -> None:
    s = store.grant(parse(grant_request(id="sc1")), "op")
    s.check_usable(clock())
    assert s.to_dict()["budget"] == {"epsilon": 10.0, "spent": 0.0, "remaining": 10.0}
    store.suspend("sc1", "enumeration suspected")
    with pytest.raises(ScopeSuspended):
        store.get("sc1").check_usable(clock())
    store.resume("sc1")
    store.get("sc1").check_usable(clock())
    store.revoke("sc1")
    with pytest.raises(ScopeRevoked):
        store.get("sc1").check_usable(clock())
    with pytest.raises(Conflict):
        store.resume("sc1")
    with pytest.raises(Conflict):
        store.grant(parse(grant_request(id="sc1")), "op")


def test_validity_window(store: ScopeStore, clock: FakeClock) -> None:
    s = store.grant(parse(grant_request(id="sc2")), "op")
    with pytest.raises(ScopeExpired):
        s.check_usable(s.valid_until)
    with pytest.raises(ScopeExpired):
        s.check_usable(s.valid_from - timedelta(seconds=1))


def test_enterprise_listing(store: ScopeStore) -> None:
    store.grant(parse(grant_request(id="sc3")), "op")
    assert [s.id for s in store.list(enterprise="ent-acme")] == ["sc3"]
    assert store.list(enterprise="someone-else") == []
