"""Planner: a ``ResolvedQuery`` → the DuckDB SQL that runs, plus the DP accounting.

The SQL is produced by a tuple of rewrite rules (``RULES``), in the manner of
sqlglot's optimizer: each takes the current ``exp.Select`` and the ``PlanSpec`` and
returns the rewritten one, depending on nothing else (like sqlglot's rules they take
ownership of the tree they are given instead of copying it). The user's SQL text is
never executed; only literal values from it reach the output, rendered by sqlglot.
The rules, in order:

1. ``scan_product``       SELECT the needed columns FROM the product table
2. ``bound_contributions`` WHERE _unit_rank <= max_rows_per_unit (DESIGN §8)
3. ``apply_filter``       AND the user's (typed) predicate
4. ``restrict_bins``      AND BIN keys within the declared bins
5. ``clip_values``        aggregated values → LEAST(GREATEST(x, lo), hi) (NULL-safe)
6. ``encode_values``      clipped values → integers: fixed point for sums,
                          candidate codes for quantiles; bin keys → bin index
7. ``aggregate_groups``   one row per group: COUNT, exact integer SUM, HISTOGRAM of codes
8. ``restrict_keys``      keep groups whose keys are public values

Sensitivities come from manifest facts only — ``k = max_rows_per_unit`` and the
bounds — under the add/remove-one-unit neighbouring relation (a unit's rows may fall
into up to ``k`` different groups; see docs/engine.md):

- COUNT(*) / COUNT(col): L1 sensitivity over all groups ``k``.
- SUM(col): per-row integer value v with ``|v| <= B`` (``B = max(|lo|, |hi|)`` in fixed
  point), L1 sensitivity ``k * B``.
- AVG(col): a centred sum ``Σ (x - mid)`` (``B = (hi - lo) / 2``) and COUNT(col); the mean
  is post-processing.
- quantiles: integer scores ``|den·#(x<c) - num·(n - #(x=c))|`` per candidate ``c``,
  L-infinity sensitivity ``k * max(num, den - num)`` (OpenDP's score function, computed
  here from DuckDB's per-code counts), released with report-noisy-max.

The query's epsilon is split evenly across the distinct measurements.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from fractions import Fraction

from sqlglot import exp

from products.layout import UNIT_RANK, FixedPoint, fixed_point
from products.manifest import Column, ColumnType, DataProduct
from sandbox.engine.parse import (
    AggFunc,
    And,
    Between,
    Compare,
    CompareOp,
    InList,
    IsNull,
    LiteralValue,
    Not,
    Or,
    OrderKey,
    Predicate,
)
from sandbox.engine.resolve import BoundAggregate, BoundKey, ResolvedQuery

MAX_CANDIDATES = 1001
ROWS_ALIAS = "rows"


class MeasureKind(StrEnum):
    COUNT = "count"
    SUM = "sum"
    CENTERED_SUM = "centered_sum"
    QUANTILE = "quantile"


class Mechanism(StrEnum):
    DISCRETE_LAPLACE = "discrete_laplace"
    LAPLACE_THRESHOLD = "laplace_threshold"
    NOISY_MAX = "report_noisy_max"


@dataclass(frozen=True)
class Measurement:
    """One noisy statistic computed per group (a column ``alias`` of the SQL).

    The exact per-group value is an integer; the released value is
    ``noisy_integer * quantum`` (plus ``center * count`` for centred sums, applied in
    post-processing). ``sensitivity`` is in integer units: L1 over all groups for
    Laplace, L-infinity of the score vector for quantiles.
    """

    alias: str
    kind: MeasureKind
    column: Column | None
    mechanism: Mechanism
    row_bound: int
    sensitivity: int
    quantum: Fraction = Fraction(1)
    center: Fraction = Fraction(0)
    alpha: Fraction | None = None
    grid: Grid | None = None
    # Sums: the per-row integer v is the column's fixed-point value (products.layout),
    # and the exact statistic is ``scale_by * SUM(v) - offset * COUNT(v)``.
    fixed: FixedPoint | None = None
    scale_by: int = 1
    offset: int = 0

    @property
    def candidates(self) -> tuple[int | float, ...]:
        return self.grid.candidates if self.grid is not None else ()

    @property
    def input_name(self) -> str:
        return f"v_{self.alias}"


class OutputKind(StrEnum):
    KEY = "key"
    COUNT = "count"
    SUM = "sum"
    AVG = "avg"
    QUANTILE = "quantile"


class Function(StrEnum):
    """The aggregate functions a scope grants by name (``operations.aggregate.functions``,
    ``policies.scopes.AGGREGATE_FUNCTIONS``)."""

    COUNT = "count"
    SUM = "sum"
    AVG = "avg"
    QUANTILE = "quantile"
    HISTOGRAM = "histogram"


_FUNCTION_OF_KIND = {
    "count": Function.COUNT,
    "sum": Function.SUM,
    "avg": Function.AVG,
    "quantile": Function.QUANTILE,
}


@dataclass(frozen=True)
class OutputSpec:
    """How one output column is computed from the released measurements.

    ``function`` is what a scope must grant for this column: ``histogram`` for a
    ``BIN(col)`` key and for every COUNT of a query grouped by one (a histogram is
    ``SELECT BIN(col), COUNT(*) ... GROUP BY 1``), else the aggregate's own name
    (MEDIAN and QUANTILE_CONT are ``quantile``); None for a plain key.
    """

    name: str
    kind: OutputKind
    key_index: int | None = None
    measures: tuple[str, ...] = ()
    column: Column | None = None
    function: Function | None = None


@dataclass(frozen=True)
class PlanSpec:
    """Everything the rewrite rules need (pure data)."""

    product: DataProduct
    keys: tuple[BoundKey, ...]
    measurements: tuple[Measurement, ...]
    where: Predicate | None
    # True: sums read the loader's stored fixed-point columns (layout 2) instead of
    # clipping and rounding every row in SQL; both give the same integers.
    stored: bool = False


@dataclass(frozen=True)
class Plan:
    """The rewritten SQL and the accounting of every statistic it releases.

    The SQL is rendered on first use: a preview (accuracy before spending) needs only
    the accounting, and rendering is most of what planning costs."""

    spec: PlanSpec
    outputs: tuple[OutputSpec, ...]
    selector: str | None  # COUNT(*) alias whose threshold selects unknown keys
    suppressor: str | None  # COUNT(*) alias compared with min_group_size
    order_by: tuple[OrderKey, ...]
    limit: int | None
    offset: int
    key_names: tuple[str, ...] = field(default=())
    # The columns the loader stores (layout 2) that ``stored_sql`` needs.
    stored_columns: tuple[str, ...] = ()

    @functools.cached_property
    def sql(self) -> str:
        """The rewritten SQL over the product's raw columns."""
        return _render(self.spec)

    @functools.cached_property
    def stored_sql(self) -> str | None:
        """The same statistics reading the stored fixed-point columns (None when the
        query sums nothing)."""
        if not self.stored_columns:
            return None
        return _render(dataclasses.replace(self.spec, stored=True))

    @property
    def measurements(self) -> tuple[Measurement, ...]:
        return self.spec.measurements

    @property
    def keys(self) -> tuple[BoundKey, ...]:
        return self.spec.keys

    @property
    def functions_used(self) -> frozenset[str]:
        """The function names a scope must grant to run this query (see ``OutputSpec``)."""
        return frozenset(str(o.function) for o in self.outputs if o.function is not None)


