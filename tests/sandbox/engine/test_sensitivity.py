"""The accounting is sound: for random datasets and a random unit removed (the
add/remove-one-unit neighbouring relation, DESIGN §8), the exact per-group statistics
of the rewritten SQL move by no more than the sensitivity the planner claims — summed
over ALL groups, since a unit's k rows may fall into k different groups."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from products.manifest import DataProduct, parse_manifest
from sandbox.engine import EngineLimits, UnsafeInProcessRunner, prepare
from sandbox.engine.plan import Mechanism
from sandbox.engine.query import quantile_scores

GROUPS = 4
SQL = (
    "SELECT g, COUNT(*), COUNT(x), SUM(x), AVG(x), SUM(f), AVG(f), MEDIAN(x), "
    "QUANTILE_CONT(f, 0.3) FROM t GROUP BY g"
)


def product(k: int) -> DataProduct:
    return parse_manifest(
        {
            "id": "t",
            "title": "t",
            "privacy_unit": "u",
            "max_rows_per_unit": k,
            "columns": [
                {"name": "u", "type": "integer", "classification": "identifier"},
                {"name": "g", "type": "integer", "classification": "attribute",
                 "public_values": list(range(GROUPS)), "bounds": [0, GROUPS - 1],
                 "nullable": False},
                {"name": "x", "type": "integer", "classification": "sensitive",
                 "bounds": [-5, 10]},
                {"name": "f", "type": "float", "classification": "sensitive",
                 "bounds": [-1.5, 2.5]},
            ],
        }
    )  # fmt: skip


def write(path: Path, rows: list[tuple[Any, ...]]) -> Path:
    """The data-plane table with explicit ranks, so removing a unit leaves the other
    units' bounded rows unchanged (as the loader's fixed per-unit permutation does)."""
    con = duckdb.connect(str(path))
    try:
        con.execute('CREATE TABLE t (u BIGINT, g BIGINT, x BIGINT, f DOUBLE, "_unit_rank" INTEGER)')
        if rows:
            con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)
    finally:
        con.close()
    return path


@st.composite
def dataset(draw: st.DrawFn) -> tuple[int, list[tuple[Any, ...]], int]:
    k = draw(st.integers(1, 3))
    units = draw(st.integers(1, 12))
    rng = random.Random(draw(st.integers(0, 2**32)))
    rows = []
    for u in range(units):
        n = draw(st.integers(1, 5))
        ranks = list(range(1, n + 1))
        rng.shuffle(ranks)
        for rank in ranks:
            x = draw(st.one_of(st.none(), st.integers(-8, 14)))
            f = draw(st.one_of(st.none(), st.sampled_from([-3.0, -1.5, 0.0, 0.25, 2.5, 9.0])))
            rows.append((u, draw(st.integers(0, GROUPS - 1)), x, f, rank))
    victim = draw(st.integers(0, units - 1))
    return k, rows, victim


def exact(db: Path, sql: str) -> dict[int, tuple[Any, ...]]:
    rows = UnsafeInProcessRunner().run(db, sql, EngineLimits(threads=1))
    return {int(r[0]): tuple(r[1:]) for r in rows}


@settings(max_examples=40, deadline=None)
@given(data=dataset())
def test_neighbouring_datasets_differ_by_at_most_the_sensitivity(
    data: tuple[int, list[tuple[Any, ...]], int],
) -> None:
    k, rows, victim = data
    q = prepare(product(k), SQL, allowed_columns={"g", "x", "f"}, delta=0, epsilon=1)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        full = exact(write(Path(tmp) / "d.duckdb", rows), q.rewritten_sql)
        neighbour = [r for r in rows if r[0] != victim]
        less = exact(write(Path(tmp) / "n.duckdb", neighbour), q.rewritten_sql)
    for i, m in enumerate(q.plan.measurements):
        if m.mechanism is Mechanism.NOISY_MAX:
            # Per group the score vector moves by at most row_bound per row, and the
            # unit's rows over all groups sum to at most k: the composed loss is bounded.
            moved = 0
            for g in range(GROUPS):
                a = quantile_scores(full.get(g, (None,) * 99)[i], m)
                b = quantile_scores(less.get(g, (None,) * 99)[i], m)
                moved += max(abs(x - y) for x, y in zip(a, b, strict=True))
            assert moved <= m.sensitivity
            continue
        l1 = sum(
            abs(int(full.get(g, (0,) * 99)[i] or 0) - int(less.get(g, (0,) * 99)[i] or 0))
            for g in range(GROUPS)
        )
        assert l1 <= m.sensitivity, (m.kind, m.column, l1, m.sensitivity)
        # and the number of groups the unit touches is at most k (threshold's l0)
        touched = sum(
            1
            for g in range(GROUPS)
            if (full.get(g, (0,) * 99)[i] or 0) != (less.get(g, (0,) * 99)[i] or 0)
        )
        assert touched <= k
