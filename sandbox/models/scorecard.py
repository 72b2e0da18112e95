"""The DP credit scorecard (评分卡, DESIGN §11.2): two DP measurements, the rest
post-processing.

A scorecard in Chinese bank practice bins each feature, computes the *weight of
evidence* of each bin from the counts of good and bad outcomes in it, and turns
log-odds into points on a declared scale (base score at base odds, points to double
the odds). Here the data is touched twice, inside the isolated worker, and only
through OpenDP's discrete Laplace (``sandbox.engine.noise``):

1. **counts** (``COUNTS_SHARE`` of epsilon): the (bin × target) table of every
   feature, one vector release. A unit contributes at most ``k`` rows, each adding 1
   to one cell of each of the ``m`` features' tables: L1 sensitivity ``m·k``.
2. **score histograms** (the rest): with the points fixed by step 1, each row's score
   falls in one of ``score_bins`` equal-width bins over the card's score range, per
   class: L1 sensitivity ``k``.

Everything else is post-processing of those noisy counts: WoE, IV, the points (the
naive-Bayes log-odds ``ln(G/B) + Σ WoE``: per-feature counts cannot fit a joint
logistic regression without more releases, so every coefficient is 1), and AUC and KS
estimated from the noisy histograms. The exact counts never leave the worker.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sandbox.engine import noise
from sandbox.engine.accuracy import discrete_laplace_ci95
from sandbox.engine.isolation import Deadline, Row
from sandbox.models.encoding import Encoding

COUNTS_SHARE = 0.8  # of the request's epsilon, for the (bin × target) counts
SMOOTHING = 0.5  # added to every noisy count before WoE (empty or noisy-zero bins)
DEFAULT_SCORE_BINS = 20
MAX_SCORE_BINS = 200
BOOTSTRAP = 200  # simulated noise draws for the metrics' uncertainty (never released)


@dataclass(frozen=True)
class Scale:
    """Points on the declared scale: ``base_score`` at good:bad odds ``base_odds``,
    ``pdo`` more points per doubling of the odds."""

    base_score: float = 600.0
    base_odds: float = 50.0
    pdo: float = 20.0

    @property
    def factor(self) -> float:
        return self.pdo / math.log(2)

    @property
    def offset(self) -> float:
        return self.base_score - self.factor * math.log(self.base_odds)

    def to_dict(self) -> dict[str, float]:
        return {"base_score": self.base_score, "base_odds": self.base_odds, "pdo": self.pdo}


@dataclass(frozen=True)
class ScorecardPlan:
    """What the worker needs (picklable, data-free)."""

    encodings: tuple[Encoding, ...]
    k: int  # max rows per unit
    epsilon: float
    scale: Scale
    score_bins: int

    @property
    def counts_epsilon(self) -> float:
        return self.epsilon * COUNTS_SHARE

    @property
    def hist_epsilon(self) -> float:
        return self.epsilon - self.counts_epsilon

    @property
    def counts_sensitivity(self) -> int:
        return len(self.encodings) * self.k

    def counts_scale(self) -> float:
        return noise.laplace_scale(self.counts_sensitivity, self.counts_epsilon)

    def hist_scale(self) -> float:
        return noise.laplace_scale(self.k, self.hist_epsilon)

    def accuracy(self) -> list[dict[str, Any]]:
        """The 95% half-widths of the released counts (nothing touches data)."""
        return [
            {
                "statistic": "bin_target_counts",
                "epsilon": self.counts_epsilon,
                "ci95": discrete_laplace_ci95(self.counts_scale()),
            },
            {
                "statistic": "score_histogram_counts",
                "epsilon": self.hist_epsilon,
                "ci95": discrete_laplace_ci95(self.hist_scale()),
            },
        ]


@dataclass(frozen=True)
class ScorecardRelease:
    """The worker's DP output: noisy counts and histograms, and what follows from them."""

    counts: tuple[tuple[tuple[int, int], ...], ...]  # per feature, per code: (good, bad)
    base_points: int
    points: tuple[tuple[int, ...], ...]  # per feature, per code
    edges: tuple[float, ...]  # score histogram edges
    good_hist: tuple[int, ...]
    bad_hist: tuple[int, ...]
    counts_scale: float
    hist_scale: float


