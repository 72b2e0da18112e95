"""Bind a ``ParsedQuery`` to a product and a scope (DESIGN §4, §8).

Every column is checked three ways: it exists in the manifest (``unknown_column``),
the scope lists it (``column_not_allowed``), and the manifest allows this use of it —
filter, group key, aggregate — (``column_not_allowed``). WHERE literals are typed to
their column. Group keys get their released key set: the column's ``public_values``,
its declared ``bins``, or — only when the scope has ``delta > 0`` — an unknown set
that the threshold mechanism will select from.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace
from fractions import Fraction

from products.manifest import (
    MAX_BOUND,
    MIN_BOUNDS_WIDTH,
    Classification,
    Column,
    ColumnType,
    DataProduct,
    Scalar,
)
from sandbox.engine.parse import (
    AggFunc,
    Aggregate,
    And,
    Between,
    Compare,
    GroupKey,
    InList,
    IsNull,
    LiteralValue,
    Not,
    Number,
    Or,
    OrderKey,
    ParsedQuery,
    Predicate,
    Ref,
    number_text,
)
from sandbox.errors import ColumnNotAllowed, UnknownColumn, UnsupportedQuery

HIDDEN_COLUMNS = frozenset({"_unit_rank"})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

KeyValue = Scalar | None


@dataclass(frozen=True)
class BoundKey:
    """A group key bound to its manifest column.

    ``values`` is the released key set: public values (plus None for a nullable
    column), bin indexes for ``BIN(col)``, or None when the key set is unknown and
    must go through the threshold mechanism.
    """

    column: Column
    binned: bool
    values: tuple[KeyValue, ...] | None

    @property
    def label(self) -> str:
        return f"bin({self.column.name})" if self.binned else self.column.name


@dataclass(frozen=True)
class BoundAggregate:
    """An aggregate bound to its column. For SUM, AVG and quantiles ``column`` carries
    the bounds the engine clips to and computes with — the declared ones, or the
    tighter ``clip`` the query asked for, intersected with what the stored type can
    hold — and, for quantiles over declared bins, the edges within them."""

    func: AggFunc
    column: Column | None
    alpha: Fraction | None
    clip: tuple[Number, Number] | None = None

    @property
    def label(self) -> str:
        ref = Ref(self.column.name) if self.column is not None else None
        return Aggregate(self.func, ref, self.alpha, self.clip).label


@dataclass(frozen=True)
class BoundOutput:
    name: str
    expr: BoundKey | BoundAggregate


@dataclass(frozen=True)
class ResolvedQuery:
    """A query of the subset, checked against one product and one scope."""

    product: DataProduct
    outputs: tuple[BoundOutput, ...]
    keys: tuple[BoundKey, ...]
    where: Predicate | None
    order_by: tuple[OrderKey, ...]
    limit: int | None
    offset: int
    normalized_sql: str

    @property
    def unknown_keys(self) -> bool:
        """True when some group key has no public key set (threshold mechanism)."""
        return any(k.values is None for k in self.keys)

    @property
    def aggregates(self) -> tuple[BoundAggregate, ...]:
        return tuple(o.expr for o in self.outputs if isinstance(o.expr, BoundAggregate))


def resolve(
    parsed: ParsedQuery,
    product: DataProduct,
    *,
    allowed_columns: frozenset[str],
    delta: float,
) -> ResolvedQuery:
    """Bind ``parsed`` to ``product`` under a scope allowing ``allowed_columns``.

    Returns the ``ResolvedQuery``. Raises ``UnsupportedQuery`` (wrong table, literal of
    the wrong type), ``UnknownColumn`` and ``ColumnNotAllowed``. (How many groups may
    be released is the cost model's business, ``cost.py``.)
    """
    return _Resolver(parsed, product, allowed_columns, delta).resolve()


class _Resolver:
    def __init__(
        self, parsed: ParsedQuery, product: DataProduct, allowed: frozenset[str], delta: float
    ) -> None:
        self.parsed = parsed
        self.product = product
        self.allowed = allowed
        self.delta = delta

    def resolve(self) -> ResolvedQuery:
        parsed, product = self.parsed, self.product
        if parsed.table != product.id:
            raise UnsupportedQuery(
                f"FROM {parsed.table}: this query runs on product {product.id!r}; "
                f"write FROM {product.id}",
                {"clause": "FROM", "found": parsed.table, "rule": "from_product"},
            )
        keys = {k.label: self._key(k, "GROUP BY") for k in parsed.group_by}
        outputs: list[BoundOutput] = []
        for col in parsed.columns:
            if isinstance(col.expr, GroupKey):
                outputs.append(BoundOutput(col.name, keys[col.expr.label]))
            else:
                outputs.append(BoundOutput(col.name, self._aggregate(col.expr)))
        bound_keys = tuple(keys.values())
        where = self._predicate(parsed.where) if parsed.where is not None else None
        return ResolvedQuery(
            product=product,
            outputs=tuple(outputs),
            keys=bound_keys,
            where=where,
            order_by=parsed.order_by,
            limit=parsed.limit,
            offset=parsed.offset,
            normalized_sql=parsed.normalized_sql,
        )

    # columns ------------------------------------------------------------------------

    def _column(self, ref: Ref, clause: str) -> Column:
        product = self.product
        if ref.qualifier is not None and ref.qualifier not in (product.id, self.parsed.table_alias):
            raise UnknownColumn(
                f"{clause} {ref.qualifier}.{ref.name}: there is no table or alias "
                f"{ref.qualifier!r}; qualify columns with {product.id!r} or its alias, or not "
                "at all",
                {"clause": clause, "column": f"{ref.qualifier}.{ref.name}", "rule": "exists"},
            )
        column = product.column(ref.name) if ref.name not in HIDDEN_COLUMNS else None
        if column is None:
            raise UnknownColumn(
                f"{clause}: product {product.id!r} has no column {ref.name!r}; its columns are "
                f"{', '.join(product.column_names)}",
                {"clause": clause, "column": ref.name, "rule": "exists"},
            )
        if column.classification is Classification.IDENTIFIER:
            raise ColumnNotAllowed(
                f"{clause} {column.name}: {column.name} is an identifier column; identifiers "
                "are never released, grouped, filtered or aggregated (DP protects the units "
                "they identify); use attribute or public columns",
                {"clause": clause, "column": column.name, "rule": "identifier"},
            )
        if column.name not in self.allowed:
            allowed = ", ".join(sorted(self.allowed)) or "none"
            raise ColumnNotAllowed(
                f"{clause} {column.name}: this scope does not allow column {column.name!r}; "
                f"it allows: {allowed}",
                {
                    "clause": clause,
                    "column": column.name,
                    "rule": "scope_columns",
                    "allowed": sorted(self.allowed),
                },
            )
        return column

    def _key(self, key: GroupKey, clause: str) -> BoundKey:
        column = self._column(key.column, clause)
        if key.binned:
            if column.bins is None:
                raise ColumnNotAllowed(
                    f"{clause} BIN({column.name}): the product declares no bins for "
                    f"{column.name}; BIN works only on numeric columns with declared bins",
                    {"clause": clause, "column": column.name, "rule": "bins"},
                )
            return BoundKey(column, True, tuple(range(len(column.bins) - 1)))
        if not column.group_by:
            hint = f"; group by BIN({column.name}) instead" if column.bins else ""
            raise ColumnNotAllowed(
                f"{clause} {column.name}: the product does not allow {column.name} as a group "
                f"key (group_by is false){hint}",
                {"clause": clause, "column": column.name, "rule": "group_by"},
            )
        if column.public_values is not None:
            values: tuple[KeyValue, ...] = column.public_values
            if column.nullable:
                values = (*values, None)
            return BoundKey(column, False, values)
        if self.delta > 0:
            return BoundKey(column, False, None)
        raise ColumnNotAllowed(
            f"{clause} {column.name}: the product declares no public_values for "
            f"{column.name}, and this scope has delta = 0, so the set of keys present in the "
            "data cannot be released; group by a column with public_values or by "
            "BIN(column) over declared bins, or ask the operator for a scope with delta > 0 "
            "(then unknown keys are released through a threshold mechanism)",
            {"clause": clause, "column": column.name, "rule": "public_values_or_delta"},
        )

    def _aggregate(self, agg: Aggregate) -> BoundAggregate:
        if agg.column is None:
            return BoundAggregate(agg.func, None, agg.alpha)
        clause = f"SELECT {agg.label}"
        column = self._column(agg.column, "SELECT")
        if not column.aggregate:
            raise ColumnNotAllowed(
                f"{clause}: the product does not allow aggregating {column.name} "
                "(aggregate is false)",
                {"clause": "SELECT", "column": column.name, "rule": "aggregate"},
            )
        if agg.func is not AggFunc.COUNT and (not column.type.numeric or column.bounds is None):
            raise ColumnNotAllowed(
                f"{clause}: {column.name} is a {column.type.value} column"
                + ("" if not column.type.numeric else " without bounds")
                + "; SUM, AVG, MEDIAN and QUANTILE_CONT need a numeric column with declared "
                "bounds (they clip to them); COUNT works on any column",
                {"clause": "SELECT", "column": column.name, "rule": "numeric_with_bounds"},
            )
        if agg.func is AggFunc.COUNT:
            return BoundAggregate(agg.func, column, agg.alpha)
        return BoundAggregate(agg.func, self._clipped(column, agg), agg.alpha, agg.clip)

    def _clipped(self, column: Column, agg: Aggregate) -> Column:
        """``column`` with the bounds this aggregate clips to (see ``BoundAggregate``).

        Raises ``ColumnNotAllowed`` (rule ``clip_within_bounds``) if CLIP reaches
        outside the declared bounds, (rule ``bounds_range``) if the bounds are outside
        the range the engine computes with exactly; ``UnsupportedQuery`` for a
        fractional CLIP bound on an integer column.
        """
        assert column.bounds is not None
        lo, hi = column.bounds
        clause = f"SELECT {agg.label}"
        integer = column.type is ColumnType.INTEGER
        if agg.clip is not None:
            clo, chi = agg.clip
            if integer:
                if not (float(clo).is_integer() and float(chi).is_integer()):
                    raise UnsupportedQuery(
                        f"{clause}: {column.name} is an integer column, so the bounds of "
                        "CLIP are integers",
                        {"clause": "SELECT", "column": column.name, "rule": "clip"},
                    )
                clo, chi = int(clo), int(chi)
            else:
                clo, chi = float(clo), float(chi)
            if not (lo <= clo and chi <= hi):
                raise ColumnNotAllowed(
                    f"{clause}: CLIP may only tighten the declared bounds of {column.name}, "
                    f"[{number_text(lo)}, {number_text(hi)}]; ask for lo >= {number_text(lo)} "
                    f"and hi <= {number_text(hi)} (clipping beyond the declared bounds would "
                    "break the sensitivity they guarantee)",
                    {
                        "clause": "SELECT",
                        "column": column.name,
                        "rule": "clip_within_bounds",
                        "bounds": [lo, hi],
                    },
                )
            lo, hi = clo, chi
        if integer:
            # Stored integers are BIGINT: clipping to the BIGINT range changes no value,
            # and keeps every bound the SQL computes with exact (see docs/engine.md).
            lo, hi = max(int(lo), INT64_MIN), min(int(hi), INT64_MAX)
            ok = lo < hi
        else:
            ok = max(abs(lo), abs(hi)) <= MAX_BOUND and hi - lo >= MIN_BOUNDS_WIDTH
        if not ok:
            raise ColumnNotAllowed(
                f"{clause}: the bounds of {column.name}, [{number_text(column.bounds[0])}, "
                f"{number_text(column.bounds[1])}], are outside the range the engine computes "
                f"with exactly (within ±{MAX_BOUND:g} and at least {MIN_BOUNDS_WIDTH:g} apart; "
                "for integers, within the 64-bit range); ask with tighter bounds, "
                f"e.g. {agg.func.value.upper()}(CLIP({column.name}, lo, hi)), or ask the "
                "operator to declare narrower bounds",
                {"clause": "SELECT", "column": column.name, "rule": "bounds_range"},
            )
        if (lo, hi) == column.bounds:
            return column
        bins = column.bins
        if agg.clip is not None and bins is not None:
            # Quantile candidates: the declared edges strictly inside, and the new bounds.
            bins = tuple(sorted({lo, hi} | {e for e in bins if lo < e < hi}))
        return replace(column, bounds=(lo, hi), bins=bins)

    # WHERE --------------------------------------------------------------------------

    def _predicate(self, pred: Predicate) -> Predicate:
        if isinstance(pred, And):
            return And(tuple(self._predicate(p) for p in pred.parts))
        if isinstance(pred, Or):
            return Or(tuple(self._predicate(p) for p in pred.parts))
        if isinstance(pred, Not):
            return Not(self._predicate(pred.part))
        column = self._column(pred.column, "WHERE")
        if not column.where:
            raise ColumnNotAllowed(
                f"WHERE {column.name}: the product does not allow filtering on {column.name} "
                "(where is false)",
                {"clause": "WHERE", "column": column.name, "rule": "where"},
            )
        ref = Ref(column.name)
        if isinstance(pred, Compare):
            return Compare(ref, pred.op, _typed(pred.value, column))
        if isinstance(pred, InList):
            return InList(ref, tuple(_typed(v, column) for v in pred.values), pred.negated)
        if isinstance(pred, Between):
            return Between(ref, _typed(pred.low, column), _typed(pred.high, column), pred.negated)
        assert isinstance(pred, IsNull)
        return IsNull(ref, pred.negated)


_EXAMPLES = {
    ColumnType.INTEGER: "a number, e.g. >= 30",
    ColumnType.FLOAT: "a number, e.g. >= 1.5",
    ColumnType.STRING: "a string, e.g. = 'A'",
    ColumnType.BOOLEAN: "TRUE or FALSE",
    ColumnType.DATE: "DATE 'YYYY-MM-DD'",
}


def _typed(value: LiteralValue, column: Column) -> LiteralValue:
    """Return ``value`` as a literal of ``column``'s type, or raise UnsupportedQuery."""
    ctype = column.type
    ok: LiteralValue | None = None
    if ctype.numeric:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and (not isinstance(value, float) or math.isfinite(value)):
            ok = value
    elif ctype is ColumnType.STRING:
        ok = value if isinstance(value, str) else None
    elif ctype is ColumnType.BOOLEAN:
        ok = value if isinstance(value, bool) else None
    elif ctype is ColumnType.DATE:
        if isinstance(value, dt.date):
            ok = value
        elif isinstance(value, str):
            try:
                ok = dt.date.fromisoformat(value)
            except ValueError:
                ok = None
    if ok is None:
        raise UnsupportedQuery(
            f"WHERE {column.name}: {value!r} does not match the column's type "
            f"({ctype.value}); compare it with {_EXAMPLES[ctype]}",
            {"clause": "WHERE", "column": column.name, "rule": "literal_type"},
        )
    return ok
