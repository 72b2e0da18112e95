"""Classic attacks on aggregate interfaces, on the real PUMS sample.

Differencing: two queries that differ by one person's predicate would reveal that
person's income exactly if the answers were exact; with DP the attacker's error stays
at the noise scale. Averaging: repeating a query to average the noise away — the real
service answers an identical query (same normalised SQL) from its cache, so the
attacker must vary the text; every variant is then a distinct query that costs its
epsilon, and the average is no better than what the total epsilon buys.
"""

from __future__ import annotations

import math
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from products.manifest import DataProduct
from sandbox.engine import EngineLimits, WorkerPool, execute, prepare
from tests.sandbox.engine.conftest import PUMS_ALLOWED, table_rows

QUASI = ("age", "sex", "educ", "race", "married")


def scalar(
    product: DataProduct, db: Path, pool: WorkerPool, sql: str, epsilon: Decimal
) -> tuple[float, Decimal]:
    q = prepare(product, sql, allowed_columns=PUMS_ALLOWED, delta=0, epsilon=epsilon)
    answer = execute(q, db, EngineLimits(), runner=pool)
    value = answer.rows[0][0]
    assert isinstance(value, int | float)
    return float(value), answer.epsilon_spent


def exact_scalar(product: DataProduct, db: Path, pool: WorkerPool, sql: str) -> int:
    q = prepare(product, sql, allowed_columns=PUMS_ALLOWED, delta=0, epsilon=Decimal(1))
    [(value,)] = pool.run(db, q.rewritten_sql, EngineLimits())
    return int(value or 0)


@pytest.fixture(scope="module")
def target(pums_db: Path, pums_product: DataProduct) -> dict[str, Any]:
    """A person singled out by quasi-identifiers alone (no identifier needed)."""
    rows = table_rows(pums_db, pums_product)
    combos = Counter(tuple(r[c] for c in QUASI) for r in rows)
    for r in rows:
        combo = tuple(r[c] for c in QUASI)
        if combos[combo] == 1 and r["income"] > 50000:
            return {
                "where": " AND ".join(f"{c} = {v}" for c, v in zip(QUASI, combo, strict=True)),
                "income": r["income"] if r["_unit_rank"] <= 2 else 0,
            }
    raise AssertionError("no unique person in the sample")


def test_differencing_attack_works_on_exact_answers_only(
    pums_product: DataProduct, pums_db: Path, pool: WorkerPool, target: dict[str, Any]
) -> None:
    everyone = "SELECT SUM(income) FROM pums"
    all_but_one = f"SELECT SUM(income) FROM pums WHERE NOT ({target['where']})"
    # On the exact (pre-noise) aggregates the difference is the person's income...
    diff = exact_scalar(pums_product, pums_db, pool, everyone) - exact_scalar(
        pums_product, pums_db, pool, all_but_one
    )
    assert diff == target["income"] > 0
    # ... but the released answers leave the attacker at the noise scale.
    trials = 200
    epsilon = Decimal(1)
    errors = []
    for _ in range(trials):
        a, _ = scalar(pums_product, pums_db, pool, everyone, epsilon)
        b, _ = scalar(pums_product, pums_db, pool, all_but_one, epsilon)
        errors.append((a - b) - target["income"])
    scale = 2 * 500000 / float(epsilon)  # k * max|bound| / epsilon
    expected_rms = math.sqrt(2 * 2 * scale**2)  # difference of two Laplace(scale)
    rms = math.sqrt(sum(e * e for e in errors) / trials)
    assert 0.75 * expected_rms < rms < 1.25 * expected_rms  # > 12 sigma either side
    # The typical error exceeds the whole range an income can have ([0, 500000]): the
    # answers say next to nothing about this person (median |error| ~ 1.26 * scale).
    assert sorted(abs(e) for e in errors)[trials // 2] > 500000


def test_identical_queries_have_one_reuse_key(pums_product: DataProduct) -> None:
    spellings = [
        "SELECT SUM(income) FROM pums",
        "select sum(INCOME) from PUMS",
        "SELECT SUM(income)\n  FROM pums -- again",
        'SELECT SUM("income") FROM "pums" /* and again */',
    ]
    keys = {
        prepare(
            pums_product, s, allowed_columns=PUMS_ALLOWED, delta=0, epsilon=Decimal(1)
        ).normalized_sql
        for s in spellings
    }
    assert len(keys) == 1  # the service answers these from its cache, charging nothing


def test_averaging_attack_pays_for_every_variant(
    pums_product: DataProduct, pums_db: Path, pool: WorkerPool
) -> None:
    variants = [f"SELECT SUM(income) AS s{i} FROM pums WHERE age >= {-i}" for i in range(10)]
    keys = {
        prepare(
            pums_product, v, allowed_columns=PUMS_ALLOWED, delta=0, epsilon=Decimal(1)
        ).normalized_sql
        for v in variants
    }
    assert len(keys) == len(variants)  # distinct queries: no cache, each one charged
    truth = exact_scalar(pums_product, pums_db, pool, "SELECT SUM(income) FROM pums")
    epsilon = Decimal("0.5")
    trials = 80
    squared = 0.0
    for _ in range(trials):
        answers = [scalar(pums_product, pums_db, pool, v, epsilon) for v in variants]
        assert sum(spent for _, spent in answers) == epsilon * len(variants)
        mean = sum(value for value, _ in answers) / len(variants)
        squared += (mean - truth) ** 2
    rms = math.sqrt(squared / trials)
    scale = 2 * 500000 / float(epsilon)
    sd_of_mean = math.sqrt(2 * scale**2 / len(variants))
    # Averaging n answers only shrinks the error like 1/sqrt(n) ...
    assert 0.5 * sd_of_mean < rms < 1.6 * sd_of_mean  # chi-square(80) bounds, p < 1e-9
    # ... which is worse than one query that spends the same total epsilon at once.
    one_query_sd = math.sqrt(2) * scale / len(variants)
    assert rms > 1.5 * one_query_sd
