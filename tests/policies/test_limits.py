"""Rate limits and daily quotas: counted in the store, refused calls included."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from policies.errors import QuotaExceeded, RateLimited
from policies.limits import RateLimiter
from policies.principals import PrincipalStore, Role, generate_keypair, parse_key
from policies.scopes import ScopeStore, parse_grant
from products.catalogue import Catalogue
from products.manifest import parse_manifest
from tests.policies.conftest import FakeClock

PRODUCT = parse_manifest(
    {
        "id": "p",
        "title": "P",
        "privacy_unit": "u",
        "max_rows_per_unit": 1,
        "columns": [{"name": "u", "type": "string", "classification": "identifier"}],
    }
)


@pytest.fixture
def scope(engine: Engine, clock: FakeClock) -> ScopeStore:
    Catalogue(engine, Path("/nonexistent"), clock).register(PRODUCT, "op")
    PrincipalStore(engine, clock).add(
        "ent",
        Role.ENTERPRISE,
        "E",
        [parse_key({"public_key": generate_keypair()[1].decode()})],
        created_by=None,
    )
    store = ScopeStore(engine, clock)
    store.grant(
        parse_grant(
            {
                "id": "s",
                "enterprise": "ent",
                "product": "p",
                "purpose": "test",
                "operations": {"verify": []},
                "epsilon": 1,
                "rate_per_minute": 3,
                "daily_quota": 5,
                "valid_from": "2026-01-01T00:00:00Z",
                "valid_until": "2027-01-01T00:00:00Z",
            },
            product_of={"p": PRODUCT}.get,
            enterprise_exists=lambda e: True,
            verification_product_of=lambda v: None,
        ),
        "op",
    )
    return store


def test_rate_then_quota(scope: ScopeStore, engine: Engine, clock: FakeClock) -> None:
    limiter = RateLimiter(engine, clock)
    s = scope.get("s")
    for _ in range(3):
        limiter.count(s)
    with pytest.raises(RateLimited) as rate:
        limiter.count(s)
    assert 1 <= rate.value.retry_after <= 60
    clock.now += timedelta(minutes=1)
    limiter.count(s)  # 5th call of the day: the refused 4th counted too
    with pytest.raises(QuotaExceeded) as quota:
        limiter.count(s)
    assert quota.value.retry_after > 60
    clock.now += timedelta(days=1)
    limiter.count(s)


def test_batches_count_each_item(scope: ScopeStore, engine: Engine, clock: FakeClock) -> None:
    limiter = RateLimiter(engine, clock)
    with pytest.raises(RateLimited):
        limiter.count(scope.get("s"), n=4)
