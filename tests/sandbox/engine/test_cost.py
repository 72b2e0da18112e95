"""A query's cost to the platform is bounded before it runs (DESIGN §8, issue 13): the
cost model works from the plan alone, refuses over its limits whatever the epsilon
(fixtures/cost.tsv), caps threshold-released keys, and the engine's whole work — SQL,
noise, post-processing — runs in the isolated worker under one time limit."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from products.errors import DomainError
from products.manifest import DataProduct, parse_manifest
from sandbox.engine import EngineLimits, UnsafeInProcessRunner, WorkerPool, execute, prepare
from sandbox.engine.cost import CostLimits
from sandbox.engine.isolation import Deadline, Row
from sandbox.engine.query import release_rows
from sandbox.errors import QueryFailed, QueryTimeout
from tests.sandbox.engine.conftest import PUMS_ALLOWED, build_from_select
from tests.sandbox.engine.test_query import REGISTRY, REGISTRY_ALLOWED

FIXTURE = Path(__file__).parent / "fixtures" / "cost.tsv"
CASES = [
    line.split("\t")
    for line in FIXTURE.read_text(encoding="utf-8").splitlines()
    if line and not line.startswith("#")
]
WIDE_ALLOWED = frozenset({"a", "b", "c", "s", "x"})


@pytest.fixture(scope="module")
def wide() -> DataProduct:
    return parse_manifest(
        {
            "id": "wide",
            "title": "many public keys",
            "privacy_unit": "u",
            "max_rows_per_unit": 1,
            "columns": [
                {"name": "u", "type": "integer", "classification": "identifier"},
                {"name": "a", "type": "integer", "classification": "attribute",
                 "public_values": list(range(121)), "aggregate": False, "nullable": False},
                {"name": "b", "type": "integer", "classification": "attribute",
                 "public_values": list(range(600)), "aggregate": False, "nullable": False},
                {"name": "c", "type": "integer", "classification": "attribute",
                 "public_values": list(range(10)), "aggregate": False, "nullable": False},
                {"name": "s", "type": "string", "classification": "attribute",
                 "public_values": [f"{i:080d}" for i in range(5000)], "nullable": False},
                {"name": "x", "type": "integer", "classification": "sensitive",
                 "bounds": [0, 100000]},
            ],
        }
    )  # fmt: skip


@pytest.mark.parametrize(("expected", "epsilon", "sql"), CASES, ids=[c[2][:90] for c in CASES])
def test_cost_limits(expected: str, epsilon: str, sql: str, wide: DataProduct) -> None:
    def run() -> Any:
        return prepare(wide, sql, allowed_columns=WIDE_ALLOWED, delta=0, epsilon=Decimal(epsilon))

    if expected == "ok":
        q = run()
        assert q.cost.cells <= CostLimits().max_cells
        return
    code, rule = expected.split(":")
    with pytest.raises(DomainError) as info:
        run()
    assert (info.value.code, info.value.details.get("rule")) == (code, rule)
    assert len(info.value.message) > 40  # the refusal says what to change


def test_the_attack_is_refused_with_the_numbers(wide: DataProduct) -> None:
    quantiles = ", ".join(f"QUANTILE_CONT(x, 0.{i:02d})" for i in range(5, 85, 5))
    with pytest.raises(DomainError) as info:
        prepare(
            wide,
            f"SELECT a, b, {quantiles} FROM wide GROUP BY a, b",
            allowed_columns=WIDE_ALLOWED,
            delta=0,
            epsilon=Decimal("1e-9"),
        )
    details = info.value.details
    assert info.value.code == "too_large"
    assert details["cost"]["groups"] == 72_600
    assert details["cost"]["quantile_cells"] == 72_600 * 16 == details["value"]
    assert details["cost"]["quantile_candidates"] == 72_600 * 16 * 1001
    assert details["limit"] == 10_000


def test_cost_of_a_query(wide: DataProduct) -> None:
    q = prepare(
        wide,
        "SELECT c, COUNT(*) AS n, AVG(x) AS m, MEDIAN(x) AS q FROM wide GROUP BY c",
        allowed_columns=WIDE_ALLOWED,
        delta=0,
        epsilon=Decimal(1),
    )
    # COUNT(*), centred sum, COUNT(x), quantile: 4 statistics over 10 groups
    assert q.cost.as_dict() == {
        "groups": 10,
        "cells": 40,
        "quantile_cells": 10,
        "quantile_candidates": 10 * 1001,
        # [ key , n , ci95_rows entry , m , its entry , q ]
        "answer_bytes": 10 * (2 + (1 + 1) + (1 + 25 + 26) + (1 + 25 + 26) + (1 + 25)),
    }


def test_limits_are_configurable(wide: DataProduct) -> None:
    sql = "SELECT c, SUM(x) FROM wide GROUP BY c"
    with pytest.raises(DomainError) as info:
        prepare(
            wide,
            sql,
            allowed_columns=WIDE_ALLOWED,
            delta=0,
            epsilon=Decimal(1),
            cost_limits=CostLimits(max_cells=9),
        )
    assert info.value.details["rule"] == "max_cells"
    with pytest.raises(DomainError) as info:
        prepare(
            wide,
            sql,
            allowed_columns=WIDE_ALLOWED,
            delta=0,
            epsilon=Decimal("0.5"),
            cost_limits=CostLimits(min_epsilon_per_statistic=Decimal(1)),
        )
    assert info.value.details["minimum_epsilon"] == "1"
    with pytest.raises(ValueError):
        CostLimits(max_groups=0)


def test_threshold_released_keys_are_capped_at_the_largest(tmp_path: Path) -> None:
    product = parse_manifest(REGISTRY)
    db = build_from_select(
        tmp_path / "r.duckdb",
        product,
        "SELECT 'U' || range AS uscc, 'A' AS district, CASE WHEN range < 4000 THEN "
        "'sector' || (range % 4) ELSE 'big' END AS sector, DATE '2020-01-01' AS founded, "
        "TRUE AS active, 1.0 AS capital, 1 AS staff FROM range(6000)",
    )
    q = prepare(
        product,
        "SELECT sector, COUNT(*) AS n FROM registry GROUP BY sector",
        allowed_columns=REGISTRY_ALLOWED,
        delta=1e-6,
        epsilon=Decimal(1),
        cost_limits=CostLimits(max_threshold_groups=2),
    )
    assert q.cost.groups == 2
    answer = execute(q, db, EngineLimits(threads=1), runner=UnsafeInProcessRunner())
    assert len(answer.rows) == 2 and "big" in {r[0] for r in answer.rows}


def test_release_stops_at_the_deadline(pums_product: DataProduct, pums_db: Path) -> None:
    q = prepare(
        pums_product,
        "SELECT sex, MEDIAN(income) FROM pums GROUP BY sex",
        allowed_columns=PUMS_ALLOWED,
        delta=0,
        epsilon=Decimal(1),
    )
    rows = UnsafeInProcessRunner().run(pums_db, q.rewritten_sql, EngineLimits())
    past = Deadline(time.monotonic() - 1, 30.0)
    with pytest.raises(QueryTimeout) as info:
        release_rows(q, rows, past)
    assert info.value.code == "unavailable" and info.value.details["retry_after"] == 30


def count_rows(rows: list[Row], deadline: Deadline) -> tuple[int, float]:
    """A finish step for the worker (module level, so it pickles)."""
    return len(rows), deadline.limit_s


def sleep_past_deadline(rows: list[Row], deadline: Deadline) -> None:
    time.sleep(60)  # the pool kills the worker after timeout_s + grace_s


def test_release_runs_in_the_worker_under_one_time_limit(
    pums_product: DataProduct, pums_db: Path
) -> None:
    pool = WorkerPool(size=1, grace_s=0.5)
    try:
        # The first job imports the finish step's module in the worker: not timed.
        warm = EngineLimits(timeout_s=60.0, threads=1)
        assert pool.run_and_finish(pums_db, "SELECT 1 UNION ALL SELECT 2", warm, count_rows) == (
            2,
            60.0,
        )
        limits = EngineLimits(timeout_s=1.0, threads=1)
        with pytest.raises(QueryTimeout) as info:
            pool.run_and_finish(pums_db, "SELECT 1", limits, sleep_past_deadline)
        assert info.value.details["rule"] == "timeout"
        # the default execute path: the answer comes back, exact rows do not
        q = prepare(
            pums_product,
            "SELECT sex, COUNT(*) FROM pums GROUP BY sex",
            allowed_columns=PUMS_ALLOWED,
            delta=0,
            epsilon=Decimal(1),
        )
        answer = execute(q, pums_db, EngineLimits(threads=1), runner=pool)
        assert [r[0] for r in answer.rows] == [0, 1]
    finally:
        pool.close()


def hold_memory(rows: list[Row], deadline: Deadline) -> int:
    """A release step that keeps growing its Python heap (as a synthetic-data fit
    can), well past DuckDB's memory limit, which does not see it."""
    held = []
    for _ in range(40):
        held.append(bytearray(64 << 20))  # touched: resident, not just reserved
        time.sleep(0.05)
    return len(held)


