"""The function names a scope must grant for a query (fixtures/functions_used.tsv):
histograms are ``histogram``, never ``count``, so a count-only scope cannot read them
and a histogram-only scope can."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from products.manifest import DataProduct
from sandbox.engine import prepare
from tests.sandbox.engine.conftest import PUMS_ALLOWED

CASES = [
    (frozenset(names.split(",")), sql)
    for names, sql in (
        line.split("\t", 1)
        for line in (Path(__file__).parent / "fixtures" / "functions_used.tsv")
        .read_text(encoding="utf-8")
        .splitlines()
        if line.strip() and not line.startswith("#")
    )
]


@pytest.mark.parametrize(("functions", "sql"), CASES, ids=[sql for _, sql in CASES])
def test_functions_used(functions: frozenset[str], sql: str, pums_product: DataProduct) -> None:
    q = prepare(pums_product, sql, allowed_columns=PUMS_ALLOWED, delta=0, epsilon=Decimal(1))
    assert q.functions_used == functions


def test_per_output_function(pums_product: DataProduct) -> None:
    q = prepare(
        pums_product,
        "SELECT BIN(age) AS b, COUNT(*) AS n, AVG(income) AS a FROM pums GROUP BY b",
        allowed_columns=PUMS_ALLOWED,
        delta=0,
        epsilon=Decimal(1),
    )
    assert [(o.name, o.function) for o in q.plan.outputs] == [
        ("b", "histogram"),
        ("n", "histogram"),
        ("a", "avg"),
    ]
