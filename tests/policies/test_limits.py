"""Rate limits and daily quotas: counted in the store, refused calls included."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from policies.errors import QuotaExceeded, RateLimited, ScopeExpired, ScopeRevoked, ScopeSuspended
from policies.limits import RateLimiter
from policies.scopes import Scope, ScopeStatus, ScopeStore, parse_grant
from products.manifest import parse_manifest
from tests.policies.conftest import FakeClock, move_scope, seed, store_grant

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
    seed(engine, clock, PRODUCT, "ent")
    grant = parse_grant(
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
    )
    store_grant(engine, grant, clock())
    return ScopeStore(engine, clock)


def count(engine: Engine, scope: Scope, clock: FakeClock, n: int = 1) -> None:
    """Count ``n`` calls in a transaction of their own; raise the refusal, if any."""
    with engine.begin() as conn:
        refusal = RateLimiter.admit(conn, scope, n, clock())
    if refusal is not None:
        raise refusal


def test_rate_then_quota(scope: ScopeStore, engine: Engine, clock: FakeClock) -> None:
    s = scope.get("s")
    for _ in range(3):
        count(engine, s, clock)
    with pytest.raises(RateLimited) as rate:
        count(engine, s, clock)
    assert 1 <= rate.value.retry_after <= 60
    clock.now += timedelta(minutes=1)
    count(engine, s, clock)  # 5th call of the day: the refused 4th counted too
    with pytest.raises(QuotaExceeded) as quota:
        count(engine, s, clock)
    assert quota.value.retry_after > 60
    clock.now += timedelta(days=1)
    count(engine, s, clock)


def test_batches_count_each_item(scope: ScopeStore, engine: Engine, clock: FakeClock) -> None:
    with pytest.raises(RateLimited):
        count(engine, scope.get("s"), clock, n=4)


def test_old_windows_are_pruned(scope: ScopeStore, engine: Engine, clock: FakeClock) -> None:
    count(engine, scope.get("s"), clock)
    limiter = RateLimiter(engine, clock)
    assert limiter.prune() == 0
    clock.now += timedelta(days=3)
    assert limiter.prune() == 2  # the minute and the day window


def test_admission_also_reads_the_scope_status_as_stored_now(
    scope: ScopeStore, engine: Engine, clock: FakeClock
) -> None:
    s = scope.get("s")  # read while active: a cached copy, say
    count(engine, s, clock)
    assert move_scope(engine, "s", ScopeStatus.SUSPENDED, [ScopeStatus.ACTIVE])
    with pytest.raises(ScopeSuspended):
        count(engine, s, clock)
    assert move_scope(engine, "s", ScopeStatus.REVOKED, [ScopeStatus.SUSPENDED])
    with pytest.raises(ScopeRevoked):
        count(engine, s, clock)
    clock.now = s.valid_until  # a rate refusal would come first, so move to a new minute
    with pytest.raises((ScopeRevoked, ScopeExpired)):
        count(engine, s, clock)
