"""Every reported ci95 is calibrated (DESIGN §8): over many releases on the real PUMS
data, ``released ± ci95`` covers the truth of the bounded statistic 93-97% of the time
— not 99% (an overstated interval misleads as much as an understated one).

The truth is the exact statistic after per-unit contribution bounding and clipping,
computed here with plain DuckDB from the rows the engine read (``_unit_rank <= k``,
``least(greatest(x, lo), hi)``). The engine's SQL runs once per query; each of the
``RELEASES`` calls of ``release_rows`` — the engine's own release step, the one
``execute`` runs — draws fresh OpenDP noise for every group, so every group of every
call is one release. A group is released by the same code whether the query has one
group or many.

Flake-proof without a seed (OpenDP has none): each statistic is checked on at least
``MIN_DRAWS`` releases, so the standard error of a coverage near 95% is at most 0.25%;
the 93-97% band is more than 6 standard errors from any true coverage in
[94.5%, 95.5%] (the discrete Laplace's lattice and the continuous-Laplace tables keep
the true coverage there at these scales), a chance failure below 1e-8.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from products.manifest import DataProduct
from sandbox.engine import EngineLimits, UnsafeInProcessRunner, prepare
from sandbox.engine.query import release_rows
from tests.sandbox.engine.conftest import PUMS_ALLOWED

MIN_DRAWS = 8_000
INCOME = "least(greatest(income, 0), 500000)"
AGE = "least(greatest(age, 0), 100)"


@dataclass(frozen=True)
class Case:
    name: str
    sql: str
    keys: tuple[str, ...]  # the truth query's expressions for the answer's key columns
    truths: dict[str, str]  # output column -> its exact bounded statistic in DuckDB
    releases: int
    epsilon: str = "1"
    where: str = "TRUE"


CASES = [
    Case(
        "integer",
        "SELECT educ, sex, COUNT(*) AS n, COUNT(income) AS ni, SUM(income) AS s, "
        "AVG(income) AS a, AVG(age) AS aa FROM pums GROUP BY educ, sex",
        ("educ", "sex"),
        {
            "n": "count(*)",
            "ni": "count(income)",
            "s": f"sum({INCOME})",
            "a": f"avg({INCOME})",  # far from mid-bounds: where adding half-widths overstated
            "aa": f"avg({AGE})",  # near mid-bounds
        },
        releases=300,
    ),
    Case(
        "float",
        "SELECT educ, sex, SUM(income) AS s, AVG(income) AS a FROM pums_f GROUP BY educ, sex",
        ("educ", "sex"),
        {"s": f"sum({INCOME})", "a": f"avg({INCOME})"},
        releases=300,
    ),
    Case(
        "histogram",
        "SELECT BIN(age) AS b, sex, COUNT(*) AS n FROM pums GROUP BY b, sex",
        (
            "CASE WHEN age < 20 THEN '[0, 20)' WHEN age < 30 THEN '[20, 30)' "
            "WHEN age < 40 THEN '[30, 40)' WHEN age < 50 THEN '[40, 50)' "
            "WHEN age < 60 THEN '[50, 60)' WHEN age < 70 THEN '[60, 70)' "
            "ELSE '[70, 100]' END",
            "sex",
        ),
        {"n": "count(*)"},
        releases=600,
        epsilon="0.5",
        where="age BETWEEN 0 AND 100",  # rows outside every bin are in no bin
    ),
]


def truths(db: Path, table: str, case: Case) -> dict[tuple[Any, ...], dict[str, float]]:
    stats = ", ".join(f"{expr} AS {name}" for name, expr in case.truths.items())
    keys = ", ".join(case.keys)
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            f"SELECT {keys}, {stats} FROM {table} WHERE _unit_rank <= 2 AND {case.where} "
            "GROUP BY ALL"
        ).fetchall()
    finally:
        con.close()
    n = len(case.keys)
    return {tuple(r[:n]): dict(zip(case.truths, r[n:], strict=True)) for r in rows}


def coverage(product: DataProduct, db: Path, case: Case) -> dict[str, tuple[int, int]]:
    """Return {statistic: (releases covered, releases)} over ``case.releases`` calls."""
    q = prepare(
        product, case.sql, allowed_columns=PUMS_ALLOWED, delta=0, epsilon=Decimal(case.epsilon)
    )
    rows = UnsafeInProcessRunner().run(db, q.rewritten_sql, EngineLimits(threads=1))
    truth = truths(db, product.id, case)
    nkeys = len(case.keys)
    counted: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for _ in range(case.releases):
        answer = release_rows(q, rows)
        accuracy = {a["column"]: a for a in answer.accuracy}
        for i, row in enumerate(answer.rows):
            exact = truth.get(tuple(row[:nkeys]), {})
            for name in case.truths:
                value = row[answer.columns.index(name)]
                expected = exact.get(name, 0)  # an empty group: count and sum 0
                if case.truths[name].startswith("avg") and not exact:
                    continue  # an empty group has no average
                entry = accuracy[name]
                half = entry["ci95_rows"][i] if "ci95_rows" in entry else entry["ci95"]
                assert isinstance(value, int | float) and isinstance(half, int | float)
                counted[name][0] += abs(float(value) - float(expected)) <= half
                counted[name][1] += 1
    return {name: (c[0], c[1]) for name, c in counted.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_ci95_covers_the_bounded_truth_95_percent_of_the_time(
    case: Case,
    pums_product: DataProduct,
    pums_db: Path,
    pums_f_product: DataProduct,
    pums_f_db: Path,
) -> None:
    product, db = (pums_f_product, pums_f_db) if case.name == "float" else (pums_product, pums_db)
    result = coverage(product, db, case)
    assert set(result) == set(case.truths)
    report = {name: f"{c / n:.4f} of {n}" for name, (c, n) in result.items()}
    for name, (covered, draws) in result.items():
        assert draws >= MIN_DRAWS, report
        assert 0.93 <= covered / draws <= 0.97, (name, report)
