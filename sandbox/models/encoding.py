"""Columns as small categorical domains, and the SQL that counts them (DESIGN §11).

Synthetic data, scorecards and the score histograms all work on *codes*: each column
of a request becomes a finite domain fixed by the manifest (or the request) alone,
never by the data —

- a column with ``public_values``: one code per value;
- a boolean column: ``false``, ``true``;
- an integer, float or date column: one code per bin, over the bins the request
  names, else the manifest's ``bins``, else ``DEFAULT_BINS`` equal-width bins over
  ``bounds``; bin ``i`` holds ``e_i <= x < e_{i+1}`` and the last bin also its upper
  edge; values outside the edges are clipped into the first or last bin (bounds are
  clipping bounds, DESIGN §8);
- a nullable column gets one more code, *missing*, for NULL.

A column with none of these is refused (``InvalidRequest`` naming it). The codes are
computed by DuckDB inside the isolated worker over the contribution-bounded rows that
the engine's own planner rules select (``scan_product``, ``bound_contributions``), so
a change of the product storage layout reaches this module through those rules.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlglot import exp

from products.errors import InvalidRequest
from products.manifest import Column, ColumnType, DataProduct
from sandbox.engine.plan import PlanSpec, bound_contributions, key_name, literal, scan_product
from sandbox.engine.resolve import BoundKey

DEFAULT_BINS = 10  # equal-width bins over the bounds when nothing else is declared
MAX_BINS = 100  # per column (a request over it is refused, "too many bins")
MAX_CELLS = 5_000_000  # joint cells a request may span (the worker's memory)

Label = str | int | float | bool | None


class Kind(StrEnum):
    CATEGORICAL = "categorical"
    BOOLEAN = "boolean"
    BINS = "bins"


@dataclass(frozen=True)
class Encoding:
    """One column as codes ``0 .. size - 1`` (the last one *missing* when ``missing``)."""

    column: Column
    kind: Kind
    values: tuple[Label, ...] = ()  # CATEGORICAL / BOOLEAN: the value of each code
    edges: tuple[float, ...] | tuple[dt.date, ...] = ()  # BINS: n + 1 edges for n bins
    missing: bool = False

    @property
    def name(self) -> str:
        return self.column.name

    @property
    def categories(self) -> int:
        """Codes for values (without *missing*)."""
        return len(self.edges) - 1 if self.kind is Kind.BINS else len(self.values)

    @property
    def size(self) -> int:
        return self.categories + (1 if self.missing else 0)

    @property
    def missing_code(self) -> int | None:
        return self.categories if self.missing else None

    def sql(self, ref: exp.Expr) -> exp.Expr:
        """The DuckDB expression of a row's code, from its value ``ref``."""
        null_code = self.categories if self.missing else 0
        ifs: list[exp.If] = [
            exp.If(this=exp.Is(this=ref.copy(), expression=exp.Null()), true=_int(null_code))
        ]
        if self.kind is Kind.BINS:
            edges = self.edges
            for i in range(1, len(edges) - 1):
                bound = _edge_literal(edges[i], self.column)
                ifs.append(exp.If(this=exp.LT(this=ref.copy(), expression=bound), true=_int(i - 1)))
            return exp.Case(ifs=ifs, default=_int(len(edges) - 2))
        for code, value in enumerate(self.values):
            ifs.append(
                exp.If(
                    this=exp.EQ(this=ref.copy(), expression=_value(value, self.column)),
                    true=_int(code),
                )
            )
        return exp.Case(ifs=ifs, default=_int(null_code))

    def label(self, code: int) -> Label | list[Any]:
        """What code ``code`` stands for in a model: the value, ``[lo, hi]`` for a bin
        (ISO dates for a date column), or None for *missing*."""
        if self.missing and code == self.categories:
            return None
        if self.kind is Kind.BINS:
            lo, hi = self.edges[code], self.edges[code + 1]
            return [_plain(lo), _plain(hi)]
        return self.values[code]

    def describe(self) -> dict[str, Any]:
        """The encoding as JSON (for answers and model definitions)."""
        out: dict[str, Any] = {"column": self.name, "kind": self.kind.value}
        if self.kind is Kind.BINS:
            out["edges"] = [_plain(e) for e in self.edges]
        else:
            out["values"] = list(self.values)
        out["missing"] = self.missing
        return out


def _plain(value: float | dt.date) -> float | int | str:
    if isinstance(value, dt.date):
        return value.isoformat()
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else float(value)


def _int(value: int) -> exp.Expr:
    return exp.Literal.number(value)


def _value(value: Label, column: Column) -> exp.Expr:
    if column.type is ColumnType.DATE and isinstance(value, str):
        return literal(dt.date.fromisoformat(value))
    if column.type is ColumnType.FLOAT and isinstance(value, int) and not isinstance(value, bool):
        return literal(float(value))
    return literal(value)


def _edge_literal(edge: float | dt.date, column: Column) -> exp.Expr:
    if isinstance(edge, dt.date):
        return literal(edge)
    # Compare as DOUBLE, as the engine's BIN() does (edges are floats in the manifest).
    return literal(float(edge))


def _fail(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, {"fields": {field: [message]}})