Rule = Callable[[exp.Select, PlanSpec], exp.Select]


def key_name(index: int) -> str:
    return f"k{index}"


# --- measurements ------------------------------------------------------------------


def _bounds(column: Column) -> tuple[Fraction, Fraction]:
    assert column.bounds is not None
    lo, hi = column.bounds
    return Fraction(lo), Fraction(hi)


def _sum_measure(alias: str, column: Column, k: int, centered: bool) -> Measurement:
    """SUM or AVG's centred sum over the column's fixed-point integers v (exact).

    Integer column: v = clip(x); SUM is Σv (|v| <= max(|lo|, |hi|)); the centred sum
    is Σ(2v - (lo + hi)) in halves (|.| <= hi - lo). Float column: v = round(clip(x) ·
    2^s) in [lo_units, hi_units] (``products.layout.FixedPoint``); SUM is Σv, the
    centred sum Σ(v - C) with the integer centre C = floor((lo_units + hi_units) / 2).
    """
    fp = fixed_point(column)
    assert fp is not None
    kind = MeasureKind.CENTERED_SUM if centered else MeasureKind.SUM
    lo_u, hi_u = fp.lo_units, fp.hi_units
    scale_by, offset = 1, 0
    if fp.integer:
        if centered:
            bound = hi_u - lo_u
            quantum, center = Fraction(1, 2), Fraction(lo_u + hi_u, 2)
            scale_by, offset = 2, lo_u + hi_u
        else:
            bound, quantum, center = max(abs(lo_u), abs(hi_u)), Fraction(1), Fraction(0)
    else:
        quantum = fp.quantum
        if centered:
            offset = (lo_u + hi_u) // 2
            bound = max(offset - lo_u, hi_u - offset)
            center = offset * quantum
        else:
            bound, center = max(abs(lo_u), abs(hi_u)), Fraction(0)
    bound = max(bound, 1)
    return Measurement(
        alias=alias,
        kind=kind,
        column=column,
        mechanism=Mechanism.DISCRETE_LAPLACE,
        row_bound=bound,
        sensitivity=k * bound,
        quantum=quantum,
        center=center,
        fixed=fp,
        scale_by=scale_by,
        offset=offset,
    )


