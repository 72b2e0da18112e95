"""The OpenDP mechanisms: calibration against OpenDP's own privacy maps, 95% widths,
and refusal when a release would overspend."""

from __future__ import annotations

import math

import pytest

from sandbox.engine import accuracy, noise


@pytest.mark.parametrize(("sensitivity", "epsilon"), [(1, 1.0), (2, 0.3), (1000, 0.1), (7, 3.0)])
def test_laplace_scale_is_sensitivity_over_epsilon(sensitivity: int, epsilon: float) -> None:
    scale = noise.laplace_scale(sensitivity, epsilon)
    assert scale == pytest.approx(sensitivity / epsilon, rel=1e-9)
    assert scale >= sensitivity / epsilon * (1 - 1e-12)


def test_noisy_min_scale() -> None:
    # report-noisy-max on non-monotonic scores: epsilon = 2 * sensitivity / scale
    assert noise.noisy_min_scale(3, 0.5) == pytest.approx(12.0, rel=1e-9)


def test_release_refuses_an_overspending_scale() -> None:
    with pytest.raises(noise.PrivacyMapViolation):
        noise.release_integers([1, 2], sensitivity=10, scale=1.0, epsilon=1.0)
    with pytest.raises(noise.PrivacyMapViolation):
        noise.select_min([3, 1, 2], score_sensitivity=5, scale=1.0, epsilon=1.0)


def test_values_that_could_overflow_are_saturated_not_refused() -> None:
    # A refusal would depend on the exact value (an oracle); clamping never fails.
    limit = 2**62 - 64 - 1
    for value in (2**62, 2**100, -(2**70)):
        [noisy] = noise.release_integers([value], sensitivity=1, scale=1.0, epsilon=1.0)
        assert abs(abs(noisy) - limit) < 60
    assert noise.saturate([5, 2**63, -(2**63)], 2.0**50) == [
        5,
        2**62 - 2**56 - 1,
        -(2**62 - 2**56 - 1),
    ]


def test_empty_vectors() -> None:
    assert noise.release_integers([], sensitivity=1, scale=1.0, epsilon=1.0) == []
    scale, threshold = noise.threshold_params(1, 1.0, 1e-6)
    kept = noise.release_above_threshold(
        {}, sensitivity=1, scale=scale, threshold=threshold, epsilon=1.0, delta=1e-6
    )
    assert kept == {}


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5, 10.0, 1234.5])
def test_ci95_is_the_exact_discrete_laplace_quantile(scale: float) -> None:
    h = accuracy.discrete_laplace_ci95(scale)
    r = math.exp(-1 / scale)

    def tail(m: int) -> float:  # P(|Z| >= m)
        return 1.0 if m <= 0 else 2 * r**m / (1 + r)

    assert tail(h + 1) <= 0.05 < tail(h)
    if scale >= 10:
        assert h == pytest.approx(scale * math.log(20), rel=0.01)


def test_threshold_meets_delta_and_grows_with_k() -> None:
    s1, t1 = noise.threshold_params(1, 1.0, 1e-6)
    s3, t3 = noise.threshold_params(3, 1.0, 1e-6)
    assert s1 == pytest.approx(1.0) and s3 == pytest.approx(3.0)
    assert t3 > t1 > 1
    counts = {"big": 10_000, "small": 1}
    for _ in range(20):
        kept = noise.release_above_threshold(
            counts, sensitivity=1, scale=s1, threshold=t1, epsilon=1.0, delta=1e-6
        )
        assert "big" in kept and "small" not in kept
