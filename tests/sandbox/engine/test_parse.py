"""The accepted SQL subset, parsed into typed queries (product-agnostic)."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import pytest

from products.errors import DomainError
from sandbox.engine.parse import (
    AggFunc,
    Aggregate,
    And,
    Between,
    Compare,
    CompareOp,
    GroupKey,
    InList,
    IsNull,
    Not,
    Or,
    OrderKey,
    Ref,
    parse,
)


def test_full_form() -> None:
    q = parse(
        "SELECT district AS d, BIN(age), COUNT(*) AS n, AVG(income), "
        "QUANTILE_CONT(income, 0.9), MEDIAN(age) FROM pums AS p "
        "WHERE p.age >= 18 AND (sex = 1 OR married NOT IN (0)) AND 5 < age "
        "AND educ BETWEEN 1 AND 9 AND race IS NOT NULL "
        "GROUP BY d, BIN(age) ORDER BY n DESC, 1 NULLS FIRST LIMIT 3 OFFSET 1"
    )
    assert q.table == "pums" and q.table_alias == "p"
    assert [c.name for c in q.columns] == [
        "d", "bin(age)", "n", "avg(income)", "quantile_cont(income, 0.9)", "median(age)",
    ]  # fmt: skip
    assert q.group_by == (GroupKey(Ref("district")), GroupKey(Ref("age"), binned=True))
    assert q.aggregates == (
        Aggregate(AggFunc.COUNT),
        Aggregate(AggFunc.AVG, Ref("income")),
        Aggregate(AggFunc.QUANTILE, Ref("income"), Fraction(9, 10)),
        Aggregate(AggFunc.QUANTILE, Ref("age"), Fraction(1, 2)),
    )
    assert q.where == And(
        (
            Compare(Ref("age", "p"), CompareOp.GE, 18),
            Or((Compare(Ref("sex"), CompareOp.EQ, 1), InList(Ref("married"), (0,), True))),
            Compare(Ref("age"), CompareOp.GT, 5),
            Between(Ref("educ"), 1, 9),
            IsNull(Ref("race"), negated=True),
        )
    )
    assert q.order_by == (OrderKey(2, descending=True), OrderKey(0, nulls_first=True))
    assert (q.limit, q.offset) == (3, 1)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("x = 'it''s'", Compare(Ref("x"), CompareOp.EQ, "it's")),
        ("x = -2.5", Compare(Ref("x"), CompareOp.EQ, -2.5)),
        ("x <> TRUE", Compare(Ref("x"), CompareOp.NE, True)),
        ("x = DATE '2024-02-29'", Compare(Ref("x"), CompareOp.EQ, dt.date(2024, 2, 29))),
        ("x != 3", Compare(Ref("x"), CompareOp.NE, 3)),
        ("NOT (x = 1 OR y = 2)", Not(Or((Compare(Ref("x"), CompareOp.EQ, 1),
                                         Compare(Ref("y"), CompareOp.EQ, 2))))),
        ("x NOT BETWEEN 1 AND 2", Between(Ref("x"), 1, 2, negated=True)),
        ("x IS NULL", IsNull(Ref("x"))),
        ("3 >= x", Compare(Ref("x"), CompareOp.LE, 3)),
    ],
)  # fmt: skip
def test_predicates(sql: str, expected: object) -> None:
    assert parse(f"SELECT COUNT(*) FROM t WHERE {sql}").where == expected


def test_order_by_names_positions_and_expressions() -> None:
    q = parse("SELECT g, SUM(x) FROM t GROUP BY g ORDER BY SUM(x) DESC, g")
    assert q.order_by == (OrderKey(1, descending=True), OrderKey(0))
    q = parse("SELECT BIN(x) AS b, COUNT(*) FROM t GROUP BY 1 ORDER BY BIN(x)")
    assert q.group_by == (GroupKey(Ref("x"), binned=True),) and q.order_by == (OrderKey(0),)


@pytest.mark.parametrize(
    ("sql", "code", "words"),
    [
        ("SELECT COUNT(*) FROM t; SELECT 1", "invalid_sql", ["2 statements"]),
        ("SELECT COUNT(* FROM t", "invalid_sql", ["not valid SQL"]),
        ("SELECT * FROM t", "unsupported_query", ["SELECT *", "never released"]),
        ("SELECT MAX(x) FROM t", "unsupported_query", ["MAX", "individual", "QUANTILE_CONT"]),
        ("SELECT COUNT(*) FROM t HAVING COUNT(*) > 1", "unsupported_query", ["HAVING"]),
        ("SELECT g FROM t GROUP BY g", "unsupported_query", ["no aggregate"]),
        ("SELECT COUNT(*) FROM t GROUP BY g", "unsupported_query", ["GROUP BY g", "SELECT"]),
        ("SELECT g, COUNT(*) FROM t", "unsupported_query", ["GROUP BY"]),
        ("SELECT COUNT(*) AS a, SUM(x) AS a FROM t", "unsupported_query", ["AS"]),
        ("SELECT COUNT(*) FROM t ORDER BY x", "unsupported_query", ["ORDER BY x", "output"]),
        ("SELECT QUANTILE_CONT(x, 1.5) FROM t", "unsupported_query", ["between 0 and 1"]),
        ("SELECT COUNT(*) FROM t WHERE x = y", "unsupported_query", ["one literal"]),
        ("SELECT COUNT(*) FROM t WHERE x = NULL", "unsupported_query", ["IS NULL"]),
        ("SELECT COUNT(*) FROM t WHERE x = DATE '2024-13-01'", "unsupported_query", ["ISO date"]),
        ("SELECT BIN(x, 3), COUNT(*) FROM t GROUP BY 1", "unsupported_query", ["BIN takes"]),
        ("SELECT COUNT(*) FROM t LIMIT 1.5", "unsupported_query", ["LIMIT"]),
    ],
)  # fmt: skip
def test_refusals_name_the_clause_and_the_way_out(sql: str, code: str, words: list[str]) -> None:
    with pytest.raises(DomainError) as info:
        parse(sql)
    assert info.value.code == code
    for word in words:
        assert word in info.value.message, info.value.message


def test_too_long_and_nul() -> None:
    with pytest.raises(DomainError) as info:
        parse("SELECT COUNT(*) FROM t WHERE " + " OR ".join(["x = 1"] * 5000))
    assert info.value.code == "invalid_sql"
    with pytest.raises(DomainError):
        parse("SELECT COUNT(*) FROM t WHERE x = 'a\x00'")


def test_normalised_sql_is_canonical() -> None:
    a = parse("select  Sum(X) AS total from T where x>1 -- c").normalized_sql
    b = parse('SELECT SUM("x") AS "TOTAL" FROM "t" /* c */ WHERE "X" > 1').normalized_sql
    assert a == b == 'SELECT SUM("x") AS "total" FROM "t" WHERE "x" > 1'
    assert parse("SELECT SUM(x) AS s FROM t").normalized_sql != a
