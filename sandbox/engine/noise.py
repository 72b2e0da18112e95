"""DP mechanisms, all from OpenDP (DESIGN §8: no hand-rolled noise sampling).

This is the only module that imports ``opendp``. Only the ``contrib`` feature is
enabled: every mechanism used here is integer-valued (discrete Laplace, the Laplace
threshold mechanism on integer counts, report-noisy-max on integer scores), so the
``floating-point`` feature is never needed. Float sums are released in fixed point
(see ``plan``), which is exactly what OpenDP's float-safe Laplace does internally —
but here the rounding happens per row, before DuckDB sums, so the sum itself is exact.

Every release rebuilds the OpenDP measurement and asks OpenDP's own privacy map for
the loss at the planner's sensitivity; if that ever exceeds the allotted epsilon
(delta) the release is refused with ``PrivacyMapViolation`` — a bug, never a 4xx.

Scales are chosen once (at prepare time, without data) by ``*_scale`` functions, and
the 95% half-widths shown by preview come from the same scales.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cache, lru_cache
from typing import Any

import opendp.prelude as dp

_I64_SAFE = 2**62


class PrivacyMapViolation(RuntimeError):
    """OpenDP's privacy map reports more loss than the planner allotted (an engine bug)."""


@cache
def _enabled() -> None:
    # "contrib" only: no floating-point or honest-but-curious features are needed.
    dp.enable_features("contrib")


# Measurements are immutable and reusable: build each (kind, scale) once.
@lru_cache(maxsize=1024)
def _int_vector_laplace(scale: float) -> Any:
    _enabled()
    return dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale
    )


@lru_cache(maxsize=1024)
def _noisy_min(scale: float) -> Any:
    _enabled()
    return dp.m.make_noisy_max(
        dp.vector_domain(dp.atom_domain(T="u64")),
        dp.linf_distance(T="u64"),
        dp.max_divergence(),
        scale=scale,
        negate=True,
    )


@lru_cache(maxsize=1024)
def _threshold(scale: float, threshold: int) -> Any:
    _enabled()
    return dp.m.make_laplace_threshold(
        dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64")),
        dp.l01inf_distance(dp.absolute_distance(T="i64")),
        scale=scale,
        threshold=threshold,
    )


@lru_cache(maxsize=4096)
def _laplace_loss(scale: float, d_in: int) -> float:
    """OpenDP's privacy loss of the integer-vector Laplace at ``scale`` (memoised)."""
    return float(_int_vector_laplace(scale).map(d_in))


@lru_cache(maxsize=4096)
def _noisy_min_loss(scale: float, d_in: int) -> float:
    """OpenDP's privacy loss of report-noisy-max at ``scale`` (memoised)."""
    return float(_noisy_min(scale).map(d_in))


