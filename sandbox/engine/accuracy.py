"""95% confidence half-widths (``ci95``) of released values (DESIGN §8).

Every reported ``ci95`` is calibrated: over many releases, the interval
``released ± ci95`` covers the truth of the bounded statistic (the exact statistic after
per-unit contribution bounding and clipping) about 95% of the time — not 99%. The
cases (docs/engine.md derives them):

- a sum is ``truth + Z`` with ``Z`` discrete Laplace: the half-width is the smallest
  integer ``h`` with ``P(|Z| <= h) >= 95%`` (times the fixed-point quantum);
- a count is the same, clamped at 0: a row whose noisy count is negative gets the
  half-width of ``[C' - h, C' + h] ∩ [0, ∞)`` around 0 (``clamped_count_ci95``);
- an average is ``center + S'/C'`` with ``S' = S + Z_S`` and ``C' = C + Z_C`` noisy.
  For the true offset ``m = S/C``, ``S' - m·C' = Z_S - m·Z_C`` exactly, a difference
  of two independent Laplace variables whose 95% quantile ``q(m)`` has a closed-form
  tail; ``{m : |S' - m·C'| <= q(m)}`` is a 95% confidence set (test inversion), and
  the half-width is the largest distance from the released average to its ends
  (``average_ci95``).

Everything here is arithmetic on public scales and released values; nothing touches
data or draws noise.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import numpy.typing as npt

CONFIDENCE = 0.95
_ALPHA = 1 - CONFIDENCE
_BISECTIONS = 48  # the bracket shrinks 2^48-fold (relative precision ~1e-14)
_END_BISECTIONS = 34  # ends of an average's interval: 2^-34 of the bounds' width
_EQUAL_SCALES = 1e-6  # relative gap under which two Laplace scales are treated as equal


def discrete_laplace_ci95(scale: float) -> int:
    """Return the smallest integer h with P(|Z| > h) <= 5% for Z discrete Laplace(scale).

    With r = exp(-1/scale): P(|Z| >= m) = 2 r^m / (1 + r) for m >= 1. Computed in the
    log domain (ln r = -1/scale exactly), so scales up to 2^50 keep full precision.
    """
    if not scale > 0:
        return 0
    r = math.exp(-1.0 / scale)

    def tail(m: int) -> float:  # P(|Z| >= m), m >= 1
        return 2 * math.exp(-m / scale) / (1 + r)

    # smallest m >= 1 with tail(m) <= alpha, then h = m - 1
    m = max(math.ceil(scale * math.log(2 / (_ALPHA * (1 + r)))), 1)
    while m > 1 and tail(m - 1) <= _ALPHA:
        m -= 1
    while tail(m) > _ALPHA:
        m += 1
    return m - 1


def clamped_count_ci95(noisy: int, half: int) -> int:
    """Return the half-width around ``max(noisy, 0)`` — the released count — of
    ``[noisy - half, noisy + half] ∩ [0, ∞)``: the truth is never negative, so this
    covers it exactly as often as ``noisy ± half`` does (a row clamped to 0 that kept
    ``half`` would cover more often). 0 when the intersection is empty."""
    return half if noisy >= 0 else max(noisy + half, 0)


def _difference_quantile(rho: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Return G(rho): the q with P(|A - B| > q) = 5% for independent Laplace A (scale 1)
    and B (scale rho), 0 <= rho <= 1, by bisection (vectorised), rounding up.

    The characteristic function of A - B is 1 / ((1 + w²)(1 + rho²w²)), a difference of
    two Laplace ones, so for rho < 1 the tail is
    P(|A - B| > q) = (e^(-q) - rho² e^(-q/rho)) / (1 - rho²), and for rho = 1 it is
    e^(-q) (1 + q/2).
    """
    equal = (1 - rho) < _EQUAL_SCALES
    weight = np.where(equal, 0.0, rho * rho)
    spread = np.where(equal, 1.0, 1 - rho * rho)
    safe = np.where(rho > 0, rho, 1.0)

    def tail(q: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        e_one = np.exp(-q)
        e_rho = np.where(rho > 0, np.exp(-q / safe), 0.0)
        return np.where(equal, e_one * (1 + q / 2), (e_one - weight * e_rho) / spread)

    # P(|A - B| > q) <= P(|A| > q/(1+rho)) + P(|B| > q·rho/(1+rho)) = 2 e^(-q/(1+rho)),
    # so q = (1 + rho) ln 40 is above the answer.
    left = np.zeros_like(rho)
    right = (1 + rho) * math.log(2 / _ALPHA)
    for _ in range(_BISECTIONS):
        mid = (left + right) / 2
        above = tail(mid) > _ALPHA
        left = np.where(above, mid, left)
        right = np.where(above, right, mid)
    return right


_TABLE_POINTS = 4097


@cache
def _difference_table() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    # G is smooth and increasing on [0, 1] (G(0) = ln 20, G(1) ~ 4.74): linear
    # interpolation on 4,097 points is exact to ~1e-8 relative.
    grid = np.linspace(0.0, 1.0, _TABLE_POINTS)
    return grid, _difference_quantile(grid)


def laplace_difference_ci95(a: float, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return, for each ``b``, the q with P(|A - B| > q) = 5% for independent Laplace
    variables A (scale ``a``) and B (scale ``b``; the sign of B does not matter):
    ``max(a, b) · G(min(a, b) / max(a, b))`` (see ``_difference_quantile``)."""
    bs = np.abs(np.asarray(b, dtype=np.float64))
    big = np.maximum(bs, abs(a))
    small = np.minimum(bs, abs(a))
    rho = np.divide(small, big, out=np.zeros_like(big), where=big > 0)
    grid, table = _difference_table()
    return np.asarray(big * np.interp(rho, grid, table), dtype=np.float64)


def average_ci95(
    *,
    sum_scale: float,
    count_scale: float,
    sums: npt.ArrayLike,
    counts: npt.ArrayLike,
    center: float,
    lo: float,
    hi: float,
) -> npt.NDArray[np.float64]:
    """Return the 95% half-width of each released average
    ``clamp(center + S'/max(C', 1), lo, hi)``.

    ``sums`` are the noisy centred sums ``S' = S + Z_S`` in the column's units (noise
    scale ``sum_scale``), ``counts`` the noisy counts ``C' = C + Z_C`` (``count_scale``).
    For the true offset ``m = S/C`` of the mean from ``center``,
    ``S' - m·C' = Z_S - m·Z_C`` whatever ``C``: a difference of two independent
    Laplace variables with scales ``sum_scale`` and ``|m|·count_scale``, whose 95%
    quantile ``q(m)`` is known. So ``{m : |S' - m·C'| <= q(m)}`` (within the bounds)
    holds the truth with probability 95% — exactly, also for small groups and noisy
    counts near 0 (test inversion; no delta method, no plug-in of ``m``). Its ends are
    found by bisection from the released value; the half-width is the larger
    distance from the released value to an end (0 if the set is empty).
    """
    total = np.asarray(sums, dtype=np.float64)
    count = np.asarray(counts, dtype=np.float64)
    low, high = lo - center, hi - center
    released = np.clip(total / np.maximum(count, 1.0), low, high)

    def inside(m: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        q = laplace_difference_ci95(sum_scale, np.abs(m) * count_scale)
        return np.asarray(np.abs(total - m * count) <= q)

    lows = np.full_like(released, low)
    highs = np.full_like(released, high)
    start = np.where(inside(released), released, np.nan)
    start = np.where(np.isnan(start) & inside(highs), highs, start)
    start = np.where(np.isnan(start) & inside(lows), lows, start)
    found = ~np.isnan(start)
    start = np.where(found, start, released)

    def end(toward: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        # the last point inside between start (inside) and toward (a bound)
        reached = inside(toward)
        good, bad = start.copy(), toward.copy()
        for _ in range(_END_BISECTIONS):
            mid = (good + bad) / 2
            ok = inside(mid)
            good = np.where(ok, mid, good)
            bad = np.where(ok, bad, mid)
        return np.where(reached, toward, good)

    left, right = end(lows), end(highs)
    half = np.maximum(released - left, right - released)
    return np.where(found, np.maximum(half, 0.0), 0.0)
