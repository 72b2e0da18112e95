"""SQL fragments of verification checks, shared by point lookups and answer indexes.

Only identifiers the manifest validated are quoted into SQL text; every value (key,
parameter) is a bound statement parameter.
"""

from __future__ import annotations

from typing import Any

from products.loader import DUCKDB_TYPES
from products.manifest import DataProduct
from products.verification import Check, Op, Param, VerificationProduct


def quote(name: str) -> str:
    """Return ``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


class Statement:
    """The parameters of a statement being built; ``bind`` returns the numbered
    placeholder (``$n``), so SQL fragments may be assembled in any order."""

    def __init__(self) -> None:
        self.params: list[Any] = []

    def bind(self, value: Any, sql_type: str) -> str:
        self.params.append(value)
        return f"CAST(${len(self.params)} AS {sql_type})"


def check_sql(check: Check, cell: str, value: str | tuple[str, str]) -> str:
    """Return a boolean SQL expression, never NULL, for ``check`` on ``cell``.

    ``value`` is the SQL of the parameter (a pair for ``between``).
    """
    if check.op is Op.EXISTS:
        return f"({cell} IS NOT NULL)"
    if check.op is Op.BETWEEN:
        assert isinstance(value, tuple)
        return f"coalesce({cell} BETWEEN {value[0]} AND {value[1]}, false)"
    assert isinstance(value, str)
    if check.op is Op.IN:
        return f"coalesce(list_contains({value}, {cell}), false)"
    sql_op = {Op.EQ: "=", Op.NE: "<>", Op.LT: "<", Op.LE: "<=", Op.GT: ">", Op.GE: ">="}
    return f"coalesce({cell} {sql_op[check.op]} {value}, false)"


def column_types(vp: VerificationProduct, product: DataProduct) -> dict[str, str]:
    """Return the DuckDB type of every key and checked column of ``vp``."""
    out = {}
    for name in (*vp.key, *(c.column for c in vp.checks)):
        col = product.column(name)
        if col is None:
            raise ValueError(f"{vp.id!r} does not fit product {product.id!r}: no {name!r}")
        out[name] = DUCKDB_TYPES[col.type]
    return out


def param_sql(st: Statement, check: Check, value: Param | None, t: str) -> str | tuple[str, str]:
    """Bind ``value`` (a pair for ``between``) as type ``t``; return its SQL."""
    if check.op is Op.EXISTS:
        return ""
    if check.op is Op.BETWEEN:
        assert isinstance(value, tuple)
        return st.bind(value[0], t), st.bind(value[1], t)
    if check.op is Op.IN:
        assert isinstance(value, tuple)
        return st.bind(list(value), f"{t}[]")
    return st.bind(value, t)