def encode(
    column: Column,
    field: str,
    *,
    bins: Sequence[Any] | None = None,
    default_bins: int = DEFAULT_BINS,
) -> Encoding:
    """Return the encoding of ``column`` (``bins``: edges the request names, which
    take precedence over the manifest's). Raises ``InvalidRequest`` naming ``field``
    when the column has no data-independent domain, or its bins are bad or too many."""
    if bins is not None:
        return _binned(column, field, _request_edges(column, field, bins))
    if column.public_values is not None:
        values = tuple(v for v in column.public_values if v is not None)
        if not values:
            raise _fail(field, f"column {column.name!r} declares no public values")
        if len(values) > MAX_BINS:
            raise _fail(
                field, f"column {column.name!r} has {len(values)} values: at most {MAX_BINS}"
            )
        return Encoding(column, Kind.CATEGORICAL, values=values, missing=column.nullable)
    if column.type is ColumnType.BOOLEAN:
        return Encoding(column, Kind.BOOLEAN, values=(False, True), missing=column.nullable)
    if column.type in (ColumnType.INTEGER, ColumnType.FLOAT):
        if column.bins is not None:
            return _binned(column, field, tuple(float(e) for e in column.bins))
        if column.bounds is not None:
            lo, hi = float(column.bounds[0]), float(column.bounds[1])
            n = default_bins
            if column.type is ColumnType.INTEGER:
                n = max(1, min(n, int(hi - lo) + 1))
            if hi <= lo:
                return _binned(column, field, (lo, lo + 1.0))
            step = (hi - lo) / n
            edges = tuple([lo + i * step for i in range(n)] + [hi])
            return _binned(column, field, edges)
    raise _fail(
        field,
        f"column {column.name!r} has neither public values nor bounds (nor bins): its "
        "domain would have to come from the data; declare public_values, bounds or bins "
        "in the manifest, or name bins in the request",
    )


def _request_edges(column: Column, field: str, bins: Sequence[Any]) -> tuple[Any, ...]:
    if column.type not in (ColumnType.INTEGER, ColumnType.FLOAT, ColumnType.DATE):
        raise _fail(field, f"bins are for integer, float and date columns, not {column.type.value}")
    if not isinstance(bins, list | tuple) or len(bins) < 2:
        raise _fail(field, "bins: a list of at least two edges")
    edges: list[Any] = []
    for edge in bins:
        if column.type is ColumnType.DATE:
            if not isinstance(edge, str):
                raise _fail(field, "bins of a date column are ISO dates (YYYY-MM-DD)")
            try:
                edges.append(dt.date.fromisoformat(edge))
            except ValueError:
                raise _fail(field, f"bin edge {edge!r} is not an ISO date") from None
        else:
            if (
                isinstance(edge, bool)
                or not isinstance(edge, int | float)
                or not math.isfinite(edge)
            ):
                raise _fail(field, "bin edges are finite numbers")
            edges.append(float(edge))
    return tuple(edges)


def _binned(column: Column, field: str, edges: tuple[Any, ...]) -> Encoding:
    if len(edges) - 1 > MAX_BINS:
        raise _fail(field, f"{len(edges) - 1} bins for {column.name!r}: at most {MAX_BINS}")
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise _fail(field, "bin edges must be strictly increasing")
    return Encoding(column, Kind.BINS, edges=edges, missing=column.nullable)


@dataclass(frozen=True)
class Target:
    """A binary target: 1 where ``column`` equals one of ``values`` (NULL: 0)."""

    column: Column
    values: tuple[Label, ...]

    def sql(self, ref: exp.Expr) -> exp.Expr:
        test = exp.or_(
            *(exp.EQ(this=ref.copy(), expression=_value(v, self.column)) for v in self.values)
        )
        return exp.Case(ifs=[exp.If(this=test, true=_int(1))], default=_int(0))

    def describe(self) -> dict[str, Any]:
        if len(self.values) == 1:
            return {"column": self.column.name, "equals": self.values[0]}
        return {"column": self.column.name, "in": list(self.values)}


def joint_size(encodings: Sequence[Encoding]) -> int:
    return math.prod(e.size for e in encodings)


def bounded_rows(product: DataProduct, columns: Sequence[Column]) -> exp.Select:
    """The contribution-bounded rows of ``product`` (at most ``max_rows_per_unit``
    per unit, DESIGN §8), projecting ``columns`` as ``k0, k1, ...``: the engine
    planner's own first two rules, so that this reads the product exactly as queries
    do."""
    spec = PlanSpec(
        product=product,
        keys=tuple(BoundKey(c, False, None) for c in columns),
        measurements=(),
        where=None,
    )
    return bound_contributions(scan_product(exp.Select(), spec), spec)


def counts_sql(
    product: DataProduct,
    encodings: Sequence[Encoding],
    target: Target | None = None,
) -> str:
    """SQL returning one row per non-empty joint cell: the codes of ``encodings`` (then
    the 0/1 code of ``target``), and the cell's row count."""
    columns = [e.column for e in encodings]
    if target is not None:
        columns.append(target.column)
    inner = bounded_rows(product, columns)
    codes = [e.sql(exp.column(key_name(i), quoted=True)) for i, e in enumerate(encodings)]
    if target is not None:
        codes.append(target.sql(exp.column(key_name(len(encodings)), quoted=True)))
    projections = [exp.alias_(c, f"c{i}", quoted=True) for i, c in enumerate(codes)]
    projections.append(exp.alias_(exp.Count(this=exp.Star()), "n", quoted=True))
    select = exp.select(*projections).from_(inner.subquery("rows", copy=False), copy=False)
    select = select.group_by(
        *(exp.column(f"c{i}", quoted=True) for i in range(len(codes))), copy=False
    )
    return str(select.sql(dialect="duckdb"))
