"""The replay guard: each (issuer, jti) is accepted once, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from policies.nonces import PRUNE_MARGIN, NonceStore
from tests.policies.conftest import FakeClock


@pytest.fixture
def nonces(engine: Engine, clock: FakeClock) -> NonceStore:
    return NonceStore(engine, clock)


def test_claim_accepts_a_nonce_once(nonces: NonceStore, clock: FakeClock) -> None:
    later = clock.now + timedelta(minutes=5)
    assert nonces.claim("ent-a", "n1", later) is True
    assert nonces.claim("ent-a", "n1", later) is False
    # The guard is per issuer: another principal may use the same jti.
    assert nonces.claim("ent-b", "n1", later) is True


def test_claim_in_answers_each_claim_in_order(
    engine: Engine, nonces: NonceStore, clock: FakeClock
) -> None:
    later = clock.now + timedelta(minutes=5)
    assert nonces.claim("ent-a", "seen", later)
    claims = [
        ("ent-a", "fresh-1", later),
        ("ent-a", "seen", later),  # recorded before: a replay
        ("ent-b", "seen", later),  # same jti, other issuer: fresh
        ("ent-a", "fresh-1", later),  # twice in one batch: only the first is fresh
        ("ent-a", "fresh-2", later),
    ]
    with engine.begin() as conn:
        assert NonceStore.claim_in(conn, claims) == [True, False, True, False, True]
    # Committed: every one of them is now a replay.
    with engine.begin() as conn:
        assert NonceStore.claim_in(conn, claims) == [False] * len(claims)


def test_claim_in_rolled_back_claims_nothing(engine: Engine, clock: FakeClock) -> None:
    later = clock.now + timedelta(minutes=5)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        assert NonceStore.claim_in(conn, [("ent-a", "n1", later)]) == [True]
        raise RuntimeError("the audit append failed")
    with engine.begin() as conn:
        assert NonceStore.claim_in(conn, [("ent-a", "n1", later)]) == [True]


def test_claim_in_of_nothing_is_nothing(engine: Engine) -> None:
    with engine.begin() as conn:
        assert NonceStore.claim_in(conn, []) == []


def test_prune_forgets_nonces_only_a_margin_after_their_window(
    nonces: NonceStore, clock: FakeClock
) -> None:
    assert nonces.claim("ent-a", "old", clock.now + timedelta(seconds=10))
    assert nonces.claim("ent-a", "new", clock.now + timedelta(minutes=10))
    clock.now += timedelta(minutes=1)
    assert nonces.prune() == 0  # past its window, but within the margin
    clock.now += PRUNE_MARGIN
    assert nonces.prune() == 1
    assert nonces.claim("ent-a", "new", clock.now + timedelta(minutes=10)) is False
