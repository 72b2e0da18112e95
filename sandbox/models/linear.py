"""DP linear regression by noisy sufficient statistics (DESIGN §11.2).

Every feature and the target are clipped to their declared bounds and mapped to
``[-1, 1]`` (``z = (2x - lo - hi) / (hi - lo)``); with ``u = (1, z_1 .. z_p, y)`` the
statistics are the sums of ``u_i · u_j`` over the contribution-bounded rows
(``i <= j``: the count, the sums, the cross products). DuckDB computes them inside the
isolated worker in fixed point (each per-row product rounded to a multiple of
``1 / QUANTUM``, so ``|v| <= QUANTUM`` per row and entry) and sums exactly; the
vector is released with OpenDP's discrete Laplace at L1 sensitivity
``k · D · QUANTUM`` (``D`` entries). Rows with a NULL in any of the columns are left
out (a per-row filter: it does not change the sensitivity).

The coefficients are post-processing: a ridge-stabilised solve of the noisy normal
equations in the unit scale, mapped back to the columns' units. Why sufficient
statistics rather than OpenDP's private Theil-Sen: measured on PUMS in
docs/models.md (several features, one pass at ten million rows, better accuracy at
every epsilon tried).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlglot import exp

from products.manifest import Column, DataProduct
from sandbox.engine import noise
from sandbox.engine.accuracy import discrete_laplace_ci95
from sandbox.engine.isolation import Deadline, Row
from sandbox.engine.plan import key_name, literal
from sandbox.models.encoding import bounded_rows

QUANTUM = 1 << 20
BOOTSTRAP = 200


@dataclass(frozen=True)
class LinearPlan:
    features: tuple[Column, ...]
    target: Column
    k: int
    epsilon: float

    @property
    def columns(self) -> tuple[Column, ...]:
        return (*self.features, self.target)

    @property
    def dim(self) -> int:
        return len(self.features) + 2  # (1, z..., y)

    @property
    def entries(self) -> list[tuple[int, int]]:
        d = self.dim
        return [(i, j) for i in range(d) for j in range(i, d)]

    @property
    def sensitivity(self) -> int:
        return self.k * len(self.entries) * QUANTUM

    def scale(self) -> float:
        return noise.laplace_scale(self.sensitivity, self.epsilon)

    def accuracy(self) -> list[dict[str, Any]]:
        """95% half-width of each released sum, in units of the scaled products."""
        return [
            {
                "statistic": "sufficient_statistics",
                "epsilon": self.epsilon,
                "entries": len(self.entries),
                "ci95": discrete_laplace_ci95(self.scale()) / QUANTUM,
            }
        ]


def _unit(ref: exp.Expr, column: Column) -> exp.Expr:
    assert column.bounds is not None
    lo, hi = float(column.bounds[0]), float(column.bounds[1])
    x = exp.cast(ref, exp.DataType.build("DOUBLE"))
    clipped = exp.func("least", exp.func("greatest", x, literal(lo)), literal(hi))
    if hi <= lo:
        return literal(0.0)
    return exp.Div(
        this=exp.Paren(
            this=exp.Sub(
                this=exp.Mul(this=literal(2.0), expression=clipped), expression=literal(lo + hi)
            )
        ),
        expression=literal(hi - lo),
    )


def stats_sql(product: DataProduct, plan: LinearPlan) -> str:
    """SQL of the fixed-point sums (one row, one column per entry)."""
    inner = bounded_rows(product, plan.columns)
    refs = [exp.column(key_name(i), quoted=True) for i in range(len(plan.columns))]
    us: list[exp.Expr] = [literal(1.0)] + [
        _unit(r, c) for r, c in zip(refs, plan.columns, strict=True)
    ]
    sums = []
    for n, (i, j) in enumerate(plan.entries):
        product_ij = exp.Mul(
            this=exp.Paren(this=us[i].copy()), expression=exp.Paren(this=us[j].copy())
        )
        fixed = exp.cast(
            exp.Round(this=exp.Mul(this=product_ij, expression=literal(float(QUANTUM)))),
            exp.DataType.build("BIGINT"),
        )
        sums.append(
            exp.alias_(exp.func("coalesce", exp.Sum(this=fixed), literal(0)), f"s{n}", quoted=True)
        )
    not_null = exp.and_(*(exp.Not(this=exp.Is(this=r.copy(), expression=exp.Null())) for r in refs))
    select = exp.select(*sums).from_(inner.subquery("rows", copy=False), copy=False).where(not_null)
    return str(select.sql(dialect="duckdb"))


@dataclass(frozen=True)
class LinearRelease:
    stats: tuple[int, ...]  # noisy fixed-point sums, in ``plan.entries`` order
    scale: float


def release(plan: LinearPlan, rows: list[Row], deadline: Deadline) -> LinearRelease:
    """Run in the isolated worker: add OpenDP noise to the exact sums."""
    exact = [int(v) for v in rows[0]] if rows else [0] * len(plan.entries)
    scale = plan.scale()
    noisy = noise.release_integers(
        exact, sensitivity=plan.sensitivity, scale=scale, epsilon=plan.epsilon
    )
    return LinearRelease(tuple(noisy), scale)


def _matrix(
    plan: LinearPlan, stats: Sequence[float] | npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    d = plan.dim
    m = np.zeros((d, d))
    for (i, j), v in zip(plan.entries, stats, strict=True):
        m[i, j] = m[j, i] = v / QUANTUM
    return m


def solve(
    plan: LinearPlan, stats: Sequence[float] | npt.NDArray[np.float64], noise_sd: float
) -> tuple[npt.NDArray[np.float64], dict[str, float]]:
    """Coefficients in the unit scale ``(b0, b1..bp)`` and fit statistics, from the
    (noisy) sums. ``noise_sd`` (in unit-scale sums) sets the ridge that keeps the
    noisy normal equations well posed."""
    m = _matrix(plan, stats)
    p1 = plan.dim - 1
    a, b, yy = m[:p1, :p1], m[:p1, p1], m[p1, p1]
    n = max(a[0, 0], 1.0)
    # Project the noisy Gram matrix onto positive definite ones, then a small ridge.
    w, v = np.linalg.eigh(a)
    a_pd = (v * np.clip(w, noise_sd, None)) @ v.T
    ridge = np.eye(p1) * noise_sd
    ridge[0, 0] = 0.0
    beta = np.linalg.solve(a_pd + ridge, b)
    ss_tot = max(yy - b[0] ** 2 / n, 1e-12)
    ss_res = max(yy - 2 * beta @ b + beta @ a_pd @ beta, 0.0)
    return beta, {
        "n": float(n),
        "r2": float(1 - ss_res / ss_tot),
        "rmse_unit": float(np.sqrt(ss_res / n)),
    }


def to_original(plan: LinearPlan, beta: npt.NDArray[np.float64]) -> tuple[float, list[float]]:
    """Map unit-scale coefficients to the columns' units: (intercept, coefficients)."""

    def mid_half(c: Column) -> tuple[float, float]:
        assert c.bounds is not None
        lo, hi = float(c.bounds[0]), float(c.bounds[1])
        return (lo + hi) / 2, max((hi - lo) / 2, 1e-300)

    my, hy = mid_half(plan.target)
    coefs = []
    intercept = float(beta[0])
    for j, c in enumerate(plan.features):
        m, h = mid_half(c)
        coefs.append(hy * float(beta[j + 1]) / h)
        intercept -= float(beta[j + 1]) * m / h
    return my + hy * intercept, coefs


