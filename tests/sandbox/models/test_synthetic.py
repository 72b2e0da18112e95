"""DP synthetic data (DESIGN §11.1) on the real PUMS rows: fidelity that follows epsilon,
no copied records, the budget, reuse, previews and refusals."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sandbox.engine.synthesis import available
from sandbox.runtime import Runtime
from tests.sandbox.conftest import Caller
from tests.sandbox.models.conftest import pums_rows

pytestmark = pytest.mark.skipif(not available(), reason="opendp[mbi] is not installed")

AGE_EDGES = [0, 20, 30, 40, 50, 60, 70, 100]
CODED = ["age", "sex", "educ", "married"]


def _age_bin(age: int) -> int:
    for i in range(len(AGE_EDGES) - 2, -1, -1):
        if age >= AGE_EDGES[i]:
            return i
    return 0


def _coded(row: dict[str, Any]) -> tuple[Any, ...]:
    return (_age_bin(int(row["age"])), row["sex"], row["educ"], row["married"])


def _tv(a: Counter[Any], b: Counter[Any]) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a[k] / na - b[k] / nb) for k in set(a) | set(b))


def marginal_errors(real: list[tuple[Any, ...]], syn: list[tuple[Any, ...]]) -> tuple[float, float]:
    """(worst 1-way, mean 2-way) total-variation distance."""
    d = len(real[0])
    one = max(_tv(Counter(r[i] for r in real), Counter(s[i] for s in syn)) for i in range(d))
    two = [
        _tv(Counter((r[i], r[j]) for r in real), Counter((s[i], s[j]) for s in syn))
        for i, j in itertools.combinations(range(d), 2)
    ]
    return one, sum(two) / len(two)


def synth(enterprise: Caller, scope: str, epsilon: float, **kw: Any) -> Any:
    body = {"scope": scope, "epsilon": epsilon, "columns": [*CODED, "income"], "rows": 1000, **kw}
    return enterprise.post("/v1/products/pums/synthetic", body)


def test_fidelity_follows_epsilon_and_no_record_is_copied(
    pums: str, enterprise: Caller, shared_dir: Path, rt: Runtime
) -> None:
    real_rows = pums_rows(shared_dir)
    real = [_coded(r) for r in real_rows]
    real_full = {tuple(r[c] for c in [*CODED, "income"]) for r in real_rows}
    errors = {}
    for epsilon in (10, 1, 0.1):
        resp = synth(enterprise, pums, epsilon)
        assert resp.status_code == 200, resp.get_json()
        body = resp.get_json()
        assert body["columns"] == [*CODED, "income"] and len(body["rows"]) == 1000
        assert body["epsilon_spent"] == epsilon
        rows = [dict(zip(body["columns"], r, strict=True)) for r in body["rows"]]
        errors[epsilon] = marginal_errors(real, [_coded(r) for r in rows])
        # No synthetic row copies a real record: income is drawn uniformly inside its
        # bin, so the chance that a row equals a real one on every column is zero.
        assert not real_full & {tuple(r[c] for c in [*CODED, "income"]) for r in rows}
        assert all(0 <= r["income"] <= 500000 and 0 <= r["age"] <= 100 for r in rows)
    print(errors)
    assert errors[10][0] <= 0.05 and errors[10][1] <= 0.10
    assert errors[1][0] <= 0.10 and errors[1][1] <= 0.15
    # the noise is real: at 0.1 the two-way marginals are clearly worse
    assert errors[0.1][1] >= 1.5 * errors[10][1]
    assert rt.scopes.get(pums).budget.spent == pytest.approx(11.1)
