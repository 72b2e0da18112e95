"""Restricted SQL → ``ParsedQuery`` (DESIGN §2 invariant 2, §8).

The only grammar the engine accepts is one ``SELECT`` over the product table::

    SELECT <key | aggregate> [AS name], ...
    FROM <product id> [AS alias]
    [WHERE <predicate>]
    [GROUP BY <key>, ...]
    [ORDER BY <output column> [ASC|DESC] [NULLS FIRST|LAST], ...]
    [LIMIT n] [OFFSET n]

    key        := column | BIN(column)
    aggregate  := COUNT(*) | COUNT(column) | SUM(value) | AVG(value)
                | MEDIAN(value) | QUANTILE_CONT(value, q)        -- q a literal in (0, 1)
    value      := column | CLIP(column, lo, hi)                  -- numeric literals
    predicate  := column <op> literal | column [NOT] IN (literal, ...)
                | column [NOT] BETWEEN literal AND literal | column IS [NOT] NULL
                | predicate AND predicate | predicate OR predicate | NOT predicate | (predicate)

``CLIP(column, lo, hi)`` asks for tighter clipping bounds than the declared ones for
that one aggregate (less noise, more bias; ``resolve`` checks they lie within the
declared bounds). ``BIN(column)`` is the histogram syntax: it groups a numeric column
by the bin edges the manifest declares for it (``bins``), and is released like any
other group key.

This module is product-agnostic: it checks the shape of the statement and produces
a frozen, typed ``ParsedQuery``. Binding names to the product and the scope is
``resolve``'s job. Everything outside the subset is refused with a message that
names the clause, what was found and what would be allowed instead.

Raises ``InvalidSql`` (not one parsable statement) or ``UnsupportedQuery``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from fractions import Fraction

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from sandbox.errors import InvalidSql, UnsupportedQuery

MAX_SQL_CHARS = 20_000
MAX_OUTPUT_COLUMNS = 64
MAX_AGGREGATES = 16
MAX_IN_LIST = 1_000
MAX_PREDICATE_NODES = 500

# sqlglot logs a warning when it falls back to an opaque ``Command`` (e.g. for LOAD,
# CALL); we refuse those anyway, so the warning is noise in the service log.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

LiteralValue = str | int | float | bool | dt.date

# The aggregates of the subset, what DuckDB (and sqlglot) call them, and a hint for
# everything else (refusals that teach).
_LEAKY_AGGREGATES = {
    "min": "MIN", "max": "MAX", "first": "FIRST", "last": "LAST", "any_value": "ANY_VALUE",
    "arbitrary": "ARBITRARY", "arg_min": "ARG_MIN", "arg_max": "ARG_MAX",
    "array_agg": "ARRAY_AGG/LIST", "list": "LIST", "string_agg": "STRING_AGG",
    "group_concat": "GROUP_CONCAT", "listagg": "LISTAGG", "mode": "MODE",
    "histogram": "HISTOGRAM", "quantile_disc": "QUANTILE_DISC", "quantile": "QUANTILE",
    "percentile_disc": "QUANTILE_DISC",
}  # fmt: skip

_ALLOWED_HINT = (
    "allowed aggregates are COUNT(*), COUNT(col), SUM(col), AVG(col), MEDIAN(col) and "
    "QUANTILE_CONT(col, q) with q a literal in (0, 1), the last four optionally over "
    "CLIP(col, lo, hi) (tighter clipping bounds); histograms are "
    "SELECT BIN(col), COUNT(*) ... GROUP BY BIN(col)"
)

_CLAUSE_NAMES = {
    "with_": "WITH (common table expressions)",
    "kind": "SELECT AS STRUCT/VALUE",
    "hint": "optimizer hints",
    "distinct": "DISTINCT",
    "into": "SELECT INTO",
    "operation_modifiers": "statement modifiers",
    "exclude": "EXCLUDE",
    "match": "MATCH_RECOGNIZE",
    "laterals": "LATERAL",
    "joins": "JOIN",
    "connect": "CONNECT BY",
    "pivots": "PIVOT/UNPIVOT",
    "prewhere": "PREWHERE",
    "having": "HAVING",
    "qualify": "QUALIFY",
    "windows": "WINDOW",
    "distribute": "DISTRIBUTE BY",
    "sort": "SORT BY",
    "cluster": "CLUSTER BY",
    "locks": "FOR UPDATE/SHARE",
    "sample": "TABLESAMPLE/USING SAMPLE",
    "settings": "SETTINGS",
    "format": "FORMAT",
    "options": "OPTIONS",
    "for_": "FOR",
}
_ALLOWED_SELECT_ARGS = {"expressions", "from_", "where", "group", "order", "limit", "offset"}
_SUBSET = (
    "the supported form is SELECT <group keys and aggregates> FROM <product> "
    "[WHERE ...] [GROUP BY ...] [ORDER BY ...] [LIMIT n]"
)


class AggFunc(StrEnum):
    COUNT = "count"
    SUM = "sum"
    AVG = "avg"
    QUANTILE = "quantile"


@dataclass(frozen=True)
class Ref:
    """A column reference as written (names lower-cased, as DuckDB matches them)."""

    name: str
    qualifier: str | None = None


@dataclass(frozen=True)
class GroupKey:
    """A group key: a column, or ``BIN(column)`` over the column's declared bins."""

    column: Ref
    binned: bool = False

    @property
    def label(self) -> str:
        return f"bin({self.column.name})" if self.binned else self.column.name


