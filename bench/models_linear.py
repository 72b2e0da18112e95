"""DP linear regression on PUMS: noisy sufficient statistics vs OpenDP's private Theil-Sen.

    .venv/bin/python bench/models_linear.py [--reps 200] [--shared ../shared]

The comparison behind ``sandbox/models/linear.py`` (docs/models.md): ``income ~ age``
on the 1,000 real PUMS rows (Theil-Sen in OpenDP takes one feature), both clipped to
the manifest's bounds (age [0, 100], income [0, 500000]), at several epsilons. For
each, the median absolute error of the slope and of the prediction at the mean age,
over ``--reps`` releases, against least squares on the clipped data. Theil-Sen's
noise scale is found with OpenDP's ``binary_search_param`` for the same epsilon under
the add/remove-one-row relation (``symmetric_distance``, one row per person).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import opendp.prelude as dp
from opendp.extras.sklearn.linear_model._make_private_theil_sen import make_private_theil_sen

from products.manifest import parse_manifest
from sandbox.engine.isolation import Deadline, EngineLimits
from sandbox.models import linear
from sandbox.models.linear import LinearPlan

MANIFEST = {
    "id": "pums",
    "title": "PUMS",
    "privacy_unit": "pid",
    "max_rows_per_unit": 1,
    "columns": [
        {"name": "pid", "type": "integer", "classification": "identifier"},
        {"name": "age", "type": "integer", "classification": "attribute", "bounds": [0, 100]},
        {"name": "income", "type": "float", "classification": "sensitive", "bounds": [0, 500000]},
    ],
}


def rows(shared: Path) -> list[tuple[float, float]]:
    with (shared / "datasets" / "pums" / "PUMS_pid.csv").open(encoding="utf-8") as f:
        return [(float(r["age"]), float(r["income"])) for r in csv.DictReader(f)]


def exact_stats(plan: LinearPlan, data: list[tuple[float, float]]) -> list[int]:
    """The fixed-point sums DuckDB computes (stats_sql), in Python."""
    sums = [0] * len(plan.entries)
    for age, income in data:
        u = [
            1.0,
            (2 * min(max(age, 0), 100) - 100) / 100,
            (2 * min(max(income, 0), 5e5) - 5e5) / 5e5,
        ]
        for n, (i, j) in enumerate(plan.entries):
            sums[n] += round(u[i] * u[j] * linear.QUANTUM)
    return sums


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    args = ap.parse_args()
    dp.enable_features("contrib", "honest-but-curious")  # Theil-Sen needs it (see docs)
    manifest = parse_manifest(MANIFEST)
    data = rows(args.shared)
    x = np.asarray([min(max(a, 0), 100) for a, _ in data])
    y = np.asarray([min(max(b, 0), 5e5) for _, b in data])
    slope, intercept = np.polyfit(x, y, 1)
    at_mean = intercept + slope * x.mean()
    arr = np.column_stack([x, y])
    deadline = Deadline.start(EngineLimits(timeout_s=3600))
    out: list[dict[str, Any]] = []
    for epsilon in (0.5, 1.0, 2.0, 5.0, 10.0):
        plan = LinearPlan((manifest.column("age"),), manifest.column("income"), 1, epsilon)  # type: ignore[arg-type]
        stats = exact_stats(plan, data)
        ss_slope, ss_pred = [], []
        for seed in range(args.reps):
            rel = linear.release(plan, [tuple(stats)], deadline)
            model, _ = linear.fit(plan, rel, seed=seed)
            b = model["features"][0]["coefficient"]
            a = model["intercept"]
            ss_slope.append(abs(b - slope))
            ss_pred.append(abs(a + b * x.mean() - at_mean))

        def make(s: float) -> Any:
            return make_private_theil_sen(dp.max_divergence(), (0.0, 100.0), (0.0, 5e5), scale=s)

        scale = dp.binary_search_param(make, d_in=1, d_out=epsilon)
        meas = make(scale)
        ts_slope, ts_pred = [], []
        for _ in range(args.reps):
            b, a = meas(arr)
            ts_slope.append(abs(b - slope))
            ts_pred.append(abs(a + b * x.mean() - at_mean))
        out.append(
            {
                "epsilon": epsilon,
                "sufficient_statistics": {
                    "slope_mae": statistics.median(ss_slope),
                    "prediction_mae": statistics.median(ss_pred),
                },
                "theil_sen": {
                    "slope_mae": statistics.median(ts_slope),
                    "prediction_mae": statistics.median(ts_pred),
                },
            }
        )
        print(json.dumps(out[-1]), flush=True)
    print(json.dumps({"truth": {"slope": slope, "at_mean_age": at_mean}}))


if __name__ == "__main__":
    main()