def fit(
    plan: LinearPlan, rel: LinearRelease, seed: int = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Post-processing: (model definition, metrics with their uncertainty). The
    uncertainty is a parametric bootstrap: noise of the released scale simulated with
    numpy around the noisy sums (an estimate, never a release)."""
    sd = rel.scale * np.sqrt(2) / QUANTUM
    beta, fitstats = solve(plan, rel.stats, sd)
    intercept, coefs = to_original(plan, beta)
    rng = np.random.default_rng(seed)
    stats = np.asarray(rel.stats, dtype=float)
    sims = []
    for _ in range(BOOTSTRAP):
        sb, _ = solve(plan, stats + rng.laplace(0, rel.scale, stats.shape), sd)
        i, c = to_original(plan, sb)
        sims.append([i, *c])
    spread = np.asarray(sims).std(axis=0) * 1.96
    model = {
        "kind": "linear",
        "target": plan.target.name,
        "intercept": intercept,
        "features": [
            {"column": c.name, "coefficient": coef, "bounds": list(c.bounds or ())}
            for c, coef in zip(plan.features, coefs, strict=True)
        ],
    }
    metrics = {
        "r2": {"estimate": round(fitstats["r2"], 4)},
        "rows": {"estimate": round(fitstats["n"])},
        "intercept": {"estimate": intercept, "ci95": float(spread[0])},
        "coefficients": {
            c.name: {"estimate": coef, "ci95": float(s)}
            for c, coef, s in zip(plan.features, coefs, spread[1:], strict=True)
        },
    }
    return model, metrics