Number = int | float


@dataclass(frozen=True)
class Aggregate:
    """One aggregate of the SELECT list. ``column`` is None for ``COUNT(*)``;
    ``alpha`` is the quantile (1/2 for MEDIAN) as an exact fraction; ``clip`` the
    tighter clipping bounds of ``CLIP(col, lo, hi)``, if the query asks for them."""

    func: AggFunc
    column: Ref | None = None
    alpha: Fraction | None = None
    clip: tuple[Number, Number] | None = None

    @property
    def label(self) -> str:
        if self.func is AggFunc.COUNT:
            return f"count({self.column.name if self.column else '*'})"
        assert self.column is not None
        arg = self.column.name
        if self.clip is not None:
            arg = f"clip({arg}, {number_text(self.clip[0])}, {number_text(self.clip[1])})"
        if self.func is AggFunc.QUANTILE:
            assert self.alpha is not None
            if self.alpha == Fraction(1, 2):
                return f"median({arg})"
            return f"quantile_cont({arg}, {_fraction_text(self.alpha)})"
        return f"{self.func.value}({arg})"


def number_text(value: Number) -> str:
    """A number as SQL text: integers as digits, floats as their shortest repr."""
    return str(value) if isinstance(value, int) else repr(float(value))


@dataclass(frozen=True)
class OutputColumn:
    name: str
    expr: GroupKey | Aggregate


@dataclass(frozen=True)
class OrderKey:
    """ORDER BY item: the 0-based position of an output column."""

    position: int
    descending: bool = False
    nulls_first: bool = False


# --- WHERE predicates --------------------------------------------------------------


class CompareOp(StrEnum):
    EQ = "="
    NE = "<>"
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="

    def flipped(self) -> CompareOp:
        return {
            CompareOp.LT: CompareOp.GT,
            CompareOp.LE: CompareOp.GE,
            CompareOp.GT: CompareOp.LT,
            CompareOp.GE: CompareOp.LE,
        }.get(self, self)


@dataclass(frozen=True)
class Compare:
    column: Ref
    op: CompareOp
    value: LiteralValue


@dataclass(frozen=True)
class InList:
    column: Ref
    values: tuple[LiteralValue, ...]
    negated: bool = False


@dataclass(frozen=True)
class Between:
    column: Ref
    low: LiteralValue
    high: LiteralValue
    negated: bool = False


@dataclass(frozen=True)
class IsNull:
    column: Ref
    negated: bool = False


@dataclass(frozen=True)
class And:
    parts: tuple[Predicate, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Predicate, ...]


@dataclass(frozen=True)
class Not:
    part: Predicate


Predicate = Compare | InList | Between | IsNull | And | Or | Not


def predicate_columns(pred: Predicate) -> list[Ref]:
    """Return every column reference in ``pred``, in order of appearance."""
    if isinstance(pred, And | Or):
        return [ref for part in pred.parts for ref in predicate_columns(part)]
    if isinstance(pred, Not):
        return predicate_columns(pred.part)
    return [pred.column]


@dataclass(frozen=True)
class ParsedQuery:
    """A statement of the subset, before it is bound to a product."""

    table: str
    table_alias: str | None
    columns: tuple[OutputColumn, ...]
    group_by: tuple[GroupKey, ...]
    where: Predicate | None
    order_by: tuple[OrderKey, ...]
    limit: int | None
    offset: int
    normalized_sql: str

    @property
    def aggregates(self) -> tuple[Aggregate, ...]:
        return tuple(c.expr for c in self.columns if isinstance(c.expr, Aggregate))


# --- parsing ---------------------------------------------------------------------------


