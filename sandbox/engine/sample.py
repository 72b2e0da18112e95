"""Synthetic rows from the manifest alone (GET /v1/products/{id}/sample, DESIGN §5).

Nothing here reads data: values come from each column's declared type, bounds,
public values and bins, drawn with a seeded ``random.Random``. Identifier columns get
obviously fake patterned values (``SAMPLE-<column>-000001``, or 900000001, ...) so a
sample can never be mistaken for, or collide with, a real key.
"""

from __future__ import annotations

import datetime as dt
import random

from products.manifest import Classification, Column, ColumnType, DataProduct

MAX_SAMPLE_ROWS = 1_000
NULL_RATE = 0.05
_DATE_START = dt.date(2000, 1, 1)
_DATE_DAYS = (dt.date(2024, 12, 31) - _DATE_START).days

SampleValue = str | int | float | bool | None


def synthetic_sample(
    product: DataProduct, n: int, seed: int
) -> tuple[list[str], list[list[SampleValue]]]:
    """Return (column names, ``n`` synthetic rows) for ``product``, deterministic in
    ``seed``. Raises ``ValueError`` if ``n`` is not in [0, MAX_SAMPLE_ROWS]."""
    if not 0 <= n <= MAX_SAMPLE_ROWS:
        raise ValueError(f"n must be between 0 and {MAX_SAMPLE_ROWS}")
    rng = random.Random(f"{product.id}:{seed}")
    columns = list(product.column_names)
    rows = [[_value(c, i, rng) for c in product.columns] for i in range(n)]
    return columns, rows


def _value(column: Column, i: int, rng: random.Random) -> SampleValue:
    if column.classification is Classification.IDENTIFIER:
        if column.type is ColumnType.INTEGER:
            return 900_000_001 + i
        if column.type is ColumnType.STRING:
            return f"SAMPLE-{column.name}-{i + 1:06d}"
    if column.nullable and rng.random() < NULL_RATE:
        return None
    if column.public_values is not None:
        return rng.choice(column.public_values)
    ctype = column.type
    if ctype is ColumnType.BOOLEAN:
        return rng.random() < 0.5
    if ctype is ColumnType.INTEGER:
        lo, hi = column.bounds or (0, 1000)
        return rng.randint(int(lo), int(hi))
    if ctype is ColumnType.FLOAT:
        lo, hi = column.bounds or (0.0, 1.0)
        return round(rng.uniform(float(lo), float(hi)), 2)
    if ctype is ColumnType.DATE:
        return (_DATE_START + dt.timedelta(days=rng.randint(0, _DATE_DAYS))).isoformat()
    return f"sample-{column.name}-{rng.randint(1, 20)}"