def points_from_counts(
    plan: ScorecardPlan, counts: Sequence[Sequence[tuple[float, float]]]
) -> tuple[int, list[list[int]], list[list[float]], list[float]]:
    """Post-processing: (base points, points per feature and code, WoE per feature and
    code, IV per feature) from (good, bad) counts per code. Pure; also used by tests
    on exact counts for the non-private reference card."""
    goods = [sum(max(g, 0.0) for g, _ in feature) for feature in counts]
    bads = [sum(max(b, 0.0) for _, b in feature) for feature in counts]
    good_total = max(float(np.mean(goods)), 1.0)
    bad_total = max(float(np.mean(bads)), 1.0)
    factor = plan.scale.factor
    base = plan.scale.offset + factor * math.log(good_total / bad_total)
    points: list[list[int]] = []
    woes: list[list[float]] = []
    ivs: list[float] = []
    for enc, feature in zip(plan.encodings, counts, strict=True):
        g_sum = sum(max(g, 0.0) for g, _ in feature) + SMOOTHING * len(feature)
        b_sum = sum(max(b, 0.0) for _, b in feature) + SMOOTHING * len(feature)
        woe_row: list[float] = []
        iv = 0.0
        for g, b in feature:
            pg = (max(g, 0.0) + SMOOTHING) / g_sum
            pb = (max(b, 0.0) + SMOOTHING) / b_sum
            woe = math.log(pg / pb)
            woe_row.append(woe)
            iv += (pg - pb) * woe
        if enc.missing and feature[-1][0] <= 0 and feature[-1][1] <= 0:
            woe_row[-1] = 0.0  # no missing values seen: an unknown input is neutral
        woes.append(woe_row)
        ivs.append(iv)
        points.append([round(factor * w) for w in woe_row])
    return round(base), points, woes, ivs


def score_range(base: int, points: Sequence[Sequence[int]]) -> tuple[int, int]:
    lo = base + sum(min(p) for p in points)
    hi = base + sum(max(p) for p in points)
    return lo, hi


def score_edges(lo: int, hi: int, bins: int) -> tuple[float, ...]:
    if hi <= lo:
        hi = lo + 1
    step = (hi - lo) / bins
    return tuple([lo + i * step for i in range(bins)] + [float(hi)])


def _bin_of(score: float, edges: Sequence[float]) -> int:
    i = int(np.searchsorted(np.asarray(edges[1:-1]), score, side="right"))
    return min(max(i, 0), len(edges) - 2)


def release(plan: ScorecardPlan, rows: list[Row], deadline: Deadline) -> ScorecardRelease:
    """Run in the isolated worker on the exact joint cells ``(codes..., target, n)``;
    return only DP outputs (module docstring)."""
    m = len(plan.encodings)
    exact = [[[0, 0] for _ in range(e.size)] for e in plan.encodings]
    for row in rows:
        t, n = int(row[m]), int(row[m + 1])
        for f in range(m):
            exact[f][int(row[f])][1 if t else 0] += n
    flat = [v for feature in exact for cell in feature for v in cell]
    c_scale = plan.counts_scale()
    noisy_flat = noise.release_integers(
        flat, sensitivity=plan.counts_sensitivity, scale=c_scale, epsilon=plan.counts_epsilon
    )
    deadline.check()
    counts: list[list[tuple[int, int]]] = []
    i = 0
    for enc in plan.encodings:
        feature = []
        for _ in range(enc.size):
            feature.append((noisy_flat[i], noisy_flat[i + 1]))
            i += 2
        counts.append(feature)
    base, points, _, _ = points_from_counts(
        plan, [[(float(g), float(b)) for g, b in f] for f in counts]
    )
    lo, hi = score_range(base, points)
    edges = score_edges(lo, hi, plan.score_bins)
    hist = [0] * (2 * plan.score_bins)
    for row in rows:
        score = base + sum(points[f][int(row[f])] for f in range(m))
        hist[_bin_of(score, edges) * 2 + (1 if int(row[m]) else 0)] += int(row[m + 1])
    h_scale = plan.hist_scale()
    noisy_hist = noise.release_integers(
        hist, sensitivity=plan.k, scale=h_scale, epsilon=plan.hist_epsilon
    )
    return ScorecardRelease(
        counts=tuple(tuple(f) for f in counts),
        base_points=base,
        points=tuple(tuple(p) for p in points),
        edges=edges,
        good_hist=tuple(noisy_hist[0::2]),
        bad_hist=tuple(noisy_hist[1::2]),
        counts_scale=c_scale,
        hist_scale=h_scale,
    )