def parse(sql: str) -> ParsedQuery:
    """Parse ``sql`` into a ``ParsedQuery``.

    Raises ``InvalidSql`` if the text is empty, too long, unparsable or holds more than
    one statement, and ``UnsupportedQuery`` for valid SQL outside the subset.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidSql("the query is empty: send one SELECT statement", {"rule": "one_statement"})
    if len(sql) > MAX_SQL_CHARS:
        raise InvalidSql(
            f"the query is {len(sql)} characters long; at most {MAX_SQL_CHARS} are accepted",
            {"rule": "max_length", "limit": MAX_SQL_CHARS},
        )
    if "\x00" in sql:
        raise InvalidSql("the query contains a NUL character", {"rule": "characters"})
    try:
        trees = sqlglot.parse(sql, read="duckdb")
    except SqlglotError as exc:
        raise InvalidSql(f"the query is not valid SQL: {_first_line(exc)}") from None
    statements = [t for t in trees if t is not None and not isinstance(t, exp.Semicolon)]
    if not statements:
        raise InvalidSql("the query is empty: send one SELECT statement", {"rule": "one_statement"})
    if len(statements) > 1:
        raise InvalidSql(
            f"the query holds {len(statements)} statements; send exactly one SELECT",
            {"rule": "one_statement"},
        )
    tree = statements[0]
    if not isinstance(tree, exp.Select):
        kind = _statement_kind(tree)
        raise UnsupportedQuery(
            f"{kind} statements are not accepted: only one SELECT over the product is; {_SUBSET}",
            {"clause": "statement", "found": kind},
        )
    return _Parser(tree).parse()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _statement_kind(tree: exp.Expr) -> str:
    if isinstance(tree, exp.Command):
        return str(tree.this).upper()
    if isinstance(tree, exp.SetOperation):
        return type(tree).__name__.upper()
    name = type(tree).__name__
    return {"Column": "bare expression", "Alias": "bare expression"}.get(name, name.upper())


def _fraction_text(value: Fraction) -> str:
    return format(Decimal(value.numerator) / Decimal(value.denominator), "f")


class _Parser:
    def __init__(self, tree: exp.Select) -> None:
        self.tree = tree
        self.alias: str | None = None

    def parse(self) -> ParsedQuery:
        tree = self.tree
        for key, value in tree.args.items():
            if key not in _ALLOWED_SELECT_ARGS and value not in (None, [], False):
                name = _CLAUSE_NAMES.get(key, key.upper())
                raise UnsupportedQuery(
                    f"{name} is not supported; {_SUBSET}", {"clause": name, "rule": "subset"}
                )
        self._check_no_subqueries()
        table = self._from()
        columns = self._select_list()
        group_by = self._group_by(columns)
        where = self._where()
        order_by = self._order_by(columns)
        limit = self._count_clause("limit", "LIMIT")
        offset = self._count_clause("offset", "OFFSET")
        return ParsedQuery(
            table=table,
            table_alias=self.alias,
            columns=columns,
            group_by=group_by,
            where=where,
            order_by=order_by,
            limit=limit,
            offset=offset or 0,
            normalized_sql=_normalized(tree),
        )

    # FROM ---------------------------------------------------------------------------

    def _check_no_subqueries(self) -> None:
        for node in self.tree.walk():
            if node is self.tree:
                continue
            if isinstance(node, exp.Select | exp.Subquery | exp.SetOperation):
                raise UnsupportedQuery(
                    "subqueries are not supported: a query reads only the product table; "
                    + _SUBSET,
                    {"clause": "subquery", "rule": "subset"},
                )
            if isinstance(node, exp.Window):
                raise UnsupportedQuery(
                    "window functions (OVER ...) are not supported: only one DP aggregate "
                    "per output group is released; " + _ALLOWED_HINT,
                    {"clause": "window", "rule": "subset"},
                )

    def _from(self) -> str:
        source = self.tree.args.get("from_")
        if source is None:
            raise UnsupportedQuery(
                "FROM is missing: name the product table, e.g. SELECT COUNT(*) FROM <product>",
                {"clause": "FROM", "rule": "from_product"},
            )
        table = source.this
        if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
            found = table.sql(dialect="duckdb")[:80]
            raise UnsupportedQuery(
                f"FROM {found}: a query reads only the product table by its id "
                "(no table functions, files, URLs or subqueries)",
                {"clause": "FROM", "found": found, "rule": "from_product"},
            )
        for key, value in table.args.items():
            if key in ("this", "alias") or value in (None, [], False):
                continue
            if key in ("db", "catalog"):
                raise UnsupportedQuery(
                    f"FROM {table.sql(dialect='duckdb')}: name the product table without a "
                    "schema or database qualifier",
                    {"clause": "FROM", "rule": "from_product"},
                )
            name = {"joins": "JOIN", "laterals": "LATERAL", "pivots": "PIVOT"}.get(key, key.upper())
            raise UnsupportedQuery(
                f"FROM: {name} is not supported; a query reads only the product table",
                {"clause": "FROM", "found": name, "rule": "from_product"},
            )
        alias = table.args.get("alias")
        if alias is not None:
            if alias.columns:
                raise UnsupportedQuery(
                    "FROM: a table alias may not rename columns",
                    {"clause": "FROM", "rule": "from_product"},
                )
            self.alias = alias.name.lower()
        return str(table.this.name).lower()

    # SELECT -------------------------------------------------------------------------

    def _select_list(self) -> tuple[OutputColumn, ...]:
        items = self.tree.expressions
        if len(items) > MAX_OUTPUT_COLUMNS:
            raise UnsupportedQuery(
                f"SELECT lists {len(items)} columns; at most {MAX_OUTPUT_COLUMNS} are allowed",
                {"clause": "SELECT", "rule": "max_columns"},
            )
        out: list[OutputColumn] = []
        for item in items:
            name: str | None = None
            node = item
            if isinstance(item, exp.Alias):
                name = item.alias.lower()
                node = item.this
            expr = self._select_item(node)
            out.append(OutputColumn(name=name or expr.label, expr=expr))
        names = [c.name for c in out]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise UnsupportedQuery(
                f"SELECT: output column name(s) {', '.join(dupes)} appear more than once; "
                "give each column its own name with AS",
                {"clause": "SELECT", "rule": "distinct_names", "found": dupes},
            )
        aggregates = [c for c in out if isinstance(c.expr, Aggregate)]
        if not aggregates:
            raise UnsupportedQuery(
                "SELECT has no aggregate: only DP aggregates are released, never rows; "
                + _ALLOWED_HINT,
                {"clause": "SELECT", "rule": "needs_aggregate"},
            )
        if len(aggregates) > MAX_AGGREGATES:
            raise UnsupportedQuery(
                f"SELECT has {len(aggregates)} aggregates; at most {MAX_AGGREGATES} are allowed "
                "(the query's epsilon is split among them)",
                {"clause": "SELECT", "rule": "max_aggregates"},
            )
        return tuple(out)

    def _select_item(self, node: exp.Expr) -> GroupKey | Aggregate:
        if isinstance(node, exp.Star) or (
            isinstance(node, exp.Column) and isinstance(node.this, exp.Star)
        ):
            raise UnsupportedQuery(
                "SELECT *: rows are never released, only DP aggregates; " + _ALLOWED_HINT,
                {"clause": "SELECT", "found": "*", "rule": "no_raw_rows"},
            )
        if isinstance(node, exp.Column):
            return GroupKey(self._ref(node, "SELECT"))
        if _is_call(node, "bin"):
            return GroupKey(self._bin_arg(node, "SELECT"), binned=True)
        return self._aggregate(node)

    def _aggregate(self, node: exp.Expr) -> Aggregate:
        clause = "SELECT"
        text = node.sql(dialect="duckdb")[:80]
        if isinstance(node, exp.Filter):
            raise UnsupportedQuery(
                f"SELECT {text}: aggregate FILTER clauses are not supported; "
                "move the condition into WHERE",
                {"clause": clause, "found": text, "rule": "subset"},
            )
        if isinstance(node, exp.Count):
            arg = node.this
            if isinstance(arg, exp.Star):
                return Aggregate(AggFunc.COUNT)
            if isinstance(arg, exp.Column):
                return Aggregate(AggFunc.COUNT, self._ref(arg, clause))
            if _is_call(arg, "clip"):
                raise UnsupportedQuery(
                    f"SELECT {text}: COUNT counts rows, so clipping changes nothing; "
                    "CLIP(col, lo, hi) is an argument of SUM, AVG, MEDIAN and QUANTILE_CONT; "
                    "write COUNT(col)",
                    {"clause": clause, "found": text, "rule": "clip"},
                )
            if isinstance(arg, exp.Distinct):
                raise UnsupportedQuery(
                    f"SELECT {text}: COUNT(DISTINCT ...) is not supported; " + _ALLOWED_HINT,
                    {"clause": clause, "found": text, "rule": "aggregate"},
                )
            raise self._bare_column_arg(text)
        if isinstance(node, exp.Sum | exp.Avg | exp.Median):
            if node.args.get("expressions"):
                raise self._bare_column_arg(text)
            ref, clip = self._value_arg(node.this, text)
            if isinstance(node, exp.Sum):
                return Aggregate(AggFunc.SUM, ref, clip=clip)
            if isinstance(node, exp.Avg):
                return Aggregate(AggFunc.AVG, ref, clip=clip)
            return Aggregate(AggFunc.QUANTILE, ref, Fraction(1, 2), clip=clip)
        if isinstance(node, exp.PercentileCont) and not isinstance(node.parent, exp.WithinGroup):
            ref, clip = self._value_arg(node.this, text)
            return Aggregate(AggFunc.QUANTILE, ref, _quantile(node.expression, text), clip=clip)
        if _is_call(node, "clip"):
            raise UnsupportedQuery(
                f"SELECT {text}: CLIP(col, lo, hi) is only an argument of SUM, AVG, MEDIAN "
                "and QUANTILE_CONT (tighter clipping bounds for that aggregate), e.g. "
                "SUM(CLIP(income, 0, 100000)); values are never released",
                {"clause": clause, "found": text, "rule": "clip"},
            )
        if isinstance(node, exp.IgnoreNulls | exp.RespectNulls):
            node = node.this
        name = _function_name(node)
        if name in _LEAKY_AGGREGATES:
            raise UnsupportedQuery(
                f"SELECT {text}: {_LEAKY_AGGREGATES[name]} is not allowed because it can "
                "release individual values; " + _ALLOWED_HINT,
                {"clause": clause, "found": _LEAKY_AGGREGATES[name], "rule": "aggregate"},
            )
        if isinstance(node, exp.Literal | exp.Boolean | exp.Null | exp.Neg):
            raise UnsupportedQuery(
                f"SELECT {text}: constants are not output columns; " + _ALLOWED_HINT,
                {"clause": clause, "found": text, "rule": "aggregate"},
            )
        if isinstance(node, exp.AggFunc | exp.Func):
            raise UnsupportedQuery(
                f"SELECT {text}: function {name.upper() or text} is not supported; "
                + _ALLOWED_HINT,
                {"clause": clause, "found": name.upper() or text, "rule": "aggregate"},
            )
        raise UnsupportedQuery(
            f"SELECT {text}: expressions are not supported, only bare group keys and "
            "aggregates of one column; " + _ALLOWED_HINT,
            {"clause": clause, "found": text, "rule": "aggregate"},
        )

    def _value_arg(self, node: exp.Expr, text: str) -> tuple[Ref, tuple[Number, Number] | None]:
        """The argument of SUM/AVG/MEDIAN/QUANTILE_CONT: a bare column, or
        ``CLIP(column, lo, hi)`` with numeric literals lo < hi (tighter clipping bounds,
        checked against the declared ones by ``resolve``)."""
        if isinstance(node, exp.Column):
            return self._ref(node, "SELECT"), None
        if not _is_call(node, "clip"):
            raise self._bare_column_arg(text)
        args = node.expressions
        if len(args) != 3 or not isinstance(args[0], exp.Column):
            raise UnsupportedQuery(
                f"SELECT {text}: CLIP takes a bare column and two numeric literals, "
                "CLIP(col, lo, hi), e.g. SUM(CLIP(income, 0, 100000))",
                {"clause": "SELECT", "found": text, "rule": "clip"},
            )
        lo, hi = (_clip_bound(arg, text) for arg in args[1:])
        if not lo < hi:
            raise UnsupportedQuery(
                f"SELECT {text}: CLIP(col, lo, hi) needs lo < hi",
                {"clause": "SELECT", "found": text, "rule": "clip"},
            )
        return self._ref(args[0], "SELECT"), (lo, hi)

    @staticmethod
    def _bare_column_arg(text: str) -> UnsupportedQuery:
        return UnsupportedQuery(
            f"SELECT {text}: an aggregate takes one bare column (no expressions, casts or "
            "constants), e.g. SUM(income)",
            {"clause": "SELECT", "found": text, "rule": "aggregate_argument"},
        )

    def _bin_arg(self, node: exp.Expr, clause: str) -> Ref:
        args = node.expressions
        if len(args) != 1 or not isinstance(args[0], exp.Column):
            raise UnsupportedQuery(
                f"{clause} {node.sql(dialect='duckdb')}: BIN takes exactly one bare numeric "
                "column, e.g. BIN(age); it uses the bin edges the product declares for it",
                {"clause": clause, "rule": "bin"},
            )
        return self._ref(args[0], clause)

    def _ref(self, node: exp.Column, clause: str) -> Ref:
        if isinstance(node.this, exp.Star):
            raise UnsupportedQuery(
                f"{clause}: * is not a column; rows are never released",
                {"clause": clause, "rule": "no_raw_rows"},
            )
        if node.args.get("db") or node.args.get("catalog"):
            raise UnsupportedQuery(
                f"{clause} {node.sql(dialect='duckdb')}: qualify a column with the product "
                "id or its alias only",
                {"clause": clause, "rule": "column_reference"},
            )
        qualifier = node.table.lower() if node.table else None
        return Ref(name=node.name.lower(), qualifier=qualifier)

    # GROUP BY -----------------------------------------------------------------------

    def _group_by(self, columns: tuple[OutputColumn, ...]) -> tuple[GroupKey, ...]:
        group = self.tree.args.get("group")
        selected_keys = [c.expr for c in columns if isinstance(c.expr, GroupKey)]
        keys: list[GroupKey] = []
        if group is not None:
            for key, value in group.args.items():
                if key != "expressions" and value not in (None, [], False):
                    found = {"all": "GROUP BY ALL"}.get(key, key.upper())
                    raise UnsupportedQuery(
                        f"{found} is not supported: list the group keys, e.g. "
                        "GROUP BY district, BIN(age)",
                        {"clause": "GROUP BY", "found": found, "rule": "group_keys"},
                    )
            for item in group.expressions:
                keys.append(self._group_item(item, columns))
        unique: list[GroupKey] = []
        for key in keys:
            if _key_identity(key) not in {_key_identity(k) for k in unique}:
                unique.append(key)
        group_ids = {_key_identity(k) for k in unique}
        for key in selected_keys:
            if _key_identity(key) not in group_ids:
                raise UnsupportedQuery(
                    f"SELECT {key.label}: a column outside an aggregate must be a group key; "
                    f"add it to GROUP BY or aggregate it",
                    {"clause": "SELECT", "found": key.label, "rule": "group_keys"},
                )
        select_ids = {_key_identity(k) for k in selected_keys}
        for key in unique:
            if _key_identity(key) not in select_ids:
                raise UnsupportedQuery(
                    f"GROUP BY {key.label}: every group key must also be selected, so that "
                    "the released rows can be told apart; add it to SELECT",
                    {"clause": "GROUP BY", "found": key.label, "rule": "group_keys"},
                )
        return tuple(unique)

    def _group_item(self, item: exp.Expr, columns: tuple[OutputColumn, ...]) -> GroupKey:
        if isinstance(item, exp.Literal) and not item.is_string:
            position = _int_literal(item)
            if position is None or not 1 <= position <= len(columns):
                raise UnsupportedQuery(
                    f"GROUP BY {item.sql()}: a position must be between 1 and {len(columns)}",
                    {"clause": "GROUP BY", "rule": "group_keys"},
                )
            target = columns[position - 1].expr
            if not isinstance(target, GroupKey):
                raise UnsupportedQuery(
                    f"GROUP BY {position}: column {position} is an aggregate, not a key",
                    {"clause": "GROUP BY", "rule": "group_keys"},
                )
            return target
        if isinstance(item, exp.Column) and not item.table:
            for col in columns:
                if col.name == item.name.lower() and isinstance(col.expr, GroupKey):
                    return col.expr
        if isinstance(item, exp.Column):
            return GroupKey(self._ref(item, "GROUP BY"))
        if _is_call(item, "bin"):
            return GroupKey(self._bin_arg(item, "GROUP BY"), binned=True)
        text = item.sql(dialect="duckdb")[:80]
        raise UnsupportedQuery(
            f"GROUP BY {text}: group keys are columns or BIN(column) (declared bins); "
            "ROLLUP, CUBE, GROUPING SETS and expressions are not supported",
            {"clause": "GROUP BY", "found": text, "rule": "group_keys"},
        )

    # WHERE --------------------------------------------------------------------------

    def _where(self) -> Predicate | None:
        where = self.tree.args.get("where")
        if where is None:
            return None
        count = sum(1 for _ in where.this.walk())
        if count > MAX_PREDICATE_NODES:
            raise UnsupportedQuery(
                f"WHERE has {count} syntax nodes; at most {MAX_PREDICATE_NODES} are allowed",
                {"clause": "WHERE", "rule": "max_size"},
            )
        return self._predicate(where.this)

    def _predicate(self, node: exp.Expr) -> Predicate:
        text = node.sql(dialect="duckdb")[:80]
        if isinstance(node, exp.Paren):
            return self._predicate(node.this)
        if isinstance(node, exp.And | exp.Or):
            conjunction = isinstance(node, exp.And)
            same = And if conjunction else Or
            parts: list[Predicate] = []
            for side in (node.this, node.expression):
                sub = self._predicate(side)
                if isinstance(sub, same):
                    parts.extend(sub.parts)
                else:
                    parts.append(sub)
            return And(tuple(parts)) if conjunction else Or(tuple(parts))
        if isinstance(node, exp.Not):
            inner = node.this
            if isinstance(inner, exp.Paren):
                inner = inner.this
            if isinstance(inner, exp.Is):
                return IsNull(self._is_null_column(inner), negated=True)
            if isinstance(inner, exp.In):
                pred = self._predicate(inner)
                assert isinstance(pred, InList)
                return InList(pred.column, pred.values, negated=True)
            if isinstance(inner, exp.Between):
                pred = self._predicate(inner)
                assert isinstance(pred, Between)
                return Between(pred.column, pred.low, pred.high, negated=True)
            return Not(self._predicate(inner))
        if isinstance(node, exp.Is):
            return IsNull(self._is_null_column(node))
        ops = {
            exp.EQ: CompareOp.EQ,
            exp.NEQ: CompareOp.NE,
            exp.LT: CompareOp.LT,
            exp.LTE: CompareOp.LE,
            exp.GT: CompareOp.GT,
            exp.GTE: CompareOp.GE,
        }
        for cls, op in ops.items():
            if type(node) is cls:
                left, right = node.this, node.expression
                if isinstance(left, exp.Column) and not isinstance(right, exp.Column):
                    return Compare(self._ref(left, "WHERE"), op, self._literal(right, text))
                if isinstance(right, exp.Column) and not isinstance(left, exp.Column):
                    return Compare(
                        self._ref(right, "WHERE"), op.flipped(), self._literal(left, text)
                    )
                raise UnsupportedQuery(
                    f"WHERE {text}: a comparison is between one column and one literal, "
                    "e.g. age >= 30",
                    {"clause": "WHERE", "found": text, "rule": "predicate"},
                )
        if isinstance(node, exp.In):
            if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
                raise UnsupportedQuery(
                    f"WHERE {text}: IN takes a list of literals, not a subquery",
                    {"clause": "WHERE", "found": text, "rule": "predicate"},
                )
            if not isinstance(node.this, exp.Column):
                raise self._bad_predicate(text)
            values = node.expressions
            if not values or len(values) > MAX_IN_LIST:
                raise UnsupportedQuery(
                    f"WHERE {text}: IN takes 1 to {MAX_IN_LIST} literals",
                    {"clause": "WHERE", "found": text, "rule": "predicate"},
                )
            return InList(
                self._ref(node.this, "WHERE"), tuple(self._literal(v, text) for v in values)
            )
        if isinstance(node, exp.Between):
            if not isinstance(node.this, exp.Column) or node.args.get("symmetric"):
                raise self._bad_predicate(text)
            return Between(
                self._ref(node.this, "WHERE"),
                self._literal(node.args["low"], text),
                self._literal(node.args["high"], text),
            )
        if isinstance(node, exp.Column):
            raise UnsupportedQuery(
                f"WHERE {text}: compare the column to a literal, e.g. {text} = TRUE",
                {"clause": "WHERE", "found": text, "rule": "predicate"},
            )
        raise self._bad_predicate(text)

    @staticmethod
    def _bad_predicate(text: str) -> UnsupportedQuery:
        return UnsupportedQuery(
            f"WHERE {text}: not a supported predicate; use comparisons of a column with a "
            "literal (=, <>, <, <=, >, >=), IN (literals), BETWEEN, IS [NOT] NULL, "
            "combined with AND, OR, NOT",
            {"clause": "WHERE", "found": text, "rule": "predicate"},
        )

    def _is_null_column(self, node: exp.Is) -> Ref:
        text = node.sql(dialect="duckdb")[:80]
        if not isinstance(node.expression, exp.Null) or not isinstance(node.this, exp.Column):
            raise UnsupportedQuery(
                f"WHERE {text}: IS is only supported as column IS [NOT] NULL",
                {"clause": "WHERE", "found": text, "rule": "predicate"},
            )
        return self._ref(node.this, "WHERE")

    def _literal(self, node: exp.Expr, context: str) -> LiteralValue:
        if isinstance(node, exp.Paren):
            return self._literal(node.this, context)
        if isinstance(node, exp.Literal):
            if node.is_string:
                return str(node.this)
            return _number(str(node.this), context)
        negative = isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal)
        if negative and not node.this.is_string:
            return -_number(str(node.this.this), context)
        if isinstance(node, exp.Boolean):
            return bool(node.this)
        if isinstance(node, exp.Null):
            raise UnsupportedQuery(
                f"WHERE {context}: comparing with NULL is never true; use IS NULL or IS NOT NULL",
                {"clause": "WHERE", "found": context, "rule": "predicate"},
            )
        if (
            isinstance(node, exp.Cast)
            and isinstance(node.this, exp.Literal)
            and node.this.is_string
            and node.to.this == exp.DataType.Type.DATE
        ):
            try:
                return dt.date.fromisoformat(str(node.this.this))
            except ValueError:
                raise UnsupportedQuery(
                    f"WHERE {context}: {node.this.this!r} is not an ISO date (YYYY-MM-DD)",
                    {"clause": "WHERE", "found": context, "rule": "literal"},
                ) from None
        text = node.sql(dialect="duckdb")[:80]
        raise UnsupportedQuery(
            f"WHERE {context}: {text} is not a literal; compare columns with literal numbers, "
            "strings, TRUE/FALSE or DATE 'YYYY-MM-DD' (no functions, casts, parameters)",
            {"clause": "WHERE", "found": text, "rule": "literal"},
        )

    # ORDER BY / LIMIT -----------------------------------------------------------------

    def _order_by(self, columns: tuple[OutputColumn, ...]) -> tuple[OrderKey, ...]:
        order = self.tree.args.get("order")
        if order is None:
            return ()
        keys: list[OrderKey] = []
        for item in order.expressions:
            if not isinstance(item, exp.Ordered) or item.args.get("with_fill"):
                raise UnsupportedQuery(
                    "ORDER BY: only output columns with ASC/DESC and NULLS FIRST/LAST",
                    {"clause": "ORDER BY", "rule": "order_by"},
                )
            desc = bool(item.args.get("desc"))
            # DuckDB's default is NULLS LAST in both directions; sqlglot records an explicit
            # NULLS FIRST as nulls_first=True.
            nulls_first = bool(item.args.get("nulls_first"))
            keys.append(OrderKey(self._order_position(item.this, columns), desc, nulls_first))
        return tuple(keys)

    def _order_position(self, node: exp.Expr, columns: tuple[OutputColumn, ...]) -> int:
        text = node.sql(dialect="duckdb")[:80]
        if isinstance(node, exp.Literal) and not node.is_string:
            position = _int_literal(node)
            if position is not None and 1 <= position <= len(columns):
                return position - 1
        elif isinstance(node, exp.Column) and not node.table:
            for i, col in enumerate(columns):
                if col.name == node.name.lower():
                    return i
        try:
            probe = self._select_item(node)
        except UnsupportedQuery:
            probe = None
        if probe is not None:
            for i, col in enumerate(columns):
                if _same_expr(col.expr, probe):
                    return i
        names = ", ".join(c.name for c in columns)
        raise UnsupportedQuery(
            f"ORDER BY {text}: ordering is applied to the released rows, so it may only name "
            f"an output column ({names}) or its position",
            {"clause": "ORDER BY", "found": text, "rule": "order_by"},
        )

    def _count_clause(self, key: str, name: str) -> int | None:
        node = self.tree.args.get(key)
        if node is None:
            return None
        value = node.args.get("expression")
        options = node.args.get("limit_options")
        if options is not None and (options.args.get("percent") or options.args.get("with_ties")):
            value = None
        if node.args.get("expressions"):
            value = None
        number = _int_literal(value) if isinstance(value, exp.Literal) else None
        if number is None or number < 0:
            found = node.sql(dialect="duckdb")[:80]
            raise UnsupportedQuery(
                f"{found}: {name} takes a non-negative integer literal",
                {"clause": name, "found": found, "rule": "limit"},
            )
        return number


def _is_call(node: exp.Expr, name: str) -> bool:
    return isinstance(node, exp.Anonymous) and str(node.this).lower() == name


def _function_name(node: exp.Expr) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return ""


def _int_literal(node: exp.Expr | None) -> int | None:
    if not isinstance(node, exp.Literal) or node.is_string:
        return None
    text = str(node.this)
    if not text.isdigit() or len(text) > 18:
        return None
    return int(text)


def _number(text: str, context: str) -> int | float:
    if len(text) > 400:  # also keeps int() below Python's digit limit
        raise UnsupportedQuery(
            f"WHERE {context}: a numeric literal of {len(text)} characters is too long",
            {"clause": "WHERE", "rule": "literal"},
        )
    if text.isdigit():
        return int(text)
    try:
        value = float(Decimal(text))
    except (InvalidOperation, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise UnsupportedQuery(
            f"WHERE {context}: {text} is not a finite number",
            {"clause": "WHERE", "found": text, "rule": "literal"},
        )
    return value


def _clip_bound(node: exp.Expr, text: str) -> Number:
    """A numeric literal of CLIP (optionally negative): int if written as digits."""
    while isinstance(node, exp.Paren):
        node = node.this
    sign = 1
    if isinstance(node, exp.Neg):
        sign, node = -1, node.this
    if not isinstance(node, exp.Literal) or node.is_string:
        raise UnsupportedQuery(
            f"SELECT {text}: the bounds of CLIP(col, lo, hi) are numeric literals",
            {"clause": "SELECT", "found": text, "rule": "clip"},
        )
    digits = str(node.this)
    if len(digits) > 400:  # keeps int() below Python's digit limit
        raise UnsupportedQuery(
            f"SELECT {text}: a numeric literal of {len(digits)} characters is too long",
            {"clause": "SELECT", "rule": "clip"},
        )
    if digits.isdigit():
        return sign * int(digits)
    try:
        value = float(Decimal(digits))
    except (InvalidOperation, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise UnsupportedQuery(
            f"SELECT {text}: {digits} is not a finite number",
            {"clause": "SELECT", "found": digits, "rule": "clip"},
        )
    return sign * value


def _quantile(node: exp.Expr | None, text: str) -> Fraction:
    bad = UnsupportedQuery(
        f"SELECT {text}: the quantile must be one numeric literal strictly between 0 and 1 "
        "with at most 4 decimals, e.g. QUANTILE_CONT(income, 0.9)",
        {"clause": "SELECT", "found": text, "rule": "quantile"},
    )
    if not isinstance(node, exp.Literal) or node.is_string:
        raise bad
    try:
        literal = Decimal(str(node.this))
    except (InvalidOperation, ValueError):
        raise bad from None
    # Cheap checks first: Fraction(Decimal("1e-99999999")) would build a
    # 100-million-digit integer (minutes of CPU). A multiple of 1/10,000 written with
    # d digits has an exponent of at least -(d + 4).
    if not literal.is_finite() or not 0 < literal < 1:
        raise bad
    _sign, digits, exponent = literal.as_tuple()
    if not isinstance(exponent, int) or exponent < -(len(digits) + 4):
        raise bad
    value = Fraction(literal)
    if not 0 < value < 1 or value.denominator > 10_000 or 10_000 % value.denominator:
        raise bad
    return value


def _key_identity(key: GroupKey) -> tuple[str, bool]:
    return (key.column.name, key.binned)


def _same_expr(a: GroupKey | Aggregate, b: GroupKey | Aggregate) -> bool:
    if isinstance(a, GroupKey) and isinstance(b, GroupKey):
        return _key_identity(a) == _key_identity(b)
    if isinstance(a, Aggregate) and isinstance(b, Aggregate):
        return a.label == b.label
    return False


def _normalized(tree: exp.Select) -> str:
    """The canonical text of the statement: identifiers folded as DuckDB matches them,
    keywords upper-case, comments and formatting dropped (the identical-query key)."""
    canonical = normalize_identifiers(tree.copy(), dialect="duckdb")
    return str(canonical.sql(dialect="duckdb", comments=False, identify=True))
