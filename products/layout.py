"""The data-plane contract between the loader and the query engine (pure, no DuckDB).

A product version is one DuckDB file holding one table named after the product. Its
columns are the manifest's, typed (``products.loader.DUCKDB_TYPES``), then:

- ``_unit_rank`` (INTEGER): a uniformly random permutation rank of each privacy
  unit's rows, drawn once per data version; contribution bounding is the filter
  ``_unit_rank <= max_rows_per_unit`` (DESIGN §8).
- ``_bucket`` (INTEGER): the unit's bucket, the top ``bucket_bits`` bits of a 64-bit
  hash of the unit (layout 2; layout 1 had ``_unit_key``, an md5 of the unit, and
  stored rows in ``(_unit_rank, _unit_key)`` order instead).
- one ``_fx$<column>$<digest>`` (BIGINT) per bounded numeric column that may be
  aggregated (layout 2 on): the value clipped to the manifest bounds and, for float
  columns, scaled to an integer number of 2^-s units (``FixedPoint``). DP sums read
  it instead of clipping and rounding every row at query time. The digest names the
  bounds and scale it was computed with, so a column computed under other bounds is
  never mistaken for this one; the engine falls back to clipping in SQL when the
  column it needs is absent (files of layout 1).

Layout 2 stores rows bucket by bucket (buckets in increasing order), and within a
bucket the rows that bounding keeps (``_unit_rank <= max_rows_per_unit``) first:
every unit lies wholly in one bucket, so the loader ranks each bucket's rows on their
own (no global sort), and row-group statistics let DuckDB skip each bucket's dropped
tail. The table comment records ``{"layout": 2, "buckets": n, "bucket_bits": b}``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from products.manifest import Column, ColumnType

LAYOUT_VERSION = 2
UNIT_RANK = "_unit_rank"
UNIT_KEY = "_unit_key"  # layout 1 only
BUCKET = "_bucket"
FIXED_POINT_PREFIX = "_fx$"  # '$' cannot occur in a manifest column name
FIXED_POINT_BITS = 31  # |per-row fixed-point value| <= 2^31: sums of 2^31 rows fit in i64


def fixed_point_scale(magnitude: Fraction) -> int:
    """Return s so that magnitude * 2^s <= 2^FIXED_POINT_BITS (s may be negative)."""
    if magnitude <= 0:
        return 0
    s = FIXED_POINT_BITS - math.ceil(math.log2(magnitude))
    while magnitude * Fraction(2) ** s > 2**FIXED_POINT_BITS:
        s -= 1
    return s


def round_half_away(value: Fraction) -> int:
    """Round to the nearest integer, halves away from zero (DuckDB's ROUND on DOUBLE)."""
    floor = math.floor(abs(value))
    magnitude = floor + 1 if abs(value) - floor >= Fraction(1, 2) else floor
    return magnitude if value >= 0 else -magnitude


@dataclass(frozen=True)
class FixedPoint:
    """How a bounded numeric column is stored for exact DP sums.

    The stored integer of a value x is ``v = round(clip(x, lo, hi) * 2^scale)`` for a
    float column (``scale`` = 0 and no rounding for an integer column). Scaling by a
    power of two is exact in IEEE arithmetic and clipping and rounding are monotone,
    so every v lies in ``[lo_units, hi_units]`` (the images of the bounds): no
    re-clamp is needed, and a sum of v is an exact integer (docs/engine.md).
    """

    column: str
    integer: bool
    lo: float | int
    hi: float | int
    scale: int

    @property
    def quantum(self) -> Fraction:
        return Fraction(1, 2**self.scale) if self.scale >= 0 else Fraction(2 ** (-self.scale))

    @property
    def multiplier(self) -> float:
        """2^scale as a double (exact)."""
        return math.ldexp(1.0, self.scale)

    @property
    def lo_units(self) -> int:
        if self.integer:
            return int(self.lo)
        return round_half_away(Fraction(self.lo) / self.quantum)

    @property
    def hi_units(self) -> int:
        if self.integer:
            return int(self.hi)
        return round_half_away(Fraction(self.hi) / self.quantum)

    @property
    def name(self) -> str:
        """The stored column's name: prefix, column, digest of bounds and scale."""
        material = json.dumps(
            ["int" if self.integer else "float", repr(self.lo), repr(self.hi), self.scale]
        )
        digest = hashlib.sha256(material.encode()).hexdigest()[:10]
        return f"{FIXED_POINT_PREFIX}{self.column}${digest}"


def fixed_point(column: Column) -> FixedPoint | None:
    """Return the stored fixed-point form of ``column``, or None when it has none
    (not numeric, no bounds, or never aggregated)."""
    if not column.type.numeric or column.bounds is None or not column.aggregate:
        return None
    lo, hi = column.bounds
    if column.type is ColumnType.INTEGER:
        return FixedPoint(column.name, True, int(lo), int(hi), 0)
    magnitude = max(abs(Fraction(lo)), abs(Fraction(hi)))
    return FixedPoint(column.name, False, float(lo), float(hi), fixed_point_scale(magnitude))


def layout_comment(**facts: Any) -> str:
    """The table comment of a layout-2 file: ``{"layout": 2, ...facts}`` as JSON."""
    return json.dumps({"layout": LAYOUT_VERSION, **facts}, sort_keys=True)
