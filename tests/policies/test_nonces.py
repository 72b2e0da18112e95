"""The replay guard: each (issuer, jti) is accepted once, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from policies.nonces import PRUNE_MARGIN, NonceStore
from tests.policies.conftest import FakeClock


@pytest.fixture
def nonces(engine: Engine, clock: FakeClock) -> NonceStore:
    return NonceStore(engine, clock)


def claim(engine: Engine, issuer: str, jti: str, expires: datetime) -> bool:
    with engine.begin() as conn:
        return NonceStore.claim(conn, issuer, jti, expires)


def test_claim_accepts_a_nonce_once(engine: Engine, clock: FakeClock) -> None:
    later = clock.now + timedelta(minutes=5)
    assert claim(engine, "ent-a", "n1", later) is True
    assert claim(engine, "ent-a", "n1", later) is False
    # The guard is per issuer: another principal may use the same jti.
    assert claim(engine, "ent-b", "n1", later) is True


def test_a_claim_in_one_transaction_is_a_replay_in_the_same_one(
    engine: Engine, clock: FakeClock
) -> None:
    later = clock.now + timedelta(minutes=5)
    with engine.begin() as conn:
        assert NonceStore.claim(conn, "ent-a", "twice", later)
        assert not NonceStore.claim(conn, "ent-a", "twice", later)


def test_a_rolled_back_claim_claims_nothing(
    engine: Engine, nonces: NonceStore, clock: FakeClock
) -> None:
    later = clock.now + timedelta(minutes=5)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        assert NonceStore.claim(conn, "ent-a", "n1", later)
        raise RuntimeError("the audit append failed")
    assert not nonces.seen("ent-a", "n1")
    assert claim(engine, "ent-a", "n1", later)
    assert nonces.seen("ent-a", "n1")


def test_prune_forgets_nonces_only_a_margin_after_their_window(
    engine: Engine, nonces: NonceStore, clock: FakeClock
) -> None:
    assert claim(engine, "ent-a", "old", clock.now + timedelta(seconds=10))
    assert claim(engine, "ent-a", "new", clock.now + timedelta(minutes=10))
    clock.now += timedelta(minutes=1)
    assert nonces.prune() == 0  # past its window, but within the margin
    clock.now += PRUNE_MARGIN
    assert nonces.prune() == 1
    assert claim(engine, "ent-a", "new", clock.now + timedelta(minutes=10)) is False