def _calibrate(base: float, loss: Any, epsilon: float) -> float:
    """Return the smallest scale >= ``base`` (found by nudging upwards) whose OpenDP
    privacy loss ``loss(scale)`` is at most ``epsilon`` (absorbs float rounding)."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError("epsilon must be positive and finite")
    scale = base
    for _ in range(200):
        if loss(scale) <= epsilon:
            return scale
        scale = math.nextafter(scale, math.inf) * (1 + 1e-12)
    raise PrivacyMapViolation(f"no scale near {base} meets epsilon {epsilon}")


# --- discrete Laplace ----------------------------------------------------------------


@lru_cache(maxsize=4096)
def laplace_scale(sensitivity: int, epsilon: float) -> float:
    """Return the discrete Laplace scale giving ``epsilon``-DP for a vector of integer
    queries whose L1 sensitivity is ``sensitivity`` (about sensitivity / epsilon)."""
    if sensitivity <= 0:
        raise ValueError("sensitivity must be positive")
    return _calibrate(
        sensitivity / epsilon,
        lambda s: _laplace_loss(s, sensitivity),
        epsilon,
    )


def release_integers(
    values: Sequence[int], *, sensitivity: int, scale: float, epsilon: float
) -> list[int]:
    """Return ``values`` with discrete Laplace(``scale``) noise added to each.

    The vector as a whole is ``epsilon``-DP when its L1 sensitivity is at most
    ``sensitivity`` (checked with OpenDP's privacy map). Values beyond the range that
    can be noised without overflowing 64 bits are clamped into it first (``saturate``),
    so no value can make the release fail. Raises ``PrivacyMapViolation`` on a
    calibration bug.
    """
    meas = _int_vector_laplace(scale)
    if _laplace_loss(scale, sensitivity) > epsilon:
        raise PrivacyMapViolation(f"laplace map exceeds epsilon {epsilon}")
    if not values:
        return []
    return [int(v) for v in meas(saturate(values, scale))]


def saturate(values: Sequence[int], scale: float) -> list[int]:
    """Return ``values`` clamped to ±(2^62 − 64·scale − 1), where noise of ``scale`` can
    never overflow a signed 64-bit integer.

    Clamping every coordinate is 1-Lipschitz, so it never increases the L1, L0 or
    L-infinity distance between neighbouring vectors: the privacy guarantee holds. It
    replaces a refusal that depended on the exact value (an oracle, issue 13): whether
    an aggregate is near 2^62 must not decide whether the query fails.
    """
    limit = _I64_SAFE - math.ceil(64 * scale) - 1
    return [min(max(int(v), -limit), limit) for v in values]


# --- report noisy max (exponential-mechanism quantiles) -----------------------------


@lru_cache(maxsize=4096)
def noisy_min_scale(score_sensitivity: int, epsilon: float) -> float:
    """Return the report-noisy-max scale giving ``epsilon``-DP for integer score vectors
    whose L-infinity sensitivity is ``score_sensitivity``."""
    if score_sensitivity <= 0:
        raise ValueError("sensitivity must be positive")
    return _calibrate(
        2 * score_sensitivity / epsilon,
        lambda s: _noisy_min_loss(s, score_sensitivity),
        epsilon,
    )


def select_min(
    scores: Sequence[int], *, score_sensitivity: int, scale: float, epsilon: float
) -> int:
    """Return the index of a privately chosen smallest score (OpenDP ``make_noisy_max``
    with ``negate=True``). Raises ``PrivacyMapViolation`` on a calibration bug."""
    meas = _noisy_min(scale)
    if _noisy_min_loss(scale, score_sensitivity) > epsilon:
        raise PrivacyMapViolation(f"noisy max map exceeds epsilon {epsilon}")
    return int(meas(list(scores)))


# --- Laplace threshold (unknown keys, needs delta > 0) ------------------------------


@lru_cache(maxsize=1024)
def threshold_params(sensitivity: int, epsilon: float, delta: float) -> tuple[float, int]:
    """Return (scale, threshold) for releasing counts of unknown keys.

    A unit adds or removes at most ``sensitivity`` rows, touching at most that many keys
    and changing each by at most that much, so the distance is (l0, l1, linf) =
    (k, k, k). The scale meets ``epsilon``; the threshold is the smallest meeting
    ``delta`` (both per OpenDP's privacy map).
    """
    if not 0 < delta < 1:
        raise ValueError("delta must be in (0, 1)")
    d_in = (sensitivity, sensitivity, sensitivity)
    scale = _calibrate(
        sensitivity / epsilon, lambda s: float(_threshold(s, 1 << 40).map(d_in)[0]), epsilon
    )

    def fits(t: int) -> bool:
        eps, dlt = _threshold(scale, t).map(d_in)
        return bool(eps <= epsilon and dlt <= delta)

    hi = max(sensitivity, 1)
    while not fits(hi):
        hi *= 2
        if hi > 1 << 50:
            raise PrivacyMapViolation("no threshold meets delta")
    lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return scale, hi


def release_above_threshold(
    counts: Mapping[str, int],
    *,
    sensitivity: int,
    scale: float,
    threshold: int,
    epsilon: float,
    delta: float,
) -> dict[str, int]:
    """Return the noisy counts of the keys whose noisy count reaches ``threshold``
    (OpenDP ``make_laplace_threshold``); the other keys are dropped."""
    meas = _threshold(scale, threshold)
    eps, dlt = meas.map((sensitivity, sensitivity, sensitivity))
    if eps > epsilon or dlt > delta:
        raise PrivacyMapViolation("threshold map exceeds (epsilon, delta)")
    if not counts:
        return {}
    keys = list(counts)
    saturated = dict(zip(keys, saturate([counts[k] for k in keys], scale), strict=True))
    return {str(k): int(v) for k, v in meas(saturated).items()}
