"""DP synthetic data: codes from the worker → values (DESIGN §11.1; post-processing).

A categorical or boolean code becomes its value; a bin becomes a value drawn
uniformly inside the bin (an integer column: an integer of the bin; a date column: a
day of it; the last bin includes its upper edge); *missing* becomes NULL. The draws
use a generator seeded per release, so a stored release is what every repeat returns.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from products.manifest import ColumnType
from sandbox.engine.accuracy import discrete_laplace_ci95
from sandbox.engine.synthesis import oneway_scale
from sandbox.models.encoding import Encoding, Kind


def decode(
    encodings: Sequence[Encoding], codes: Sequence[Sequence[int | None]], seed: int
) -> list[list[Any]]:
    """Rows of values for ``codes`` (one tuple of codes per row). A None code (the
    model's null category of a column that has no *missing* code, given mass by the
    noise) takes the code of a random other row of the synthetic data (hot deck)."""
    rng = np.random.default_rng(seed)
    out: list[list[Any]] = [[None] * len(encodings) for _ in codes]
    for j, enc in enumerate(encodings):
        present = [c for c in (row[j] for row in codes) if c is not None]
        for i, row in enumerate(codes):
            code = row[j]
            if code is None:
                code = present[int(rng.integers(0, len(present)))] if present else 0
            out[i][j] = _value(enc, code, rng)
    return out


def _value(enc: Encoding, code: int, rng: np.random.Generator) -> Any:
    if enc.missing and code == enc.categories:
        return None
    if enc.kind is not Kind.BINS:
        return enc.values[code]
    lo, hi = enc.edges[code], enc.edges[code + 1]
    last = code == enc.categories - 1
    if isinstance(lo, dt.date) and isinstance(hi, dt.date):
        days = (hi - lo).days + (1 if last else 0)
        return (lo + dt.timedelta(days=int(rng.integers(0, max(days, 1))))).isoformat()
    flo, fhi = float(lo), float(hi)  # type: ignore[arg-type]
    if enc.column.type is ColumnType.INTEGER:
        a = math.ceil(flo)
        b = math.floor(fhi) + 1 if last else math.ceil(fhi)
        return int(rng.integers(a, max(b, a + 1)))
    return float(rng.uniform(flo, fhi))


def accuracy(encodings: Sequence[Encoding], k: int, epsilon: float) -> list[dict[str, Any]]:
    """What preview reports: the noise of the one-way marginal counts MST measures
    (data-free; see ``sandbox.engine.synthesis.oneway_scale``)."""
    scale = oneway_scale([e.size for e in encodings], k, epsilon)
    return [
        {
            "statistic": "one_way_marginal_counts",
            "columns": [e.name for e in encodings],
            "epsilon": epsilon / 2,
            "noise_scale": scale,
            "ci95": discrete_laplace_ci95(scale),
        }
    ]
