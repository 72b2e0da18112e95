"""Rewrite correctness: the exact (pre-noise) aggregates of the planner's SQL equal an
independent computation in plain Python over the stored rows after bounding
(``_unit_rank <= k``), clipping and key restriction — on the real PUMS_dup sample,
whose persons have 1-4 rows each."""

from __future__ import annotations

import bisect
import random
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb
import opendp.prelude as dp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from products.manifest import DataProduct, parse_manifest
from sandbox.engine import EngineLimits, PreparedQuery, UnsafeInProcessRunner, prepare
from sandbox.engine.plan import CodeMode, MeasureKind, quantile_grid
from sandbox.engine.query import quantile_scores
from tests.sandbox.engine.conftest import PUMS_ALLOWED, build_from_rows, table_rows

Row = dict[str, Any]


def exact(
    q: PreparedQuery, db: Path, runner: UnsafeInProcessRunner, limits: EngineLimits
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Run the rewritten SQL without noise: {group key: {measurement alias: value}}."""
    nkeys = len(q.plan.keys)
    out = {}
    for row in runner.run(db, q.rewritten_sql, limits):
        key = tuple(row[:nkeys])
        out[key] = {m.alias: v for m, v in zip(q.plan.measurements, row[nkeys:], strict=True)}
    return out


def alias(q: PreparedQuery, kind: MeasureKind, column: str | None) -> str:
    for m in q.plan.measurements:
        if m.kind is kind and (m.column.name if m.column else None) == column:
            return m.alias
    raise AssertionError(f"no {kind} measurement of {column}")


def clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def bounded(rows: list[Row], k: int, where: Callable[[Row], bool] = lambda r: True) -> list[Row]:
    return [r for r in rows if r["_unit_rank"] <= k and where(r)]


def prep(product: DataProduct, sql: str, allowed: frozenset[str] = PUMS_ALLOWED) -> PreparedQuery:
    return prepare(product, sql, allowed_columns=allowed, delta=0, epsilon=Decimal(1))


@pytest.fixture(scope="module")
def pums_rows(pums_db: Path, pums_product: DataProduct) -> list[Row]:
    return table_rows(pums_db, pums_product)


def test_bounding_keeps_at_most_k_rows_per_unit(pums_rows: list[Row]) -> None:
    per_unit: dict[int, int] = defaultdict(int)
    for r in bounded(pums_rows, 2):
        per_unit[r["pid"]] += 1
    assert max(per_unit.values()) == 2
    assert len(bounded(pums_rows, 2)) < len(pums_rows)  # PUMS_dup has units with 3-4 rows


def test_grouped_count_sum_avg_match_python(
    pums_product: DataProduct,
    pums_db: Path,
    pums_rows: list[Row],
    runner: UnsafeInProcessRunner,
    limits: EngineLimits,
) -> None:
    q = prep(
        pums_product,
        "SELECT race, COUNT(*) AS n, SUM(income) AS s, AVG(income) AS a, COUNT(income) AS c "
        "FROM pums WHERE age >= 30 GROUP BY race",
    )
    got = exact(q, pums_db, runner, limits)
    rows = bounded(pums_rows, 2, lambda r: r["age"] >= 30)
    truth: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        t = truth[r["race"]]
        x = int(clip(r["income"], 0, 500000))
        t["n"] += 1
        t["s"] += x
        t["centred2"] += 2 * x - 500000  # AVG's centred sum in half units
        t["c"] += 1
    assert set(got) == {(race,) for race in truth}
    for (race,), values in got.items():
        t = truth[race]
        assert values[alias(q, MeasureKind.COUNT, None)] == t["n"]
        assert values[alias(q, MeasureKind.SUM, "income")] == t["s"]
        assert values[alias(q, MeasureKind.CENTERED_SUM, "income")] == t["centred2"]
        assert values[alias(q, MeasureKind.COUNT, "income")] == t["c"]
    # Unbounded, the counts would differ: the rewrite really bounds.
    raw = sum(1 for r in pums_rows if r["age"] >= 30)
    assert sum(t["n"] for t in truth.values()) < raw


def test_float_sums_are_exact_fixed_point(
    pums_f_product: DataProduct,
    pums_f_db: Path,
    runner: UnsafeInProcessRunner,
    limits: EngineLimits,
) -> None:
    allowed = PUMS_ALLOWED
    q = prep(
        pums_f_product, "SELECT sex, SUM(income), AVG(income) FROM pums_f GROUP BY sex", allowed
    )
    got = exact(q, pums_f_db, runner, limits)
    rows = bounded(table_rows(pums_f_db, pums_f_product), 2)
    s_alias = alias(q, MeasureKind.SUM, "income")
    c_alias = alias(q, MeasureKind.CENTERED_SUM, "income")
    m_sum = next(m for m in q.plan.measurements if m.alias == s_alias)
    m_avg = next(m for m in q.plan.measurements if m.alias == c_alias)
    assert m_sum.quantum == Fraction(1, 2**12)  # 500000 * 2^12 <= 2^31
    for (sex,), values in got.items():
        xs = [r["income"] for r in rows if r["sex"] == sex]
        # x is a multiple of 1/8, so x / quantum is an exact integer: equality, not approx.
        assert values[s_alias] == sum(int(Fraction(x) / m_sum.quantum) for x in xs)
        centred = sum(int((Fraction(x) - m_avg.center) / m_avg.quantum) for x in xs)
        assert values[c_alias] == centred
        assert abs(values[c_alias]) <= len(xs) * m_avg.row_bound


def test_histogram_bins_match_python(
    pums_product: DataProduct,
    pums_db: Path,
    pums_rows: list[Row],
    runner: UnsafeInProcessRunner,
    limits: EngineLimits,
) -> None:
    q = prep(pums_product, "SELECT BIN(income) AS b, COUNT(*) FROM pums GROUP BY b")
    got = exact(q, pums_db, runner, limits)
    edges = [0, 10000, 25000, 50000, 100000, 500000]
    truth: dict[int, int] = defaultdict(int)
    for r in bounded(pums_rows, 2):
        x = r["income"]
        i = min(bisect.bisect_right(edges, x) - 1, len(edges) - 2)
        truth[i] += 1
    assert {k[0]: v[alias(q, MeasureKind.COUNT, None)] for k, v in got.items()} == truth


QUANTILE_QUERIES = [
    ("MEDIAN(age)", "age", Fraction(1, 2)),  # declared bins as candidates
    ("QUANTILE_CONT(income, 0.9)", "income", Fraction(9, 10)),
    ("QUANTILE_CONT(educ, 0.25)", "educ", Fraction(1, 4)),  # integer grid, fast codes
    ("MEDIAN(race)", "race", Fraction(1, 2)),
]


def opendp_scores(values: list[float], candidates: tuple[int | float, ...], alpha: float) -> Any:
    dp.enable_features("contrib")
    t: Any = dp.t.make_quantile_score_candidates(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.symmetric_distance(),
        candidates=[float(c) for c in candidates],
        alpha=alpha,
    )
    return t([float(v) for v in values]), t.map(1)


@pytest.mark.parametrize(("agg", "column", "alpha"), QUANTILE_QUERIES)
def test_quantile_scores_equal_opendp(
    agg: str,
    column: str,
    alpha: Fraction,
    pums_product: DataProduct,
    pums_db: Path,
    pums_rows: list[Row],
    runner: UnsafeInProcessRunner,
    limits: EngineLimits,
) -> None:
    q = prep(pums_product, f"SELECT sex, {agg} FROM pums GROUP BY sex")
    [m] = [m for m in q.plan.measurements if m.kind is MeasureKind.QUANTILE]
    got = exact(q, pums_db, runner, limits)
    col = pums_product.column(column)
    assert col is not None and col.bounds is not None
    for (sex,), values in got.items():
        xs = [clip(r[column], *col.bounds) for r in bounded(pums_rows, 2) if r["sex"] == sex]
        mine = quantile_scores(values[m.alias], m)
        theirs, their_sensitivity = opendp_scores(xs, m.candidates, float(alpha))
        factor = their_sensitivity // m.row_bound  # OpenDP may use a finer alpha fraction
        assert their_sensitivity == factor * m.row_bound
        assert [s * factor for s in mine] == list(theirs)


def test_public_value_restriction_and_clipping_are_enforced(
    tmp_path: Path, runner: UnsafeInProcessRunner, limits: EngineLimits
) -> None:
    # Rows the loader would have refused: a key outside public_values, values outside
    # bounds. The planner still restricts and clips (defence in depth).
    product = parse_manifest(
        {
            "id": "t",
            "title": "t",
            "privacy_unit": "u",
            "max_rows_per_unit": 1,
            "columns": [
                {"name": "u", "type": "integer", "classification": "identifier"},
                {"name": "g", "type": "string", "classification": "attribute",
                 "public_values": ["a", "b"], "nullable": False},
                {"name": "x", "type": "integer", "classification": "sensitive",
                 "bounds": [0, 10]},
            ],
        }
    )  # fmt: skip
    db = build_from_rows(
        tmp_path / "t.duckdb",
        product,
        [(1, "a", 5), (2, "a", 50), (3, "b", -7), (4, "zzz-secret", 3), (5, "b", None)],
    )
    q = prep(product, "SELECT g, SUM(x), COUNT(x), COUNT(*) FROM t GROUP BY g", frozenset("gx"))
    got = exact(q, db, runner, limits)
    assert set(got) == {("a",), ("b",)}
    s = alias(q, MeasureKind.SUM, "x")
    assert got[("a",)][s] == 5 + 10 and got[("b",)][s] == 0
    assert got[("b",)][alias(q, MeasureKind.COUNT, "x")] == 1  # NULL not counted
    assert got[("b",)][alias(q, MeasureKind.COUNT, None)] == 2


# --- WHERE: random predicates against a Python evaluation -------------------------

INT_COLUMNS = {"age": (0, 100), "sex": (0, 1), "educ": (1, 16), "race": (1, 6), "married": (0, 1)}
OPS: dict[str, Callable[[int, int], bool]] = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@st.composite
def leaf(draw: st.DrawFn) -> tuple[str, Callable[[Row], bool]]:
    name = draw(st.sampled_from(sorted(INT_COLUMNS)))
    lo, hi = INT_COLUMNS[name]
    kind = draw(st.sampled_from(["cmp", "in", "between", "flip"]))
    v = draw(st.integers(lo - 1, hi + 1))
    if kind == "cmp":
        op = draw(st.sampled_from(sorted(OPS)))
        return f"{name} {op} {v}", lambda r: OPS[op](r[name], v)
    if kind == "flip":  # literal on the left
        op = draw(st.sampled_from(["<", ">", "="]))
        return f"{v} {op} {name}", lambda r: OPS[op](v, r[name])
    if kind == "in":
        vs = draw(st.lists(st.integers(lo, hi), min_size=1, max_size=4))
        text = ", ".join(map(str, vs))
        neg = draw(st.booleans())
        sql = f"{name} {'NOT ' if neg else ''}IN ({text})"
        return sql, lambda r: (r[name] in vs) != neg
    w = draw(st.integers(lo, hi))
    a, b = min(v, w), max(v, w)
    return f"{name} BETWEEN {a} AND {b}", lambda r: a <= r[name] <= b


@st.composite
def predicate(draw: st.DrawFn, depth: int = 2) -> tuple[str, Callable[[Row], bool]]:
    if depth == 0 or draw(st.booleans()):
        return draw(leaf())
    kind = draw(st.sampled_from(["and", "or", "not"]))
    left = draw(predicate(depth - 1))
    if kind == "not":
        return f"NOT ({left[0]})", lambda r: not left[1](r)
    right = draw(predicate(depth - 1))
    if kind == "and":
        return f"({left[0]}) AND ({right[0]})", lambda r: left[1](r) and right[1](r)
    return f"({left[0]}) OR ({right[0]})", lambda r: left[1](r) or right[1](r)


@settings(max_examples=60, deadline=None)
@given(pred=predicate())
def test_where_matches_python(
    pred: tuple[str, Callable[[Row], bool]],
    pums_product: DataProduct,
    pums_db: Path,
    pums_rows: list[Row],
    runner: UnsafeInProcessRunner,
    limits: EngineLimits,
) -> None:
    sql, fn = pred
    q = prep(pums_product, f"SELECT sex, COUNT(*), SUM(income) FROM pums WHERE {sql} GROUP BY sex")
    got = exact(q, pums_db, runner, limits)
    rows = bounded(pums_rows, 2, fn)
    for sex in (0, 1):
        part = [r for r in rows if r["sex"] == sex]
        values = got.get((sex,), {})
        assert (values.get(alias(q, MeasureKind.COUNT, None)) or 0) == len(part)
        assert (values.get(alias(q, MeasureKind.SUM, "income")) or 0) == sum(
            clip(r["income"], 0, 500000) for r in part
        )


# --- candidate codes on generated grids ---------------------------------------------

GRIDS = [
    ("float", [-5.0, 5.0], CodeMode.FLOAT_STEP, 1001),
    ("float", [0.1, 0.7], CodeMode.FLOAT_STEP, 1001),
    ("float", [-1e9, 3.5e9], CodeMode.FLOAT_STEP, 1001),
    ("integer", [-7, 123456], CodeMode.INT_STEP, 997),  # step 124, last point = hi
    ("integer", [0, 5000], CodeMode.INT_STEP, 1001),
    ("integer", [0, 1000], CodeMode.DENSE, 1001),
    ("integer", [3, 40], CodeMode.DENSE, 38),
]


@pytest.mark.parametrize(("ctype", "bounds", "mode", "size"), GRIDS)
def test_grid_quantile_codes_match_opendp(
    ctype: str,
    bounds: list[float],
    mode: CodeMode,
    size: int,
    tmp_path: Path,
    runner: UnsafeInProcessRunner,
    limits: EngineLimits,
) -> None:
    product = parse_manifest(
        {
            "id": "q",
            "title": "q",
            "privacy_unit": "u",
            "max_rows_per_unit": 1,
            "columns": [
                {"name": "u", "type": "integer", "classification": "identifier"},
                {"name": "x", "type": ctype, "classification": "sensitive", "bounds": bounds},
            ],
        }
    )
    column = product.column("x")
    assert column is not None
    grid = quantile_grid(column)
    assert grid.mode is mode and len(grid.candidates) == size
    assert list(grid.candidates) == sorted(set(grid.candidates))
    lo, hi = bounds
    rng = random.Random(11)
    width = hi - lo
    xs: list[float] = [rng.uniform(lo - width / 10, hi + width / 10) for _ in range(400)]
    xs += [rng.choice(grid.candidates) for _ in range(200)] + [lo, hi]
    if ctype == "integer":
        xs = [round(x) for x in xs]
        xs += [c + d for c in rng.sample(grid.candidates, 30) for d in (-1, 1)]
    db = build_from_rows(tmp_path / "q.duckdb", product, [(i, x) for i, x in enumerate(xs)])
    for alpha, text in [(Fraction(1, 2), "MEDIAN(x)"), (Fraction(3, 4), "QUANTILE_CONT(x, 0.75)")]:
        q = prep(product, f"SELECT {text} FROM q", frozenset({"x"}))
        [m] = q.plan.measurements
        assert len(q.rewritten_sql) < 20_000  # no giant CASE trees for generated grids
        [(histogram,)] = runner.run(db, q.rewritten_sql, limits)
        mine = quantile_scores(histogram, m)
        theirs, sens = opendp_scores([clip(x, lo, hi) for x in xs], m.candidates, float(alpha))
        factor = sens // m.row_bound
        assert [s * factor for s in mine] == list(theirs)
        assert sum(histogram.values()) == len(xs)


# --- layout 2: sums read the loader's stored fixed-point columns --------------------


STORED_MANIFEST: dict[str, Any] = {
    "id": "s",
    "title": "s",
    "privacy_unit": "pid",
    "max_rows_per_unit": 2,
    "columns": [
        {"name": "pid", "type": "string", "classification": "identifier"},
        {"name": "g", "type": "string", "classification": "attribute",
         "public_values": ["a", "b", "c"]},
        {"name": "x", "type": "integer", "classification": "sensitive", "bounds": [-7, 40]},
        {"name": "f", "type": "float", "classification": "sensitive", "bounds": [-2.5, 1e6]},
        {"name": "h", "type": "float", "classification": "sensitive", "bounds": [0.001, 0.3]},
    ],
}  # fmt: skip


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.integers(1, 3))
def test_stored_fixed_point_sums_equal_sql_clipping(
    tmp_path_factory: pytest.TempPathFactory, seed: int, k: int
) -> None:
    """The same exact integers whether the sums read the stored columns or clip and
    round in SQL, on data with values beyond both bounds and NULLs."""
    from products.loader import DataFormat, LoadLimits, load_file
    from sandbox.engine.isolation import StoredColumnsSQL, choose_sql, table_columns

    rng = random.Random(seed)
    tmp = tmp_path_factory.mktemp("stored")
    lines = ["pid,g,x,f,h"]
    for i in range(400):
        for _ in range(rng.randint(1, 4)):
            x = "" if rng.random() < 0.05 else str(rng.randint(-20, 60))
            f = "" if rng.random() < 0.05 else repr(rng.uniform(-10, 2e6))
            h = repr(rng.uniform(-0.1, 0.5))
            lines.append(f"P{i},{rng.choice('abc')},{x},{f},{h}")
    src = tmp / "rows.csv"
    src.write_text("\n".join(lines) + "\n")
    product = parse_manifest({**STORED_MANIFEST, "max_rows_per_unit": k})
    db = tmp / "v.duckdb"
    load_file(product, src, DataFormat.CSV, db, limits=LoadLimits(rows_per_bucket=300))
    runner = UnsafeInProcessRunner()
    limits = EngineLimits()
    q = prepare(
        product,
        "SELECT g, COUNT(x), SUM(x), AVG(x), SUM(f), AVG(f), SUM(h), AVG(h) FROM s "
        "WHERE x IS NULL OR x < 50 GROUP BY g",
        allowed_columns=frozenset({"g", "x", "f", "h"}),
        delta=0,
        epsilon=Decimal(1),
    )
    statement = q.statement
    assert isinstance(statement, StoredColumnsSQL) and q.plan.stored_sql is not None
    assert "ROUND" not in q.plan.stored_sql and "ROUND" in q.rewritten_sql
    con = duckdb.connect(str(db), read_only=True)
    assert choose_sql(statement, table_columns(con, "s")) == q.plan.stored_sql
    con.close()
    stored = sorted(runner.run(db, q.plan.stored_sql, limits))
    clipped = sorted(runner.run(db, q.rewritten_sql, limits))
    assert stored == clipped and len(stored) == 3
    assert sorted(runner.run(db, statement, limits)) == stored
    # |v| <= row_bound for every row: the per-row bound holds without a re-clamp.
    for m in q.plan.measurements:
        if m.fixed is not None:
            lo, hi = m.fixed.lo_units, m.fixed.hi_units
            con = duckdb.connect(str(db), read_only=True)
            (vmin, vmax) = con.execute(
                f'SELECT min("{m.fixed.name}"), max("{m.fixed.name}") FROM s'
            ).fetchone()  # type: ignore[misc]
            con.close()
            assert lo <= vmin and vmax <= hi
            assert (
                max(abs(m.scale_by * vmin - m.offset), abs(m.scale_by * vmax - m.offset))
                <= m.row_bound
            )
    # A query's own CLIP bounds name other stored columns, which the file lacks: that
    # query clips in SQL (the stored values were clipped to the manifest's bounds).
    narrowed = prepare(
        product,
        "SELECT g, SUM(CLIP(x, 0, 10)) FROM s GROUP BY g",
        allowed_columns=frozenset({"g", "x"}),
        delta=0,
        epsilon=Decimal(1),
    )
    assert isinstance(narrowed.statement, StoredColumnsSQL)
    con = duckdb.connect(str(db), read_only=True)
    assert choose_sql(narrowed.statement, table_columns(con, "s")) == narrowed.rewritten_sql
    con.close()


def test_files_without_stored_columns_use_sql_clipping(
    pums_product: DataProduct, pums_db: Path
) -> None:
    from sandbox.engine.isolation import choose_sql, table_columns

    q = prep(pums_product, "SELECT sex, SUM(income), AVG(income) FROM pums GROUP BY sex")
    con = duckdb.connect(str(pums_db), read_only=True)
    assert choose_sql(q.statement, table_columns(con, "pums")) == q.rewritten_sql
    con.close()
