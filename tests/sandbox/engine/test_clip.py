"""CLIP(col, lo, hi): a query's tighter clipping bounds (DESIGN §8) — the SQL form, its
checks (fixtures/clip_refused.tsv), the sensitivity it buys (fixtures/clip.tsv), and the
exact pre-noise aggregates checked against raw DuckDB on PUMS."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from products.errors import DomainError
from products.manifest import DataProduct
from sandbox.engine import EngineLimits, UnsafeInProcessRunner, execute, prepare
from sandbox.engine.plan import MeasureKind
from sandbox.engine.query import quantile_scores
from tests.sandbox.engine.conftest import PUMS_ALLOWED, pums_manifest

FIXTURES = Path(__file__).parent / "fixtures"


def lines(name: str) -> list[list[str]]:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]


ACCEPTED = lines("clip.tsv")
REFUSED = lines("clip_refused.tsv")
PRODUCTS = {"pums": pums_manifest(), "pums_f": pums_manifest(product_id="pums_f")}


def prep(product: DataProduct, sql: str, epsilon: str = "1") -> Any:
    return prepare(product, sql, allowed_columns=PUMS_ALLOWED, delta=0, epsilon=Decimal(epsilon))


@pytest.mark.parametrize(("product", "sql", "expected"), ACCEPTED, ids=[c[1] for c in ACCEPTED])
def test_clip_bounds_set_the_sensitivity(product: str, sql: str, expected: str) -> None:
    q = prep(PRODUCTS[product], sql)
    got = []
    for m in q.measurements():
        bounds = m.get("bounds")
        got.append((m["kind"], bounds, pytest.approx(m["sensitivity"], rel=1e-9)))
    want = []
    for item in expected.split(";"):
        kind, rest = item.strip().split(" ", 1)
        bounds_text, sensitivity = rest.rsplit(" ", 1)
        bounds = None if bounds_text == "-" else json.loads(bounds_text)
        want.append((kind, bounds, float(sensitivity)))
    assert got == want


@pytest.mark.parametrize(("code", "rule", "sql"), REFUSED, ids=[c[2] for c in REFUSED])
def test_clip_refusals(code: str, rule: str, sql: str) -> None:
    with pytest.raises(DomainError) as info:
        prep(PRODUCTS["pums"], sql)
    assert (info.value.code, info.value.details.get("rule")) == (code, rule), info.value.message
    assert len(info.value.message) > 25


def test_outside_the_declared_bounds_names_them() -> None:
    with pytest.raises(DomainError) as info:
        prep(PRODUCTS["pums"], "SELECT SUM(CLIP(income, 0, 600000)) FROM pums")
    assert "[0, 500000]" in info.value.message
    assert info.value.details["bounds"] == [0, 500000]


def test_clip_is_part_of_the_reuse_key_and_the_label() -> None:
    a = prep(PRODUCTS["pums"], "SELECT SUM(CLIP(income, 0, 100000)) FROM pums")
    b = prep(PRODUCTS["pums"], "select sum(clip(INCOME, 0, 100000)) from PUMS")
    c = prep(PRODUCTS["pums"], "SELECT SUM(CLIP(income, 0, 100001)) FROM pums")
    assert a.normalized_sql == b.normalized_sql != c.normalized_sql
    assert a.columns == ["sum(clip(income, 0, 100000))"]


def raw(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_clipped_aggregates_match_raw_duckdb(pums_db: Path, pums_f_db: Path) -> None:
    runner, limits = UnsafeInProcessRunner(), EngineLimits(threads=1)
    q = prep(
        PRODUCTS["pums"],
        "SELECT sex, SUM(CLIP(income, 1000, 60000)) AS s, AVG(CLIP(age, 18, 65)) AS a, "
        "COUNT(age) AS c FROM pums WHERE educ > 8 GROUP BY sex",
    )
    got = {r[0]: r[1:] for r in runner.run(pums_db, q.rewritten_sql, limits)}
    truth = raw(
        pums_db,
        "SELECT sex, sum(least(greatest(income, 1000), 60000)), "
        "sum(2 * least(greatest(age, 18), 65) - 83), count(age) FROM pums "
        "WHERE _unit_rank <= 2 AND educ > 8 GROUP BY sex",
    )
    kinds = [m.kind for m in q.plan.measurements]
    assert kinds == [MeasureKind.SUM, MeasureKind.CENTERED_SUM, MeasureKind.COUNT]
    assert {int(r[0]): tuple(int(v) for v in r[1:]) for r in truth} == {
        k: tuple(int(v) for v in vs) for k, vs in got.items()
    }
    # float: fixed point over the tighter bounds (quantum 2^-21 for 1000.25)
    qf = prep(PRODUCTS["pums_f"], "SELECT SUM(CLIP(income, 0.5, 1000.25)) FROM pums_f")
    [m] = qf.plan.measurements
    [(exact,)] = runner.run(pums_f_db, qf.rewritten_sql, limits)
    [(want,)] = raw(
        pums_f_db,
        "SELECT sum(least(greatest(income, 0.5), 1000.25)) FROM pums_f WHERE _unit_rank <= 2",
    )
    assert float(exact * m.quantum) == pytest.approx(want, abs=float(m.quantum) * 2000)


def test_clipped_quantile_candidates_and_scores(pums_db: Path) -> None:
    q = prep(PRODUCTS["pums"], "SELECT MEDIAN(CLIP(income, 5000, 60000)) AS m FROM pums")
    [m] = q.plan.measurements
    # declared edges strictly inside, plus the new bounds
    assert m.candidates == (5000, 10000, 25000, 50000, 60000)
    [(histogram,)] = UnsafeInProcessRunner().run(pums_db, q.rewritten_sql, EngineLimits())
    values = [
        v
        for (v,) in raw(
            pums_db, "SELECT least(greatest(income, 5000), 60000) FROM pums WHERE _unit_rank <= 2"
        )
    ]
    n = len(values)
    expected = [
        abs(2 * sum(1 for v in values if v < c) - (n - sum(1 for v in values if v == c)))
        for c in m.candidates
    ]
    assert quantile_scores(histogram, m) == expected


def test_clipped_answer_stays_inside_the_tighter_bounds(pums_db: Path) -> None:
    q = prep(
        PRODUCTS["pums"], "SELECT AVG(CLIP(income, 10000, 20000)) AS a FROM pums", epsilon="0.05"
    )
    for _ in range(20):
        answer = execute(q, pums_db, EngineLimits(threads=1), runner=UnsafeInProcessRunner())
        [[value]] = answer.rows
        assert isinstance(value, float) and 10000 <= value <= 20000
        [entry] = answer.accuracy
        assert entry["ci95"] is not None and entry["ci95"] <= 10000
