"""Enumeration detection (DESIGN §9): the pure verdict, keyed hashes of subjects, and
the probe counters in the control-plane store (SQLite always; PostgreSQL when
SANDBOX_TEST_DATABASE_URL names a database)."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sandbox.db import create_engine
from sandbox.settings import Settings
from sandbox.verification.codes import make_prc_id
from sandbox.verification.enumeration import (
    EnumerationPolicy,
    Verdict,
    WindowStats,
    assess,
    key_hash,
)
from sandbox.verification.probes import (
    Probe,
    purge_expired,
    record_probes,
    scopes_to_review,
    window_stats,
)
from sandbox.verification.tables import metadata, verification_probes

# 600 s window; flag at 200 keys and 80% unknown, or 100 unknown keys; suspend at 500
# keys or 300 unknown keys.
POLICY = EnumerationPolicy()
SECRET = b"per-deployment-secret-0123456789"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


# -- the verdict ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stats", "flag", "suspend"),
    [
        (WindowStats(0, 0, 0), False, False),
        (WindowStats(50, 50, 50), False, False),  # all misses, but few keys
        (WindowStats(99, 99, 400), False, False),  # under both flag thresholds
        (WindowStats(200, 160, 200), True, False),  # at the ratio threshold
        (WindowStats(400, 99, 400), False, False),  # a busy honest caller: 25% misses
        (WindowStats(1000, 100, 1000), True, False),  # 10%, diluted: flagged by count
        (WindowStats(1000, 299, 1000), True, False),
        (WindowStats(1000, 300, 1000), True, True),  # suspended by count
        (WindowStats(500, 400, 500), True, True),  # suspended by keys, at the ratio
        (WindowStats(1000, 990, 1000), True, True),
    ],
)
def test_verdict_thresholds(stats: WindowStats, flag: bool, suspend: bool) -> None:
    verdict = assess(stats, POLICY)
    assert (verdict.flag, verdict.suspend) == (flag, suspend)
    assert bool(verdict.reason) == flag
    if flag:
        assert str(stats.distinct_keys) in verdict.reason


def test_policy_comes_from_settings_and_refuses_nonsense() -> None:
    settings = Settings(
        enumeration_window_s=300,
        enumeration_min_keys=10,
        enumeration_miss_ratio=0.5,
        enumeration_suspend_keys=20,
    )
    policy = EnumerationPolicy.from_settings(settings)
    assert (policy.window_s, policy.min_keys, policy.miss_ratio, policy.suspend_keys) == (
        300,
        10,
        0.5,
        20,
    )
    assert policy.window_s % policy.bucket_s == 0
    assert EnumerationPolicy.from_settings(Settings(enumeration_window_s=7)).bucket_s == 7
    for bad in (
        {"window_s": 0},
        {"bucket_s": 7},
        {"miss_ratio": 0.0},
        {"miss_ratio": 1.5},
        {"min_keys": 600},
        {"unknown_keys": 0},
        {"unknown_keys": 400},
        {"review_s": 0},
    ):
        with pytest.raises(ValueError):
            EnumerationPolicy(**bad)


# -- keyed hashes ---------------------------------------------------------------------


def test_key_hash_is_keyed_deterministic_and_hides_the_key() -> None:
    key = ["91440101MA5CJQ4N59", "11010519491231002X"]
    h = key_hash(SECRET, "enterprise_registry", ["uscc", "legal_rep_id"], key)
    assert h == key_hash(SECRET, "enterprise_registry", ["uscc", "legal_rep_id"], key)
    assert len(h) == 64 and all(c in "0123456789abcdef" for c in h)
    assert all(part not in h for part in key)
    assert h != key_hash(
        b"another-deployment-secret-000000", "enterprise_registry", ["uscc", "legal_rep_id"], key
    )
    assert h != key_hash(SECRET, "social_insurance", ["uscc", "legal_rep_id"], key)
    assert h != key_hash(SECRET, "enterprise_registry", ["uscc", "legal_rep_id"], key[::-1])
    with pytest.raises(ValueError):
        key_hash(b"short", "p", ["k"], ["v"])


# -- the store ------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = create_engine(f"sqlite:///{tmp_path / 'control.sqlite3'}")
    else:
        url = os.environ.get("SANDBOX_TEST_DATABASE_URL")
        if not url:
            pytest.skip("set SANDBOX_TEST_DATABASE_URL to test on PostgreSQL")
        eng = create_engine(url)
    metadata.create_all(eng)
    yield eng
    with eng.begin() as conn:
        conn.execute(sa.delete(verification_probes))
    eng.dispose()


def _scope() -> str:
    return f"scope-{uuid.uuid4().hex[:12]}"


def _probe(subject: str, found: bool) -> Probe:
    return Probe(key_hash(SECRET, "social_insurance", ["person_id"], [subject]), found)


def _random_person(rng: random.Random) -> str:
    born = datetime(1960, 1, 1) + timedelta(days=rng.randrange(16000))
    return make_prc_id(rng.choice(["440106", "440111", "110105"]), born.date(), rng.randrange(1000))


def record_and_assess(
    engine: Engine, scope: str, now: datetime, probes: list[Probe], policy: EnumerationPolicy
) -> Verdict:
    """Record ``probes``, then assess the window as the scheduled review does."""
    with engine.begin() as conn:
        record_probes(conn, scope, now, probes, policy)
        if scope not in scopes_to_review(conn, now, policy):
            return Verdict(False, False)
        return assess(window_stats(conn, scope, now, policy), policy)


def test_an_enumerating_caller_is_flagged_then_suspended(engine: Engine) -> None:
    # 1,000 random identity numbers probed in ten batches over five minutes: almost
    # none belong to anyone in the product.
    scope = _scope()
    rng = random.Random(9)
    known = {_random_person(rng) for _ in range(20)}
    verdicts: list[Verdict] = []
    for batch in range(10):
        now = T0 + timedelta(seconds=30 * batch)
        probes = []
        for _ in range(100):
            person = _random_person(rng)
            probes.append(_probe(person, person in known))
        verdicts.append(record_and_assess(engine, scope, now, probes, POLICY))
    first_flag = next(i for i, v in enumerate(verdicts) if v.flag)
    first_suspend = next(i for i, v in enumerate(verdicts) if v.suspend)
    assert first_flag == 0 and first_suspend == 2  # at 100 and 300 unknown keys
    assert "possible enumeration" in verdicts[-1].reason
    with engine.connect() as conn:
        stats = window_stats(conn, scope, T0 + timedelta(seconds=300), POLICY)
    assert stats.distinct_keys == 1000 and stats.lookups == 1000
    assert stats.miss_ratio > 0.95


def test_an_honest_caller_with_a_few_misses_is_not_flagged(engine: Engine) -> None:
    # A lender re-verifying its 300 applicants through the day: a few typos miss, and
    # the same subjects come back often.
    scope = _scope()
    rng = random.Random(10)
    customers = [_random_person(rng) for _ in range(300)]
    typos = set(rng.sample(customers, 12))
    for minute in range(0, 120, 2):
        now = T0 + timedelta(minutes=minute)
        sample = rng.sample(customers, 40)
        verdict = record_and_assess(
            engine, scope, now, [_probe(c, c not in typos) for c in sample], POLICY
        )
        assert not verdict.flag and not verdict.suspend, verdict


def test_the_window_slides_and_old_buckets_are_purged(engine: Engine) -> None:
    scope = _scope()
    rng = random.Random(11)
    misses = [_probe(_random_person(rng), False) for _ in range(300)]
    assert record_and_assess(engine, scope, T0, misses, POLICY).flag
    later = T0 + timedelta(seconds=POLICY.window_s + POLICY.bucket_s)
    with engine.begin() as conn:
        assert window_stats(conn, scope, later, POLICY).distinct_keys == 0
        assert purge_expired(conn, later, POLICY) >= 300
        assert purge_expired(conn, later, POLICY) == 0


def test_the_same_key_counts_once_and_a_hit_clears_it(engine: Engine) -> None:
    scope = _scope()
    with engine.begin() as conn:
        record_probes(conn, scope, T0, [_probe("a", False)] * 3, POLICY)
        record_probes(conn, scope, T0 + timedelta(seconds=90), [_probe("a", True)], POLICY)
        record_probes(conn, scope, T0, [_probe("b", False)], POLICY)
        record_probes(conn, _scope(), T0, [_probe("c", False)], POLICY)  # another scope
        record_probes(conn, scope, T0, [], POLICY)
        stats = window_stats(conn, scope, T0 + timedelta(seconds=120), POLICY)
    assert stats == WindowStats(distinct_keys=2, missed_keys=1, lookups=5)


def test_only_windows_that_could_flag_are_reviewed(engine: Engine) -> None:
    # The review looks at each key of a window only when its missed lookups (from one
    # row per bucket) could reach a flag: each missed distinct key is one missed lookup.
    quiet, busy = _scope(), _scope()
    floor = min(POLICY.unknown_keys, int(POLICY.miss_ratio * POLICY.min_keys))
    with engine.begin() as conn:
        record_probes(conn, quiet, T0, [_probe(f"q{i}", False) for i in range(floor - 1)], POLICY)
        record_probes(conn, busy, T0, [_probe(f"b{i}", False) for i in range(floor)], POLICY)
        due = scopes_to_review(conn, T0, POLICY)
    assert busy in due and quiet not in due


def test_concurrent_recorders_lose_no_counts(engine: Engine) -> None:
    scope = _scope()
    shared = [_probe(f"k{i}", i % 2 == 0) for i in range(50)]

    def record(n: int) -> None:
        with engine.begin() as conn:
            record_probes(conn, scope, T0, shared[n % 7 :] + shared[: n % 7], POLICY)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(record, range(24)))
    with engine.connect() as conn:
        stats = window_stats(conn, scope, T0, POLICY)
    assert stats == WindowStats(distinct_keys=50, missed_keys=25, lookups=50 * 24)


def test_times_must_be_aware(engine: Engine) -> None:
    with engine.begin() as conn, pytest.raises(ValueError):
        record_probes(conn, "s", datetime(2026, 1, 1), [_probe("a", True)], POLICY)
