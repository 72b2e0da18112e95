"""Released noise has the scale the accounting claims (count, integer sum, float sum,
mean) — checked on thousands of draws against the exact moments of the discrete
Laplace distribution, with 7-sigma tolerances so the tests cannot flake (OpenDP has no
seedable RNG). Each execute of a 200-group query gives 200 independent draws."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from products.manifest import DataProduct, parse_manifest
from sandbox.engine import EngineLimits, PreparedQuery, WorkerPool, execute, prepare
from sandbox.engine.plan import MeasureKind
from tests.sandbox.engine.conftest import build_from_select

GROUPS = 200
PER_GROUP = 500
RUNS = 10  # 2,000 draws per statistic
SIGMAS = 7.0

STATS: dict[str, object] = {
    "id": "stats",
    "title": "noise calibration",
    "privacy_unit": "u",
    "max_rows_per_unit": 1,
    "columns": [
        {"name": "u", "type": "integer", "classification": "identifier"},
        {"name": "g", "type": "integer", "classification": "attribute",
         "public_values": list(range(GROUPS)), "bounds": [0, GROUPS - 1], "nullable": False},
        {"name": "x", "type": "integer", "classification": "sensitive", "bounds": [0, 100],
         "nullable": False},
        {"name": "f", "type": "float", "classification": "sensitive", "bounds": [0, 10.0],
         "nullable": False},
    ],
}  # fmt: skip
ALLOWED = frozenset({"g", "x", "f"})


@dataclass(frozen=True)
class DiscreteLaplace:
    """Exact moments of the discrete Laplace distribution with the given scale."""

    scale: float

    @property
    def r(self) -> float:
        return math.exp(-1.0 / self.scale)

    @property
    def mean_abs(self) -> float:
        r = self.r
        return 2 * r / (1 - r * r)

    @property
    def second(self) -> float:
        r = self.r
        return 2 * r / (1 - r) ** 2

    @property
    def fourth(self) -> float:
        r = self.r
        return 2 * (1 - r) / (1 + r) * r * (1 + 11 * r + 11 * r * r + r**3) / (1 - r) ** 5

    def check(self, errors: list[int]) -> None:
        """Assert mean, mean |e| and mean e^2 of ``errors`` match, within 7 sigma."""
        n = len(errors)
        mean = sum(errors) / n
        mean_abs = sum(abs(e) for e in errors) / n
        mean_sq = sum(e * e for e in errors) / n
        assert abs(mean) <= SIGMAS * math.sqrt(self.second / n), (mean, self.scale)
        sd_abs = math.sqrt((self.second - self.mean_abs**2) / n)
        assert abs(mean_abs - self.mean_abs) <= SIGMAS * sd_abs, (mean_abs, self.mean_abs)
        sd_sq = math.sqrt((self.fourth - self.second**2) / n)
        assert abs(mean_sq - self.second) <= SIGMAS * sd_sq, (mean_sq, self.second)


@pytest.fixture(scope="module")
def stats_product() -> DataProduct:
    return parse_manifest(STATS)


@pytest.fixture(scope="module")
def stats_db(tmp_path_factory: pytest.TempPathFactory, stats_product: DataProduct) -> Path:
    path = tmp_path_factory.mktemp("stats") / "stats.duckdb"
    # group g = u % 200; x is 0 or 100 in equal numbers per group (so the centred sum
    # AVG uses is exactly 0); f has two decimals.
    select = (
        f"SELECT range AS u, range % {GROUPS} AS g, "
        f"100 * ((range // {GROUPS}) % 2) AS x, ((range * 7919) % 1000) / 100.0 AS f "
        f"FROM range({GROUPS * PER_GROUP})"
    )
    return build_from_select(path, stats_product, select)


def exact_by_group(q: PreparedQuery, db: Path, pool: WorkerPool) -> dict[int, dict[str, int]]:
    rows = pool.run(db, q.rewritten_sql, EngineLimits())
    return {
        int(r[0]): {m.alias: int(v) for m, v in zip(q.plan.measurements, r[1:], strict=True)}
        for r in rows
    }


def draws(
    q: PreparedQuery, db: Path, pool: WorkerPool, column: int, exact: Mapping[int, Fraction | int]
) -> list[Fraction]:
    """Execute ``q`` RUNS times; return released minus exact for every group."""
    out: list[Fraction] = []
    for _ in range(RUNS):
        answer = execute(q, db, EngineLimits(), runner=pool)
        assert answer.epsilon_spent == q.epsilon
        for row in answer.rows:
            key, value = row[0], row[column]
            assert isinstance(key, int) and isinstance(value, int | float)
            out.append(Fraction(value) - exact[key])
    return out


def test_count_noise_has_the_claimed_scale(
    stats_product: DataProduct, stats_db: Path, pool: WorkerPool
) -> None:
    q = prepare(
        stats_product,
        "SELECT g, COUNT(*) FROM stats GROUP BY g",
        allowed_columns=ALLOWED,
        delta=0,
        epsilon=Decimal("0.5"),
    )
    [a] = q.allocations
    assert a.measurement.sensitivity == 1 and a.scale == pytest.approx(2.0)
    exact = {g: v[a.measurement.alias] for g, v in exact_by_group(q, stats_db, pool).items()}
    errors = draws(q, stats_db, pool, 1, exact)
    assert len(errors) == RUNS * GROUPS
    DiscreteLaplace(a.scale).check([int(e) for e in errors])


def test_integer_sum_noise_has_the_claimed_scale(
    stats_product: DataProduct, stats_db: Path, pool: WorkerPool
) -> None:
    q = prepare(
        stats_product,
        "SELECT g, SUM(x) FROM stats GROUP BY g",
        allowed_columns=ALLOWED,
        delta=0,
        epsilon=Decimal("2"),
    )
    [a] = q.allocations
    assert a.measurement.sensitivity == 100 and a.scale == pytest.approx(50.0)
    exact = {g: v[a.measurement.alias] for g, v in exact_by_group(q, stats_db, pool).items()}
    DiscreteLaplace(a.scale).check([int(e) for e in draws(q, stats_db, pool, 1, exact)])


def test_float_sum_noise_has_the_claimed_scale(
    stats_product: DataProduct, stats_db: Path, pool: WorkerPool
) -> None:
    q = prepare(
        stats_product,
        "SELECT g, SUM(f) FROM stats GROUP BY g",
        allowed_columns=ALLOWED,
        delta=0,
        epsilon=Decimal("1"),
    )
    [a] = q.allocations
    m = a.measurement
    # In real units: sensitivity k * max|bound| = 10, scale 10 / epsilon.
    assert float(m.sensitivity * m.quantum) == pytest.approx(10.0, rel=1e-6)
    assert float(a.scale * m.quantum) == pytest.approx(10.0, rel=1e-6)
    exact_int = {g: v[m.alias] for g, v in exact_by_group(q, stats_db, pool).items()}
    exact = {g: v * m.quantum for g, v in exact_int.items()}
    # released = noisy_integer * quantum exactly, so the integer noise is recoverable.
    integer_noise = []
    for error in draws(q, stats_db, pool, 1, exact):
        units = error / m.quantum
        assert units.denominator == 1
        integer_noise.append(int(units))
    DiscreteLaplace(a.scale).check(integer_noise)


def test_mean_noise_has_the_claimed_scale(
    stats_product: DataProduct, stats_db: Path, pool: WorkerPool
) -> None:
    q = prepare(
        stats_product,
        "SELECT g, AVG(x) AS a, COUNT(x) AS c FROM stats GROUP BY g",
        allowed_columns=ALLOWED,
        delta=0,
        epsilon=Decimal("1"),
    )
    centred = next(a for a in q.allocations if a.measurement.kind is MeasureKind.CENTERED_SUM)
    count = next(a for a in q.allocations if a.measurement.kind is MeasureKind.COUNT)
    # AVG(x) = 50 + (S / 2) / C with S = Σ(2x − 100): sensitivity 100 half-units.
    assert centred.measurement.sensitivity == 100 and centred.epsilon == pytest.approx(0.5)
    assert centred.scale == pytest.approx(200.0) and count.scale == pytest.approx(2.0)
    noise_s: list[int] = []
    deviations: list[float] = []
    for _ in range(RUNS):
        answer = execute(q, stats_db, EngineLimits(), runner=pool)
        for _g, mean, c in answer.rows:
            assert isinstance(mean, float) and isinstance(c, int)
            # exact centred sum is 0 and the count is shared, so the sum's noise is
            # recoverable exactly from the released mean and count
            noise_s.append(round(2 * (mean - 50) * c))
            deviations.append(mean - 50)
    DiscreteLaplace(centred.scale).check(noise_s)
    # And directly: Var(mean) ~ Var(S) / (2 C)^2 (count noise is tiny next to C = 500).
    var = sum(d * d for d in deviations) / len(deviations)
    claimed = DiscreteLaplace(centred.scale).second / (2 * PER_GROUP) ** 2
    assert 0.7 * claimed < var < 1.3 * claimed
