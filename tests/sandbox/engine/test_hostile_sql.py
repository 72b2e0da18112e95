"""The hostile-SQL corpus (attacks/hostile_sql.tsv): every case is refused with the
right code before anything runs, or — for the few marked ``ok`` — accepted with the
hostile text neutralised; and the isolated engine still answers afterwards."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from products.errors import DomainError
from products.manifest import DataProduct
from sandbox.engine import EngineLimits, WorkerPool, execute, prepare
from tests.sandbox.engine.conftest import PUMS_ALLOWED

CORPUS = Path(__file__).parent / "attacks" / "hostile_sql.tsv"


@dataclass(frozen=True)
class Case:
    line: int
    code: str
    sql: str


def load_cases() -> list[Case]:
    cases = []
    for number, raw in enumerate(CORPUS.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        code, sql = raw.split("\t", 1)
        cases.append(Case(number, code, sql.replace("\\n", "\n")))
    return cases


CASES = load_cases()


def test_corpus_is_large_and_covers_every_code() -> None:
    assert len(CASES) >= 40
    codes = {c.code for c in CASES}
    assert codes >= {"invalid_sql", "unsupported_query", "unknown_column", "column_not_allowed"}


@pytest.mark.parametrize("case", CASES, ids=[f"line{c.line}" for c in CASES])
def test_hostile_sql(case: Case, pums_product: DataProduct) -> None:
    if case.code == "ok":
        q = prepare(
            pums_product, case.sql, allowed_columns=PUMS_ALLOWED, delta=0, epsilon=Decimal(1)
        )
        for word in ("COPY", "ATTACH", "/tmp", "--", "/*"):
            assert word not in q.rewritten_sql
            assert word not in q.normalized_sql
        return
    with pytest.raises(DomainError) as info:
        prepare(pums_product, case.sql, allowed_columns=PUMS_ALLOWED, delta=0, epsilon=Decimal(1))
    err = info.value
    assert err.code == case.code, err.message
    # Refusals teach: a sentence, not a bare code.
    assert len(err.message) > 25


def test_engine_still_answers_after_the_corpus(
    pums_product: DataProduct, pums_db: Path, pool: WorkerPool, limits: EngineLimits
) -> None:
    for case in CASES:  # none of them may reach the engine
        with contextlib.suppress(DomainError):
            prepare(
                pums_product, case.sql, allowed_columns=PUMS_ALLOWED, delta=0, epsilon=Decimal(1)
            )
    q = prepare(
        pums_product,
        "SELECT sex, COUNT(*) AS n FROM pums GROUP BY sex ORDER BY sex",
        allowed_columns=PUMS_ALLOWED,
        delta=0,
        epsilon=Decimal(1),
    )
    answer = execute(q, pums_db, limits, runner=pool)
    assert [row[0] for row in answer.rows] == [0, 1]
    assert all(isinstance(row[1], int) for row in answer.rows)
