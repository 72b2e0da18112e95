"""DP model training (DESIGN §11.2) on the real PUMS rows: accuracy that follows
epsilon, what one extreme unit can change, the budget, reuse, previews, refusals."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audit.entry import result_hash
from audit.receipts import check_receipt
from products.manifest import parse_manifest
from sandbox.engine.isolation import Deadline, EngineLimits
from sandbox.models import linear, scorecard
from sandbox.models.encoding import encode
from sandbox.models.linear import LinearPlan
from sandbox.models.scorecard import Scale, ScorecardPlan
from sandbox.runtime import Runtime
from tests.sandbox.conftest import Caller, error_code
from tests.sandbox.models.conftest import PUMS_MANIFEST, grant, pums_rows

LINEAR = {"kind": "linear_regression", "target": "income", "features": ["age", "educ"]}
CARD = {
    "kind": "scorecard",
    "target": {"column": "married", "equals": 1},
    "features": ["age", "educ", "sex", "race"],
}


def train(enterprise: Caller, scope: str, spec: dict[str, Any], epsilon: float, **kw: Any) -> Any:
    body = {"scope": scope, "product": "pums", "epsilon": epsilon, "spec": spec, **kw}
    return enterprise.post("/v1/models/train", body)


def ols(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """Least squares on the clipped data: (intercept, age, educ)."""
    x = np.asarray([[1.0, min(max(r["age"], 0), 100), r["educ"]] for r in rows])
    y = np.asarray([min(max(r["income"], 0.0), 500000.0) for r in rows])
    beta: np.ndarray = np.linalg.lstsq(x, y, rcond=None)[0]
    return beta


def _coefs(body: dict[str, Any]) -> np.ndarray:
    model = body["model"]
    return np.asarray([model["intercept"], *(f["coefficient"] for f in model["features"])])


def test_linear_regression_is_accurate_at_large_epsilon_and_degrades(
    pums: str, enterprise: Caller, shared_dir: Path
) -> None:
    truth = ols(pums_rows(shared_dir))
    errors = {}
    for epsilon in (100, 1, 0.05):
        resp = train(enterprise, pums, LINEAR, epsilon)
        assert resp.status_code == 200, resp.get_json()
        body = resp.get_json()
        assert body["model"]["kind"] == "linear" and body["epsilon_spent"] == epsilon
        # relative error of the coefficients (scaled by each feature's range)
        scale = np.asarray([500000.0, 500000.0 / 100, 500000.0 / 15])
        errors[epsilon] = float(np.max(np.abs(_coefs(body) - truth) / scale))
        assert body["metrics"]["coefficients"]["age"]["ci95"] > 0
    # At epsilon 100 within 1% of the outcome's range per unit of each feature's range
    # (about 250 yuan per year of age); the fit degrades as epsilon falls.
    assert errors[100] <= 0.01, errors
    assert errors[0.05] > errors[100] * 5, errors


def auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Mann-Whitney AUC: P(a positive outcome scores above a negative one)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def card_scores(model: dict[str, Any], rows: Sequence[dict[str, Any]]) -> list[float]:
    """Apply a scorecard definition to rows, as the test reads it."""
    out = []
    for r in rows:
        score = model["base_points"]
        for f in model["features"]:
            v = r[f["column"]]
            for b in f["bins"]:
                if "value" in b and b["value"] == v:
                    score += b["points"]
                    break
                if "range" in b and (
                    b["range"][0] <= v < b["range"][1]
                    or (b is f["bins"][-1] and v >= b["range"][0])
                ):
                    score += b["points"]
                    break
                if "range" in b and b is f["bins"][0] and v < b["range"][0]:
                    score += b["points"]
                    break
        out.append(score)
    return out


def test_scorecard_auc_on_real_data_is_close_to_a_non_private_card(
    pums: str, enterprise: Caller, shared_dir: Path
) -> None:
    rows = pums_rows(shared_dir)
    # The card "good" outcome is target 0 (not married here); higher scores = good.
    good = [0 if r["married"] == 1 else 1 for r in rows]
    resp = train(enterprise, pums, CARD, 5)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    model = body["model"]
    assert model["kind"] == "scorecard" and model["scale"]["pdo"] == 20.0
    private_auc = auc(card_scores(model, rows), good)
    # the non-private card: the same post-processing on exact counts
    manifest = parse_manifest(PUMS_MANIFEST)
    encs = tuple(encode(manifest.column(c), c) for c in CARD["features"])  # type: ignore[arg-type]
    plan = ScorecardPlan(encs, 1, 5.0, Scale(), 20)
    codes = {"age": lambda v: min(sum(v >= e for e in [20, 30, 40, 50, 60, 70]), 6)}
    counts = []
    for enc in encs:
        feature = [[0.0, 0.0] for _ in range(enc.size)]
        for r, g in zip(rows, good, strict=True):
            v = r[enc.name]
            code = codes[enc.name](v) if enc.name in codes else list(enc.values).index(v)
            feature[code][0 if g else 1] += 1
        counts.append([(a, b) for a, b in feature])
    base, points, _, _ = scorecard.points_from_counts(plan, counts)
    exact_model = {
        "base_points": base,
        "features": [
            {
                "column": e.name,
                "bins": [
                    ({"range": e.label(c)} if e.kind.value == "bins" else {"value": e.label(c)})
                    | {"points": p[c]}
                    for c in range(e.categories)
                ],
            }
            for e, p in zip(encs, points, strict=True)
        ],
    }
    exact_auc = auc(card_scores(exact_model, rows), good)
    assert exact_auc > 0.65
    assert abs(private_auc - exact_auc) <= 0.03, (private_auc, exact_auc)
    # the service's own estimate, from the noisy histograms, is in the neighbourhood too
    assert abs(body["metrics"]["auc"]["estimate"] - exact_auc) <= 0.08
    assert 0 < body["metrics"]["ks"]["estimate"] < 1


def test_one_extreme_unit_moves_the_release_no_more_than_epsilon_allows() -> None:
    """Neighbouring datasets, one with an extreme unit (income clipped from 10^9):
    over many releases, the probability of any event changes by at most e^epsilon
    (checked on the released statistic the unit moves most)."""
    manifest = parse_manifest(PUMS_MANIFEST)
    plan = LinearPlan((manifest.column("age"),), manifest.column("income"), 1, 1.0)  # type: ignore[arg-type]
    rng = np.random.default_rng(5)
    base = [(float(rng.integers(18, 80)), float(rng.integers(0, 100000))) for _ in range(50)]

    def exact(rows: Sequence[tuple[float, float]]) -> list[int]:
        sums = [0] * len(plan.entries)
        for age, income in rows:
            u = [
                1.0,
                (2 * min(max(age, 0), 100) - 100) / 100,
                (2 * min(max(income, 0), 500000) - 500000) / 500000,
            ]
            for n, (i, j) in enumerate(plan.entries):
                sums[n] += round(u[i] * u[j] * linear.QUANTUM)
        return sums

    with_unit = exact([*base, (100.0, 1e9)])
    without = exact(base)
    deadline = Deadline.start(EngineLimits(timeout_s=600))
    moved = max(range(len(with_unit)), key=lambda n: abs(with_unit[n] - without[n]))
    draws = 4000
    a = np.asarray(
        [linear.release(plan, [tuple(with_unit)], deadline).stats[moved] for _ in range(draws)]
    )
    b = np.asarray(
        [linear.release(plan, [tuple(without)], deadline).stats[moved] for _ in range(draws)]
    )
    scale = plan.scale()
    edges = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()), 9)
    pa = np.histogram(a, edges)[0] / draws
    pb = np.histogram(b, edges)[0] / draws
    bound = math.exp(plan.epsilon)
    for x, y in zip(pa, pb, strict=True):
        if min(x, y) * draws >= 100:  # bins with enough mass for a stable ratio
            assert x <= bound * y * 1.25 and y <= bound * x * 1.25, (x, y)
    assert scale >= plan.sensitivity / plan.epsilon
    # and the scorecard counts: a unit moves each feature's table by k in L1
    enc = encode(manifest.column("sex"), "sex")  # type: ignore[arg-type]
    card = ScorecardPlan((enc,), 1, 1.0, Scale(), 10)
    assert card.counts_sensitivity == 1
    rel = scorecard.release(card, [(0, 1, 10), (1, 0, 12)], deadline)
    assert len(rel.counts) == 1 and len(rel.good_hist) == 10


def test_release_shape_receipt_reuse_and_audit(
    pums: str, enterprise: Caller, regulator: Caller, rt: Runtime
) -> None:
    first = train(enterprise, pums, CARD, 2)
    body = first.get_json()
    assert first.status_code == 200, body
    assert set(body) == {
        "model",
        "metrics",
        "accuracy",
        "epsilon_spent",
        "budget",
        "release",
        "receipt",
    }
    jwks = enterprise.client.get("/v1/keys").get_json()
    claims = check_receipt(body["receipt"], jwks)
    assert claims["result_hash"] == result_hash({k: v for k, v in body.items() if k != "receipt"})
    again = train(enterprise, pums, CARD, 2).get_json()
    assert again["model"] == body["model"] and again["epsilon_spent"] == 0.0
    assert again["release"] == body["release"] and again["budget"]["spent"] == 2.0
    index = int(first.headers["X-Audit-Index"])
    entry = regulator.get(f"/v1/audit/entries?cursor={index}&limit=1").get_json()["entries"][0][
        "entry"
    ]
    assert entry["action"] == "model.train" and entry["epsilon"] == "2"
    assert entry["release"] == body["release"] and entry["model_kind"] == "scorecard"
    charges = regulator.get(f"/v1/scopes/{pums}/charges").get_json()["charges"]
    assert [c["audit_index"] for c in charges] == [index]


def test_preview_spends_nothing_and_states_accuracy(
    pums: str, enterprise: Caller, rt: Runtime
) -> None:
    for spec in (LINEAR, CARD):
        resp = enterprise.post(
            "/v1/models/train/preview",
            {"scope": pums, "product": "pums", "epsilon": 1, "spec": spec},
        )
        assert resp.status_code == 200, resp.get_json()
        assert all(a["ci95"] > 0 for a in resp.get_json()["accuracy"])
    card = enterprise.post(
        "/v1/models/train/preview", {"scope": pums, "product": "pums", "epsilon": 1, "spec": CARD}
    ).get_json()
    # four features, k = 1: counts at 0.8 epsilon with sensitivity 4
    assert card["accuracy"][0]["epsilon"] == 0.8
    assert rt.scopes.get(pums).spent_nano == 0


def test_budget_exhaustion_and_concurrent_training(
    pums: str, operator: Caller, enterprise: Caller, rt: Runtime
) -> None:
    grant(operator, "sc-small", epsilon=3, cap=1)
    results: list[Any] = []

    def one(i: int) -> None:
        spec = dict(CARD, score_bins=10 + i)
        results.append(train(enterprise, "sc-small", spec, 1))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) == 3 and codes.count(403) == 3, codes
    assert {error_code(r) for r in results if r.status_code == 403} == {"budget_exhausted"}
    assert rt.scopes.get("sc-small").budget.spent == 3


@pytest.mark.parametrize(
    ("spec", "epsilon", "field"),
    [
        ({**LINEAR, "features": ["age", "nope"]}, 1, "spec.features.1"),
        ({**LINEAR, "features": ["hours"]}, 1, "spec.features.0"),  # unbounded
        ({**LINEAR, "features": ["note"]}, 1, "spec.features.0"),  # not numeric
        ({**CARD, "target": "age"}, 1, "spec.target"),  # not binary
        ({**CARD, "target": {"column": "income", "equals": 1}}, 1, "spec.target"),
        ({**CARD, "target": {"column": "married", "in": [0, 1]}}, 1, "spec.target"),
        (
            {**CARD, "features": [{"column": "age", "bins": list(range(0, 103))}]},
            1,
            "spec.features.0.bins",
        ),
        ({**CARD, "features": ["note"]}, 1, "spec.features.0"),  # no domain
        ({**CARD, "score_bins": 100000}, 1, "spec.score_bins"),
        ({**CARD, "kind": "neural_net"}, 1, "spec.kind"),
        ({**CARD, "extra": 1}, 1, "spec.extra"),
        (CARD, 1000, "epsilon"),
    ],
)
def test_bad_specs_are_refused_with_the_field(
    pums: str, enterprise: Caller, rt: Runtime, spec: dict[str, Any], epsilon: float, field: str
) -> None:
    resp = train(enterprise, pums, spec, epsilon)
    assert resp.status_code == 400, resp.get_json()
    assert field in resp.get_json()["error"]["details"]["fields"], resp.get_json()
    assert rt.scopes.get(pums).spent_nano == 0


def test_epsilon_over_the_scopes_cap_and_operations_not_granted(
    pums: str, operator: Caller, enterprise: Caller
) -> None:
    grant(operator, "sc-capped", epsilon=10, cap=1)
    resp = train(enterprise, "sc-capped", CARD, 2)
    assert resp.status_code == 400 and "epsilon" in resp.get_json()["error"]["details"]["fields"]
    grant(operator, "sc-agg-only", synthetic=False, train=False)
    resp = train(enterprise, "sc-agg-only", CARD, 1)
    assert resp.status_code == 403 and error_code(resp) == "operation_not_allowed"
    resp = enterprise.post(
        "/v1/products/pums/synthetic/preview",
        {"scope": "sc-agg-only", "epsilon": 1, "columns": ["age"], "rows": 10},
    )
    assert resp.status_code == 403 and error_code(resp) == "operation_not_allowed"