def auc_ks(
    good: Sequence[float] | np.ndarray, bad: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """AUC (probability that a good outcome scores above a bad one, ties in a bin
    counted half) and KS from per-bin histograms (negative counts clamped to 0)."""
    g = np.clip(np.asarray(good, dtype=float), 0, None)
    b = np.clip(np.asarray(bad, dtype=float), 0, None)
    if g.sum() <= 0 or b.sum() <= 0:
        return 0.5, 0.0
    g, b = g / g.sum(), b / b.sum()
    below = np.concatenate([[0.0], np.cumsum(b)[:-1]])
    auc = float(np.sum(g * (below + 0.5 * b)))
    ks = float(np.max(np.abs(np.cumsum(g) - np.cumsum(b))))
    return auc, ks


def metrics(rel: ScorecardRelease, plan: ScorecardPlan, seed: int = 0) -> dict[str, Any]:
    """Post-processing: AUC, KS and IV with their uncertainty. The uncertainty is a
    parametric bootstrap of the released histograms (noise of the same scale
    simulated with numpy around the noisy values: an estimate, never a release)."""
    auc, ks = auc_ks(rel.good_hist, rel.bad_hist)
    rng = np.random.default_rng(seed)
    g = np.asarray(rel.good_hist, dtype=float)
    b = np.asarray(rel.bad_hist, dtype=float)
    sims = [
        auc_ks(
            g + rng.laplace(0, rel.hist_scale, g.shape), b + rng.laplace(0, rel.hist_scale, b.shape)
        )
        for _ in range(BOOTSTRAP)
    ]
    aucs = np.asarray([s[0] for s in sims])
    kss = np.asarray([s[1] for s in sims])
    _, _, _, ivs = points_from_counts(
        plan, [[(float(x), float(y)) for x, y in f] for f in rel.counts]
    )
    goods = float(np.clip(g, 0, None).sum())
    bads = float(np.clip(b, 0, None).sum())
    return {
        "auc": {"estimate": round(auc, 4), "ci95": round(float(1.96 * aucs.std()), 4)},
        "ks": {"estimate": round(ks, 4), "ci95": round(float(1.96 * kss.std()), 4)},
        "information_value": {
            enc.name: round(iv, 4) for enc, iv in zip(plan.encodings, ivs, strict=True)
        },
        "bad_rate": {
            "estimate": round(bads / max(goods + bads, 1.0), 4),
        },
        "score_histogram": {
            "edges": [round(e, 3) for e in rel.edges],
            "good": list(rel.good_hist),
            "bad": list(rel.bad_hist),
        },
    }


def model_json(
    rel: ScorecardRelease, plan: ScorecardPlan, target: dict[str, Any]
) -> dict[str, Any]:
    """The model definition a model product publishes (DESIGN §11.3): points per bin."""
    features = []
    _, _, woes, _ = points_from_counts(
        plan, [[(float(x), float(y)) for x, y in f] for f in rel.counts]
    )
    for enc, pts, woe in zip(plan.encodings, rel.points, woes, strict=True):
        bins = []
        for code in range(enc.categories):
            label = enc.label(code)
            entry: dict[str, Any] = (
                {"range": label} if isinstance(label, list) else {"value": label}
            )
            entry["points"] = pts[code]
            entry["woe"] = round(woe[code], 4)
            bins.append(entry)
        feature: dict[str, Any] = {"column": enc.name, "bins": bins}
        feature["missing_points"] = pts[-1] if enc.missing else 0
        features.append(feature)
    options = [[b["points"] for b in f["bins"]] + [f["missing_points"]] for f in features]
    lo, hi = score_range(rel.base_points, options)
    return {
        "kind": "scorecard",
        "target": target,
        "scale": plan.scale.to_dict(),
        "base_points": rel.base_points,
        "features": features,
        "score_range": [lo, hi],
    }
