"""The engine's public API: prepare (preview without data) and execute (DP answer):
empty groups, threshold-released unknown keys, min_group_size, ordering, JSON types,
epsilon split and validation."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from products.errors import DomainError
from products.manifest import DataProduct, parse_manifest
from sandbox.engine import (
    EngineLimits,
    UnsafeInProcessRunner,
    WorkerPool,
    execute,
    prepare,
)
from sandbox.engine.plan import CodeMode, MeasureKind
from tests.sandbox.engine.conftest import PUMS_ALLOWED, build_from_rows, pums_manifest, table_rows

REGISTRY: dict[str, Any] = {
    "id": "registry",
    "title": "Enterprise registrations",
    "privacy_unit": "uscc",
    "max_rows_per_unit": 1,
    "columns": [
        {"name": "uscc", "type": "string", "classification": "identifier"},
        {"name": "district", "type": "string", "classification": "attribute",
         "public_values": ["A", "B", "C", "D"]},
        {"name": "sector", "type": "string", "classification": "attribute"},
        {"name": "founded", "type": "date", "classification": "attribute",
         "public_values": ["2020-01-01", "2021-01-01"], "nullable": False},
        {"name": "active", "type": "boolean", "classification": "attribute"},
        {"name": "capital", "type": "float", "classification": "sensitive",
         "bounds": [0, 1.0e6]},
        {"name": "staff", "type": "integer", "classification": "sensitive",
         "bounds": [0, 1000], "bins": [0, 10, 100, 1000]},
    ],
}  # fmt: skip
REGISTRY_ALLOWED = frozenset({"district", "sector", "founded", "active", "capital", "staff"})


def registry_rows() -> list[tuple[Any, ...]]:
    rows = []
    for i in range(3000):
        district = "ABC"[i % 3]  # D stays empty
        sector = "retail" if i % 2 else "tech"
        if i < 5:
            sector = "rare-sector-name"  # too few rows to pass the threshold
        founded = dt.date(2020 + (i % 2), 1, 1)
        active = None if i % 10 == 0 else bool(i % 3)
        rows.append((f"U{i:06d}", district, sector, founded, active, float(i % 1000) * 100.5,
                     i % 500))  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def registry() -> DataProduct:
    return parse_manifest(REGISTRY)


@pytest.fixture(scope="module")
def registry_db(tmp_path_factory: pytest.TempPathFactory, registry: DataProduct) -> Path:
    path = tmp_path_factory.mktemp("registry") / "registry.duckdb"
    return build_from_rows(path, registry, registry_rows())


def run(
    product: DataProduct,
    db: Path,
    sql: str,
    *,
    epsilon: str = "1",
    delta: float = 0.0,
    allowed: frozenset[str] = REGISTRY_ALLOWED,
) -> Any:
    q = prepare(product, sql, allowed_columns=allowed, delta=delta, epsilon=Decimal(epsilon))
    return q, execute(q, db, EngineLimits(threads=1), runner=UnsafeInProcessRunner())


def test_all_public_keys_released_including_empty_groups(
    registry: DataProduct, registry_db: Path
) -> None:
    _, answer = run(
        registry, registry_db, "SELECT district, COUNT(*) AS n FROM registry GROUP BY district"
    )
    assert answer.columns == ["district", "n"]
    assert [r[0] for r in answer.rows] == ["A", "B", "C", "D", None]  # nullable: NULL key too
    by_key = {r[0]: r[1] for r in answer.rows}
    assert all(isinstance(v, int) and v >= 0 for v in by_key.values())
    assert by_key["D"] < 50 and by_key["A"] > 800


def test_keys_are_the_cartesian_product_of_key_sets(
    registry: DataProduct, registry_db: Path
) -> None:
    _, answer = run(
        registry,
        registry_db,
        "SELECT founded, active, COUNT(*) FROM registry WHERE district = 'A' "
        "GROUP BY founded, active",
    )
    keys = [(r[0], r[1]) for r in answer.rows]
    assert keys == [(f, a) for f in ("2020-01-01", "2021-01-01") for a in (False, True, None)]


def test_where_with_dates_strings_booleans(registry: DataProduct, registry_db: Path) -> None:
    rows = table_rows(registry_db, registry)
    truth = sum(
        1
        for r in rows
        if r["founded"] >= dt.date(2021, 1, 1) and r["district"] in ("A", "B") and r["active"]
    )
    _, answer = run(
        registry,
        registry_db,
        "SELECT COUNT(*) FROM registry WHERE founded >= DATE '2021-01-01' "
        "AND district IN ('A', 'B') AND active = TRUE",
        epsilon="20",
    )
    assert abs(answer.rows[0][0] - truth) < 10  # scale 1/20: error above 10 has p < 1e-80


def test_unknown_keys_refused_without_delta(registry: DataProduct) -> None:
    with pytest.raises(DomainError) as info:
        prepare(
            registry,
            "SELECT sector, COUNT(*) FROM registry GROUP BY sector",
            allowed_columns=REGISTRY_ALLOWED,
            delta=0,
            epsilon=Decimal(1),
        )
    assert info.value.code == "column_not_allowed"
    assert "public_values" in info.value.message and "delta" in info.value.message


def test_unknown_keys_through_threshold_with_delta(
    registry: DataProduct, registry_db: Path
) -> None:
    q, answer = run(
        registry,
        registry_db,
        "SELECT sector, COUNT(*) AS n, SUM(staff) AS s FROM registry GROUP BY sector "
        "ORDER BY sector",
        delta=1e-6,
    )
    [selector] = [m for m in q.measurements() if m["mechanism"] == "laplace_threshold"]
    assert selector["threshold"] > 5 and selector["delta"] == 1e-6
    assert answer.delta_spent == 1e-6
    assert [r[0] for r in answer.rows] == ["retail", "tech"]  # the 5-row sector is dropped
    assert all(r[1] >= selector["threshold"] for r in answer.rows)


def test_unknown_keys_never_invent_keys(registry: DataProduct, registry_db: Path) -> None:
    # Threshold releases only keys present in the data, never more.
    present = {(r["sector"], r["district"]) for r in table_rows(registry_db, registry)}
    for _ in range(5):
        _, answer = run(
            registry,
            registry_db,
            "SELECT sector, district, COUNT(*) FROM registry GROUP BY sector, district",
            delta=1e-3,
        )
        for sector, district, _count in answer.rows:
            assert (sector, district) in present


def test_bins_release_labels_and_order_by_bin(registry: DataProduct, registry_db: Path) -> None:
    _, answer = run(
        registry,
        registry_db,
        "SELECT BIN(staff) AS b, COUNT(*) AS n FROM registry GROUP BY b ORDER BY b DESC",
    )
    assert [r[0] for r in answer.rows] == ["[100, 1000]", "[10, 100)", "[0, 10)"]


def test_min_group_size_suppresses_small_groups(tmp_path: Path) -> None:
    product = parse_manifest({**REGISTRY, "min_group_size": 100})
    db = build_from_rows(tmp_path / "r.duckdb", product, registry_rows())
    q, answer = run(product, db, "SELECT district, SUM(staff) FROM registry GROUP BY district")
    # An implicit COUNT(*) decides suppression, and takes its share of epsilon.
    assert [m["kind"] for m in q.measurements()] == ["sum", "count"]
    assert [r[0] for r in answer.rows] == ["A", "B", "C"]  # D and NULL are empty
    _, single = run(product, db, "SELECT SUM(staff) FROM registry WHERE district = 'D'")
    assert single.rows == [[None]]


def test_order_by_limit_offset_are_post_processing(
    registry: DataProduct, registry_db: Path
) -> None:
    q, answer = run(
        registry,
        registry_db,
        "SELECT district AS d, COUNT(*) AS n FROM registry GROUP BY d "
        "ORDER BY n DESC NULLS LAST, d LIMIT 2 OFFSET 1",
    )
    assert "ORDER" not in q.rewritten_sql and "LIMIT" not in q.rewritten_sql
    assert len(answer.rows) == 2
    assert answer.rows[0][1] >= answer.rows[1][1]


def test_json_scalar_types(registry: DataProduct, registry_db: Path) -> None:
    _, answer = run(
        registry,
        registry_db,
        "SELECT founded, COUNT(*), SUM(capital), AVG(capital), SUM(staff), MEDIAN(staff) "
        "FROM registry GROUP BY founded",
    )
    for founded, n, s_cap, a_cap, s_staff, med in answer.rows:
        assert isinstance(founded, str)
        assert isinstance(n, int) and isinstance(s_staff, int) and isinstance(med, int)
        assert isinstance(s_cap, float) and isinstance(a_cap, float)
        assert 0 <= a_cap <= 1.0e6


def test_epsilon_is_split_evenly_across_distinct_measurements(
    registry: DataProduct,
) -> None:
    q = prepare(
        registry,
        "SELECT COUNT(*), AVG(staff), COUNT(staff), SUM(staff), SUM(staff) AS again FROM registry",
        allowed_columns=REGISTRY_ALLOWED,
        delta=0,
        epsilon=Decimal("0.9"),
    )
    kinds = sorted(m["kind"] for m in q.measurements())
    # COUNT(staff) is shared by AVG; the repeated SUM is released once.
    assert kinds == ["centered_sum", "count", "count", "sum"]
    assert all(m["epsilon"] == pytest.approx(0.225) for m in q.measurements())
    assert sum(m["epsilon"] for m in q.measurements()) <= 0.9
    counts = [m for m in q.measurements() if m["kind"] == "count"]
    assert all(m["sensitivity"] == 1 and m["scale"] == pytest.approx(1 / 0.225) for m in counts)
    [total] = [m for m in q.measurements() if m["kind"] == "sum"]
    assert total["sensitivity"] == 1000 and total["scale"] == pytest.approx(1000 / 0.225)


def test_sensitivity_uses_max_rows_per_unit() -> None:
    product = pums_manifest(k=3)
    q = prepare(
        product,
        "SELECT sex, COUNT(*), SUM(income) FROM pums GROUP BY sex",
        allowed_columns=PUMS_ALLOWED,
        delta=0,
        epsilon=Decimal(1),
    )
    count, total = q.measurements()
    assert count["sensitivity"] == 3 and total["sensitivity"] == 3 * 500000
    assert '_unit_rank" <= 3' in q.rewritten_sql


def test_preview_accuracy_without_data(registry: DataProduct) -> None:
    q = prepare(
        registry,
        "SELECT district, COUNT(*) AS n, SUM(capital) AS s, AVG(staff) AS a, "
        "MEDIAN(staff) AS m FROM registry GROUP BY district",
        allowed_columns=REGISTRY_ALLOWED,
        delta=0,
        epsilon=Decimal("1.0"),
    )
    acc = {a["column"]: a["ci95"] for a in q.accuracy()}
    assert set(acc) == {"n", "s", "a", "m"}
    count_scale = next(m["scale"] for m in q.measurements() if m["kind"] == "count")
    assert acc["n"] == pytest.approx(count_scale * math.log(20), abs=1)
    sum_scale = next(m["scale"] for m in q.measurements() if m["kind"] == "sum")
    assert acc["s"] == pytest.approx(sum_scale * math.log(20), rel=1e-3)
    assert acc["a"] is None and acc["m"] is None  # data-dependent: reported by execute


def test_answer_accuracy_and_epsilon(
    registry: DataProduct, registry_db: Path, pool: WorkerPool
) -> None:
    q = prepare(
        registry,
        "SELECT COUNT(*) AS n, AVG(staff) AS a FROM registry",
        allowed_columns=REGISTRY_ALLOWED,
        delta=0,
        epsilon=Decimal("0.5"),
    )
    answer = execute(q, registry_db, EngineLimits(), runner=pool)
    assert answer.epsilon_spent == Decimal("0.5")
    acc = {a["column"]: a["ci95"] for a in answer.accuracy}
    assert acc["n"] == q.accuracy()[0]["ci95"]
    assert isinstance(acc["a"], float) and 0 < acc["a"] < 5  # ~3000 rows, bounds [0, 1000]


def test_identical_queries_share_a_normalised_key(registry: DataProduct) -> None:
    texts = [
        "SELECT district, COUNT(*) FROM registry GROUP BY district",
        "select DISTRICT, count(*)\nfrom REGISTRY -- comment\ngroup by district",
        'SELECT "district", COUNT(*) FROM "registry" /* c */ GROUP BY "district"',
    ]
    keys = {
        prepare(
            registry, t, allowed_columns=REGISTRY_ALLOWED, delta=0, epsilon=Decimal(1)
        ).normalized_sql
        for t in texts
    }
    assert len(keys) == 1


@pytest.mark.parametrize("epsilon", [Decimal(0), Decimal(-1), Decimal("NaN"), Decimal("Infinity")])
def test_epsilon_must_be_positive(registry: DataProduct, epsilon: Decimal) -> None:
    with pytest.raises(DomainError) as info:
        prepare(
            registry,
            "SELECT COUNT(*) FROM registry",
            allowed_columns=REGISTRY_ALLOWED,
            delta=0,
            epsilon=epsilon,
        )
    assert info.value.code == "invalid_request"


@pytest.mark.parametrize("delta", [-0.1, 1.0, 2.0, float("nan")])
def test_delta_must_be_in_range(registry: DataProduct, delta: float) -> None:
    with pytest.raises(DomainError) as info:
        prepare(
            registry,
            "SELECT COUNT(*) FROM registry",
            allowed_columns=REGISTRY_ALLOWED,
            delta=delta,
            epsilon=Decimal(1),
        )
    assert info.value.code == "invalid_request"


def test_tiny_epsilon_is_refused_not_overflowed(registry: DataProduct) -> None:
    with pytest.raises(DomainError) as info:
        prepare(
            registry,
            "SELECT SUM(capital) FROM registry",
            allowed_columns=REGISTRY_ALLOWED,
            delta=0,
            epsilon=Decimal("1e-12"),
        )
    assert info.value.code == "invalid_request"


def test_scope_and_manifest_refusals_teach(registry: DataProduct) -> None:
    cases = {
        "SELECT COUNT(*) FROM registry WHERE capital > 5": ("column_not_allowed", "capital"),
        "SELECT SUM(district) FROM registry": ("column_not_allowed", "numeric"),
        "SELECT COUNT(*) FROM registry WHERE nope = 1": ("unknown_column", "nope"),
        "SELECT uscc, COUNT(*) FROM registry GROUP BY uscc": ("column_not_allowed", "identifier"),
        "SELECT COUNT(*) FROM registry WHERE founded = 5": ("unsupported_query", "DATE"),
        "SELECT COUNT(*) FROM registry WHERE district = 1": ("unsupported_query", "string"),
        "SELECT BIN(capital), COUNT(*) FROM registry GROUP BY 1": ("column_not_allowed", "bins"),
    }
    allowed = REGISTRY_ALLOWED - {"capital"} | {"capital"}
    for sql, (code, word) in cases.items():
        scope = allowed - {"capital"} if "capital >" in sql else allowed
        with pytest.raises(DomainError) as info:
            prepare(registry, sql, allowed_columns=scope, delta=0, epsilon=Decimal(1))
        assert info.value.code == code, sql
        assert word in info.value.message, info.value.message


def test_count_star_needs_no_column(registry: DataProduct, registry_db: Path) -> None:
    _, answer = run(registry, registry_db, "SELECT COUNT(*) FROM registry", allowed=frozenset())
    assert len(answer.rows) == 1


def test_quantile_is_close_at_large_epsilon(
    pums_product: DataProduct, pums_db: Path, limits: EngineLimits
) -> None:
    rows = [r for r in table_rows(pums_db, pums_product) if r["_unit_rank"] <= 2]
    educ = sorted(r["educ"] for r in rows)
    true_median = educ[len(educ) // 2]
    q = prepare(
        pums_product,
        "SELECT MEDIAN(educ) FROM pums",
        allowed_columns=PUMS_ALLOWED,
        delta=0,
        epsilon=Decimal(50),
    )
    [m] = q.plan.measurements
    assert m.kind is MeasureKind.QUANTILE and m.grid is not None
    assert m.grid.mode is CodeMode.DENSE
    answer = execute(q, pums_db, limits, runner=UnsafeInProcessRunner())
    assert abs(answer.rows[0][0] - true_median) <= 1