# What earlier jobs leave resident in a worker (as the DuckDB buffer pools of the
# product files it keeps open do).
_LEFT_BEHIND: list[bytearray] = []


def leave_memory_behind(rows: list[Row], deadline: Deadline) -> int:
    _LEFT_BEHIND.append(bytearray(400 << 20))  # touched: resident
    return len(_LEFT_BEHIND)


def count_rows_slowly(rows: list[Row], deadline: Deadline) -> int:
    time.sleep(0.4)  # long enough for the pool to look at the worker's memory
    return len(rows)


def test_a_job_is_not_charged_for_memory_earlier_jobs_left_in_its_worker(
    pums_db: Path,
) -> None:
    pool = WorkerPool(size=1, grace_s=0.5, memory_headroom=400 << 20)
    try:
        limits = EngineLimits(timeout_s=60.0, memory_limit="256MB", threads=1)
        # Each job stays within limit + headroom; together they leave ~1.2 GiB behind.
        assert [pool.run_and_finish(pums_db, "SELECT 1", limits, leave_memory_behind)
                for _ in range(3)] == [1, 2, 3]  # fmt: skip
        pid = pool.worker_pids()
        # The next job grows the worker by nothing: it runs, in the same worker.
        assert pool.run_and_finish(pums_db, "SELECT 1", limits, count_rows_slowly) == 1
        assert pool.worker_pids() == pid
    finally:
        pool.close()


def test_a_release_step_is_held_to_the_memory_limit_too(pums_db: Path) -> None:
    pool = WorkerPool(size=1, grace_s=0.5, memory_headroom=400 << 20)
    try:
        limits = EngineLimits(timeout_s=60.0, memory_limit="256MB", threads=1)
        with pytest.raises(QueryFailed) as info:
            pool.run_and_finish(pums_db, "SELECT 1", limits, hold_memory)
        assert info.value.code == "too_large" and info.value.details["rule"] == "memory_limit"
        # The worker was replaced: the next job runs.
        assert pool.run_and_finish(pums_db, "SELECT 1", limits, count_rows) == (1, 60.0)
    finally:
        pool.close()