class CodeMode(StrEnum):
    """How a value's candidate code is computed in SQL (see ``_quantile_code``)."""

    DENSE = "dense"  # every integer lo..hi is a candidate: code = 2 (x - lo) + 1
    INT_STEP = "int_step"  # c_i = min(lo + i * step, hi), exact integer arithmetic
    FLOAT_STEP = "float_step"  # c_i = lo + (span * i) / (m - 1), the same IEEE operations
    EDGES = "edges"  # declared bins: a balanced CASE tree over the edges


@dataclass(frozen=True)
class Grid:
    """Quantile candidates and how SQL locates a value among them."""

    candidates: tuple[int | float, ...]
    mode: CodeMode
    step: int = 0  # INT_STEP
    span: float = 0.0  # FLOAT_STEP: hi - lo as a double


def quantile_grid(column: Column) -> Grid:
    """Return the candidates for quantiles of ``column``: its declared bin edges when
    there are any, else a grid of at most ``MAX_CANDIDATES`` points over the bounds."""
    assert column.bounds is not None
    lo, hi = column.bounds
    integer = column.type is ColumnType.INTEGER
    if column.bins is not None:
        edges: tuple[int | float, ...] = tuple(sorted(set(column.bins)))
        if integer:
            edges = tuple(sorted({int(e) for e in edges if float(e).is_integer()}))
        if edges:
            return Grid(edges, CodeMode.EDGES)
    if integer:
        ilo, ihi = int(lo), int(hi)
        if ihi - ilo < MAX_CANDIDATES:
            return Grid(tuple(range(ilo, ihi + 1)), CodeMode.DENSE)
        step = -(-(ihi - ilo) // (MAX_CANDIDATES - 1))
        count = -(-(ihi - ilo) // step) + 1
        return Grid(
            tuple(min(ilo + i * step, ihi) for i in range(count)), CodeMode.INT_STEP, step=step
        )
    flo, fhi = float(lo), float(hi)
    span = fhi - flo
    # Exactly the IEEE operations the SQL performs, so both sides agree bit for bit.
    grid = tuple(flo + (span * i) / (MAX_CANDIDATES - 1) for i in range(MAX_CANDIDATES))
    if all(a < b for a, b in itertools.pairwise(grid)):
        return Grid(grid, CodeMode.FLOAT_STEP, span=span)
    return Grid(tuple(sorted(set(grid))), CodeMode.EDGES)  # degenerate bounds


def _quantile_measure(alias: str, column: Column, alpha: Fraction, k: int) -> Measurement:
    grid = quantile_grid(column)
    # OpenDP's quantile score: |den·#(x<c) − num·(n − #(x=c))|; adding or removing one
    # row changes it by at most max(num, den − num) (make_quantile_score_candidates),
    # whatever candidate code the row maps to.
    row_bound = max(alpha.numerator, alpha.denominator - alpha.numerator)
    return Measurement(
        alias=alias,
        kind=MeasureKind.QUANTILE,
        column=column,
        mechanism=Mechanism.NOISY_MAX,
        row_bound=row_bound,
        sensitivity=k * row_bound,
        alpha=alpha,
        grid=grid,
    )


class _Catalogue:
    """Deduplicating builder of the measurements a query needs."""

    def __init__(self, product: DataProduct, threshold: bool) -> None:
        self.k = product.max_rows_per_unit
        self.threshold = threshold
        self.items: dict[tuple[object, ...], Measurement] = {}

    def _add(self, key: tuple[object, ...], make: Callable[[str], Measurement]) -> str:
        if key not in self.items:
            self.items[key] = make(f"m{len(self.items)}")
        return self.items[key].alias

    def count(self, column: Column | None) -> str:
        mechanism = (
            Mechanism.LAPLACE_THRESHOLD
            if self.threshold and column is None
            else Mechanism.DISCRETE_LAPLACE
        )
        return self._add(
            ("count", column.name if column else None),
            lambda a: Measurement(a, MeasureKind.COUNT, column, mechanism, 1, self.k),
        )

    def sum(self, column: Column, centered: bool) -> str:
        # The column carries the bounds clipped to (declared or CLIP): SUM(x) and
        # SUM(CLIP(x, ...)) are different statistics.
        return self._add(
            ("sum", column.name, column.bounds, centered),
            lambda a: _sum_measure(a, column, self.k, centered),
        )

    def quantile(self, column: Column, alpha: Fraction) -> str:
        return self._add(
            ("quantile", column.name, column.bounds, column.bins, alpha),
            lambda a: _quantile_measure(a, column, alpha, self.k),
        )


def plan(query: ResolvedQuery) -> Plan:
    """Return the ``Plan`` for ``query``: rewritten SQL, measurements, outputs."""
    product = query.product
    threshold = query.unknown_keys
    cat = _Catalogue(product, threshold)
    selector = cat.count(None) if threshold else None
    outputs: list[OutputSpec] = []
    key_index = {id(k): i for i, k in enumerate(query.keys)}
    binned = any(k.binned for k in query.keys)
    for out in query.outputs:
        expr = out.expr
        if isinstance(expr, BoundKey):
            function = Function.HISTOGRAM if expr.binned else None
            outputs.append(
                OutputSpec(
                    out.name, OutputKind.KEY, key_index=key_index[id(expr)], function=function
                )
            )
            continue
        output = _output(out.name, expr, cat)
        function = _FUNCTION_OF_KIND[output.kind.value]
        if binned and function is Function.COUNT:
            function = Function.HISTOGRAM  # counts per declared bin: a histogram
        outputs.append(replace(output, function=function))
    suppressor = cat.count(None) if product.min_group_size is not None else None
    spec = PlanSpec(
        product=product,
        keys=query.keys,
        measurements=tuple(cat.items.values()),
        where=query.where,
    )
    stored = [m.fixed.name for m in spec.measurements if m.fixed is not None]
    if stored:
        stored += [
            fp.name
            for m in spec.measurements
            if m.kind is MeasureKind.COUNT and m.column is not None
            if (fp := fixed_point(m.column)) is not None
        ]
    return Plan(
        stored_columns=tuple(dict.fromkeys(stored)),
        spec=spec,
        outputs=tuple(outputs),
        selector=selector,
        suppressor=suppressor,
        order_by=query.order_by,
        limit=query.limit,
        offset=query.offset,
        key_names=tuple(key_name(i) for i in range(len(query.keys))),
    )


def _render(spec: PlanSpec) -> str:
    select = exp.Select()
    for rule in RULES:
        select = rule(select, spec)
    # The tree is ours and dropped after rendering: no defensive copy (it dominated
    # prepare() once the plan is rendered in two forms).
    return str(select.sql(dialect="duckdb", copy=False))


def _output(name: str, agg: BoundAggregate, cat: _Catalogue) -> OutputSpec:
    column = agg.column
    if agg.func is AggFunc.COUNT:
        return OutputSpec(name, OutputKind.COUNT, measures=(cat.count(column),), column=column)
    assert column is not None
    if agg.func is AggFunc.SUM:
        return OutputSpec(name, OutputKind.SUM, measures=(cat.sum(column, False),), column=column)
    if agg.func is AggFunc.AVG:
        measures = (cat.sum(column, True), cat.count(column))
        return OutputSpec(name, OutputKind.AVG, measures=measures, column=column)
    assert agg.alpha is not None
    return OutputSpec(
        name, OutputKind.QUANTILE, measures=(cat.quantile(column, agg.alpha),), column=column
    )


# --- SQL building blocks -----------------------------------------------------------


def _col(name: str) -> exp.Column:
    return exp.column(name, quoted=True)


def _double(value: float) -> exp.Expr:
    # repr round-trips exactly; DuckDB parses the string to the same double
    return exp.cast(exp.Literal.string(repr(float(value))), exp.DataType.build("DOUBLE"))


def literal(value: LiteralValue | None) -> exp.Expr:
    """Render a typed Python value as a SQL literal (sqlglot escapes strings)."""
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int):
        return exp.Literal.number(value)
    if isinstance(value, float):
        return _double(value)
    if isinstance(value, str):
        return exp.Literal.string(value)
    return exp.cast(exp.Literal.string(value.isoformat()), exp.DataType.build("DATE"))


def _bound_literal(value: float | int, column: Column) -> exp.Expr:
    if column.type is ColumnType.INTEGER:
        return exp.Literal.number(int(value))
    return _double(float(value))


def _clamp(expr: exp.Expr, lo: exp.Expr, hi: exp.Expr) -> exp.Expr:
    """CASE WHEN x BETWEEN lo AND hi THEN x WHEN x < lo THEN lo WHEN x > hi THEN hi END:
    the clipping of LEAST(GREATEST(x, lo), hi), except that NULL stays NULL (DuckDB's
    GREATEST ignores NULLs, which would turn a missing value into ``lo``). The common
    in-bounds case is tested first (measurably faster in DuckDB)."""
    return exp.Case(
        ifs=[
            exp.If(
                this=exp.Between(this=expr.copy(), low=lo.copy(), high=hi.copy()),
                true=expr.copy(),
            ),
            exp.If(this=exp.LT(this=expr.copy(), expression=lo.copy()), true=lo.copy()),
            exp.If(this=exp.GT(this=expr.copy(), expression=hi.copy()), true=hi.copy()),
        ],
    )


def _clip(expr: exp.Expr, column: Column) -> exp.Expr:
    assert column.bounds is not None
    lo, hi = column.bounds
    return _clamp(expr, _bound_literal(lo, column), _bound_literal(hi, column))


def _predicate_sql(pred: Predicate) -> exp.Expr:
    if isinstance(pred, And):
        return exp.and_(*(_predicate_sql(p) for p in pred.parts))
    if isinstance(pred, Or):
        return exp.or_(*(_predicate_sql(p) for p in pred.parts))
    if isinstance(pred, Not):
        return exp.Not(this=exp.Paren(this=_predicate_sql(pred.part)))
    col = _col(pred.column.name)
    if isinstance(pred, Compare):
        ops: dict[CompareOp, type[exp.Binary]] = {
            CompareOp.EQ: exp.EQ,
            CompareOp.NE: exp.NEQ,
            CompareOp.LT: exp.LT,
            CompareOp.LE: exp.LTE,
            CompareOp.GT: exp.GT,
            CompareOp.GE: exp.GTE,
        }
        return ops[pred.op](this=col, expression=literal(pred.value))
    if isinstance(pred, InList):
        node: exp.Expr = exp.In(this=col, expressions=[literal(v) for v in pred.values])
    elif isinstance(pred, Between):
        node = exp.Between(this=col, low=literal(pred.low), high=literal(pred.high))
    else:
        assert isinstance(pred, IsNull)
        node = exp.Is(this=col, expression=exp.Null())
    negated = getattr(pred, "negated", False)
    return exp.Not(this=exp.Paren(this=node)) if negated else node


def _wrap(inner: exp.Select, projections: Sequence[exp.Expr]) -> exp.Select:
    return exp.select(*projections).from_(inner.subquery(ROWS_ALIAS, copy=False), copy=False)


def _passthrough(select: exp.Select, replace: dict[str, exp.Expr]) -> list[exp.Expr]:
    """Project every output name of ``select`` through, replacing some by expressions."""
    out: list[exp.Expr] = []
    for proj in select.expressions:
        name = proj.alias_or_name
        expr = replace.get(name, _col(name))
        out.append(exp.alias_(expr, name, quoted=True))
    return out


def _search_tree(
    value: exp.Expr,
    edges: Sequence[int | float],
    column: Column,
    leaf: Callable[[int], exp.Expr],
    strict: bool,
) -> exp.Expr:
    """Return a balanced CASE tree computing ``leaf(j)`` where j = #{edges e : e < value}
    (``strict``) or #{e : e <= value}; depth log2(len(edges))."""

    def node(lo: int, hi: int) -> exp.Expr:
        if lo == hi:
            return leaf(lo)
        mid = (lo + hi) // 2
        edge = _bound_literal(edges[mid], column)
        test: exp.Expr = (
            exp.GT(this=value.copy(), expression=edge)
            if strict
            else exp.GTE(this=value.copy(), expression=edge)
        )
        return exp.Case(ifs=[exp.If(this=test, true=node(mid + 1, hi))], default=node(lo, mid))

    return node(0, len(edges))


def _int(value: int) -> exp.Expr:
    return exp.Literal.number(value)


def _as_int(condition: exp.Expr) -> exp.Expr:
    return exp.cast(condition, exp.DataType.build("BIGINT"))


def _quantile_code(value: exp.Expr, m: Measurement) -> exp.Expr:
    """code = 2j + [value = c_j] with j = #{candidates < value}; NULL stays NULL.

    Then #(x < c_i) = #{code <= 2i} and #(x = c_i) = #{code = 2i + 1}. (Any per-row
    code keeps the score sensitivity; exact codes make the scores OpenDP's.)
    """
    column, grid = m.column, m.grid
    assert column is not None and grid is not None
    cands = grid.candidates
    if grid.mode is CodeMode.DENSE:
        offset = exp.Paren(this=exp.Sub(this=value, expression=_int(int(cands[0]))))
        return exp.Add(this=exp.Mul(this=_int(2), expression=offset), expression=_int(1))
    if grid.mode is CodeMode.INT_STEP:
        lo, hi, step = int(cands[0]), int(cands[-1]), grid.step
        # x - lo can exceed BIGINT (bounds near ±2^63, issue 13): compute in HUGEINT,
        # where it cannot overflow for any stored value; j itself is at most 1,000.
        wide = exp.cast(value.copy(), exp.DataType.build("HUGEINT"))
        above = exp.Paren(this=exp.Sub(this=wide, expression=_int(lo)))
        j = exp.Paren(
            this=exp.IntDiv(
                this=exp.Paren(this=exp.Add(this=above.copy(), expression=_int(step - 1))),
                expression=_int(step),
            )
        )
        on_grid = exp.or_(
            exp.EQ(this=exp.Mod(this=above, expression=_int(step)), expression=_int(0)),
            exp.EQ(this=value.copy(), expression=_int(hi)),
        )
        code = exp.Add(this=exp.Mul(this=_int(2), expression=j), expression=_as_int(on_grid))
        return exp.cast(code, exp.DataType.build("BIGINT"))
    if grid.mode is CodeMode.FLOAT_STEP:
        return _float_grid_code(value, grid)

    def leaf(j: int) -> exp.Expr:
        if j >= len(cands):
            return _int(2 * j)
        return exp.Case(
            ifs=[
                exp.If(
                    this=exp.EQ(this=value.copy(), expression=_bound_literal(cands[j], column)),
                    true=_int(2 * j + 1),
                )
            ],
            default=_int(2 * j),
        )

    return _search_tree(value, cands, column, leaf, strict=True)


def _float_grid_code(value: exp.Expr, grid: Grid) -> exp.Expr:
    """Locate ``value`` on the grid c_i = lo + (span * i) / (m - 1): estimate the index
    arithmetically, then settle it exactly by comparing with the three grid points
    around the estimate (computed with the same IEEE operations as ``quantile_grid``)."""
    m = len(grid.candidates)
    lo = _double(float(grid.candidates[0]))
    span = _double(grid.span)
    last = _double(float(m - 1))

    def point(index: exp.Expr) -> exp.Expr:
        scaled = exp.Mul(this=span.copy(), expression=exp.cast(index, exp.DataType.build("DOUBLE")))
        return exp.Add(this=lo.copy(), expression=exp.Div(this=scaled, expression=last.copy()))

    estimate = exp.cast(
        exp.Floor(
            this=exp.Div(
                this=exp.Paren(this=exp.Sub(this=value.copy(), expression=lo.copy())),
                expression=exp.Paren(this=exp.Div(this=span.copy(), expression=last.copy())),
            )
        ),
        exp.DataType.build("BIGINT"),
    )
    pivot = _clamp(estimate, _int(1), _int(m - 2))
    j: exp.Expr = exp.Sub(this=pivot.copy(), expression=_int(1))
    for delta in (-1, 0, 1):
        index = exp.Add(this=pivot.copy(), expression=_int(delta))
        j = exp.Add(this=j, expression=_as_int(exp.GT(this=value.copy(), expression=point(index))))
    j = exp.Paren(this=j)
    equal = _as_int(exp.EQ(this=value.copy(), expression=point(j.copy())))
    return exp.Add(this=exp.Mul(this=_int(2), expression=j), expression=equal)


def _bin_index(value: exp.Expr, column: Column) -> exp.Expr:
    """Return the 0-based bin of ``value`` over the column's edges: bin i holds
    e_i <= x < e_{i+1}; the last bin also holds x = e_last."""
    assert column.bins is not None
    inner = list(column.bins[1:-1])
    if not inner:
        return exp.Literal.number(0)
    return _search_tree(
        value, inner, _as_float(column), lambda j: exp.Literal.number(j), strict=False
    )


def _as_float(column: Column) -> Column:
    # bin edges are floats in the manifest; compare them as DOUBLE
    return Column(column.name, ColumnType.FLOAT, column.classification)


# --- the rules ---------------------------------------------------------------------


def _stored_input(m: Measurement, spec: PlanSpec) -> FixedPoint | None:
    """The stored fixed-point column a measurement reads in the stored form: sums, and
    COUNT(col) (the stored column is NULL exactly where the column is)."""
    if not spec.stored or m.kind is MeasureKind.QUANTILE or m.column is None:
        return None
    return m.fixed or fixed_point(m.column)


def _input(m: Measurement, spec: PlanSpec) -> str:
    """The input column a measurement aggregates. In the stored form every measurement
    of one column shares one input, so that DuckDB computes SUM(v) and COUNT(v) once
    for SUM, AVG and COUNT of that column (it deduplicates identical aggregates)."""
    fp = _stored_input(m, spec)
    return f"s_{fp.column}" if fp is not None else m.input_name


def scan_product(select: exp.Select, spec: PlanSpec) -> exp.Select:
    """SELECT the group keys (k0, k1, ...) and one input column per measurement."""
    projections: list[exp.Expr] = []
    for i, key in enumerate(spec.keys):
        projections.append(exp.alias_(_col(key.column.name), key_name(i), quoted=True))
    shared: set[str] = set()
    for m in spec.measurements:
        fixed = _stored_input(m, spec)
        if fixed is not None:
            if _input(m, spec) not in shared:
                shared.add(_input(m, spec))
                projections.append(exp.alias_(_col(fixed.name), _input(m, spec), quoted=True))
        elif m.column is not None:
            projections.append(exp.alias_(_col(m.column.name), m.input_name, quoted=True))
    if not projections:
        projections.append(exp.alias_(exp.Literal.number(1), "one", quoted=True))
    table = exp.Table(this=exp.to_identifier(spec.product.id, quoted=True))
    return exp.select(*projections).from_(table)


def bound_contributions(select: exp.Select, spec: PlanSpec) -> exp.Select:
    """Keep at most k = max_rows_per_unit rows per unit: the loader's fixed random
    per-unit permutation rank (DESIGN §8)."""
    bound = exp.LTE(
        this=_col(UNIT_RANK), expression=exp.Literal.number(spec.product.max_rows_per_unit)
    )
    return select.where(bound, copy=False)


def apply_filter(select: exp.Select, spec: PlanSpec) -> exp.Select:
    """AND the user's predicate (typed literals only; it does not change sensitivity)."""
    if spec.where is None:
        return select
    return select.where(exp.Paren(this=_predicate_sql(spec.where)), copy=False)


def restrict_bins(select: exp.Select, spec: PlanSpec) -> exp.Select:
    """Keep only rows inside the declared bins of each BIN key (a row outside every
    bin belongs to no released group)."""
    out = select
    for key in spec.keys:
        if key.binned:
            assert key.column.bins is not None
            floating = _as_float(key.column)
            cond = exp.Between(
                this=_col(key.column.name),
                low=_bound_literal(key.column.bins[0], floating),
                high=_bound_literal(key.column.bins[-1], floating),
            )
            out = out.where(exp.Paren(this=cond), copy=False)
    return out


def restrict_keys(select: exp.Select, spec: PlanSpec) -> exp.Select:
    """Keep only groups whose keys are public values (defence in depth: the loader
    already refused other values, and the release only looks public keys up).

    Applied after aggregation, as a semi-join with a VALUES list: a row-level
    ``IN (...)`` over many strings costs DuckDB more than the aggregate itself, and
    DuckDB pushes plain filters on group keys below the GROUP BY."""
    conditions: list[exp.Expr] = []
    for i, key in enumerate(spec.keys):
        if key.binned or key.values is None:
            continue
        present = [v for v in key.values if v is not None]
        values = exp.values(
            [exp.Tuple(expressions=[literal(_key_literal(v, key))]) for v in present],
            alias="public",
            columns=["v"],
        )
        allowed = exp.select(_col("v")).from_(values)
        cond: exp.Expr = exp.In(this=_col(key_name(i)), query=allowed.subquery(copy=False))
        if len(present) < len(key.values):
            cond = exp.or_(cond, exp.Is(this=_col(key_name(i)), expression=exp.Null()))
        conditions.append(exp.Paren(this=cond))
    if not conditions:
        return select
    return _wrap(select, _passthrough(select, {})).where(*conditions, copy=False)


def _key_literal(value: object, key: BoundKey) -> LiteralValue:
    if key.column.type is ColumnType.DATE:
        assert isinstance(value, str)
        return dt.date.fromisoformat(value)
    assert isinstance(value, str | int | float | bool)
    return value


def clip_values(select: exp.Select, spec: PlanSpec) -> exp.Select:
    """Clip every summed or ranked value to the column's bounds."""
    replace: dict[str, exp.Expr] = {}
    for m in spec.measurements:
        if spec.stored and m.fixed is not None:
            continue  # stored clipped (products.layout)
        if m.kind in (MeasureKind.SUM, MeasureKind.CENTERED_SUM, MeasureKind.QUANTILE):
            assert m.column is not None
            replace[m.input_name] = _clip(_col(m.input_name), m.column)
    return _wrap(select, _passthrough(select, replace))


def encode_values(select: exp.Select, spec: PlanSpec) -> exp.Select:
    """Turn clipped values into integers whose per-row magnitude is bounded by
    ``row_bound`` (fixed point for sums, candidate codes for quantiles) and bin keys
    into bin indexes."""
    replace: dict[str, exp.Expr] = {}
    for i, key in enumerate(spec.keys):
        if key.binned:
            replace[key_name(i)] = _bin_index(_col(key_name(i)), key.column)
    for m in spec.measurements:
        value = _col(m.input_name)
        if m.kind is MeasureKind.QUANTILE:
            replace[m.input_name] = _quantile_code(value, m)
        elif m.kind in (MeasureKind.SUM, MeasureKind.CENTERED_SUM) and not spec.stored:
            replace[m.input_name] = _fixed_point_sql(value, m)
    return _wrap(select, _passthrough(select, replace))


def _fixed_point_sql(value: exp.Expr, m: Measurement) -> exp.Expr:
    """The per-row fixed-point integer of an already clipped value: the very
    operations the loader stores (``products.loader.fixed_point_sql``).

    No re-clamp: clip(x) lies in [lo, hi]; multiplying by 2^s is exact in IEEE
    arithmetic, and ROUND is monotone, so v lies in [lo_units, hi_units], the exact
    images of the bounds from which the sensitivity is computed (docs/engine.md).
    """
    fp = m.fixed
    assert fp is not None
    if fp.integer:
        return value
    scaled = exp.Mul(this=value, expression=_double(fp.multiplier))
    return exp.cast(exp.Round(this=scaled), exp.DataType.build("BIGINT"))


def _sum_sql(value: exp.Expr, m: Measurement) -> exp.Expr:
    """``scale_by * SUM(v) - offset * COUNT(v)``, exact in HUGEINT."""
    total: exp.Expr = exp.Sum(this=value)
    if m.kind is not MeasureKind.CENTERED_SUM:
        return total
    huge = exp.DataType.build("HUGEINT")
    if m.scale_by != 1:
        total = exp.Mul(this=exp.cast(total, huge), expression=exp.Literal.number(m.scale_by))
    if m.offset:
        shift = exp.Mul(
            this=exp.cast(exp.Literal.number(m.offset), huge),
            expression=exp.Count(this=value.copy()),
        )
        total = exp.Sub(this=exp.cast(total, huge), expression=shift)
    return total


def aggregate_groups(select: exp.Select, spec: PlanSpec) -> exp.Select:
    """One row per group present in the data: exact integer aggregates."""
    projections: list[exp.Expr] = []
    keys = [key_name(i) for i in range(len(spec.keys))]
    for name in keys:
        projections.append(exp.alias_(_col(name), name, quoted=True))
    for m in spec.measurements:
        value = _col(_input(m, spec))
        agg: exp.Expr
        if m.kind is MeasureKind.COUNT:
            agg = exp.Count(this=value if m.column is not None else exp.Star())
        elif m.kind is MeasureKind.QUANTILE:
            agg = exp.Anonymous(this="histogram", expressions=[value])
        else:
            agg = _sum_sql(value, m)
        projections.append(exp.alias_(agg, m.alias, quoted=True))
    out = _wrap(select, projections)
    if keys:
        out = out.group_by(*(_col(name) for name in keys), copy=False)
    return out


RULES: tuple[Rule, ...] = (
    scan_product,
    bound_contributions,
    apply_filter,
    restrict_bins,
    clip_values,
    encode_values,
    aggregate_groups,
    restrict_keys,
)
