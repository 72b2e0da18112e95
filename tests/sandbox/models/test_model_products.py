"""Model products and their filing (DESIGN §11.3): the lifecycle and who may move it,
bands against the test's own computation, unknown subjects, what responses may hold,
the verification controls (rate, quota, enumeration, consent), the regulator's view."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from sandbox.actions.review import review
from sandbox.runtime import Runtime
from tests.sandbox.conftest import Caller, error_code
from tests.sandbox.models.conftest import grant, pums_rows

AGE = [0, 20, 30, 40, 50, 60, 70, 100]
CARD: dict[str, Any] = {
    "kind": "scorecard",
    "base_points": 500,
    "features": [
        {
            "column": "age",
            "bins": [
                {"range": [AGE[i], AGE[i + 1]], "points": p}
                for i, p in enumerate([-40, -10, 5, 15, 25, 30, 35])
            ],
            "missing_points": 0,
        },
        {
            "column": "educ",
            "bins": [
                {"values": list(range(1, 9)), "points": -15},
                {"values": list(range(9, 13)), "points": 5},
                {"values": list(range(13, 17)), "points": 30},
            ],
            "missing_points": -5,
        },
        {
            "column": "sex",
            "bins": [{"value": 0, "points": 3}, {"value": 1, "points": -3}],
            "missing_points": 0,
        },
    ],
}
BANDS = [
    {"label": "A", "min_score": 540},
    {"label": "B", "min_score": 510},
    {"label": "C", "min_score": 0},
]


def card_score(row: dict[str, Any] | None) -> float:
    """The test's own reading of CARD (None: a record whose every input is missing)."""
    if row is None:
        return 500 + 0 - 5 + 0
    score = 500.0
    age = min(max(row["age"], 0), 100)
    i = max(j for j in range(7) if age >= AGE[j])
    score += [-40, -10, 5, 15, 25, 30, 35][i]
    score += -15 if row["educ"] <= 8 else (5 if row["educ"] <= 12 else 30)
    score += 3 if row["sex"] == 0 else -3
    return score


def band(score: float) -> str:
    return "A" if score >= 540 else ("B" if score >= 510 else "C")


def define(operator: Caller, model: dict[str, Any] = CARD, **kw: Any) -> Any:
    body = {
        "id": "pums-risk",
        "product": "pums",
        "key": ["pid"],
        "model": model,
        "output": {"bands": BANDS},
        "natural_person": False,
        **kw,
    }
    return operator.post("/v1/model-products", body)


def score(enterprise: Caller, pid: int, scope: str = "sc-score", **kw: Any) -> Any:
    return enterprise.post(
        "/v1/model-products/pums-risk/score", {"scope": scope, "subject": {"pid": pid}, **kw}
    )


@pytest.fixture
def product(pums: str, operator: Caller, regulator: Caller) -> str:
    resp = define(operator)
    assert resp.status_code == 201, resp.get_json()
    grant(operator, "sc-score", score=["pums-risk"])
    return str(resp.get_json()["version"])


def entry(regulator: Caller, resp: Any) -> dict[str, Any]:
    index = int(resp.headers["X-Audit-Index"])
    got = regulator.get(f"/v1/audit/entries?cursor={index}&limit=1").get_json()
    e: dict[str, Any] = got["entries"][0]["entry"]
    return e


def test_lifecycle_and_who_may_move_it(
    product: str, operator: Caller, regulator: Caller, enterprise: Caller
) -> None:
    v1 = product
    # A draft scores nobody, and the refusal is audited.
    refused = score(enterprise, 1)
    assert refused.status_code == 403 and error_code(refused) == "model_not_filed"
    e = entry(regulator, refused)
    assert e["action"] == "model.score" and e["decision"] == "deny"
    # Only a regulator files.
    for who in (operator, enterprise):
        bad = who.post(f"/v1/model-products/pums-risk/versions/{v1}/file", {})
        assert bad.status_code == 403, who.id
    filed = regulator.post(f"/v1/model-products/pums-risk/versions/{v1}/file", {"note": "备案 #1"})
    assert filed.status_code == 200 and filed.get_json()["status"] == "filed"
    again = regulator.post(f"/v1/model-products/pums-risk/versions/{v1}/file", {})
    assert again.status_code == 409 and error_code(again) == "conflict"
    ok = score(enterprise, 1)
    assert ok.status_code == 200 and ok.get_json()["model_version"] == v1
    # The same definition again is idempotent; a changed one is a new draft.
    same = define(operator)
    assert same.status_code == 200 and same.get_json() == {
        **same.get_json(),
        "version": v1,
        "created": False,
    }
    changed = define(operator, output={"bands": [{"label": "A", "min_score": 530}, *BANDS[1:]]})
    assert changed.status_code == 201
    v2 = changed.get_json()["version"]
    assert v2 != v1 and score(enterprise, 1).get_json()["model_version"] == v1
    assert regulator.post(f"/v1/model-products/pums-risk/versions/{v2}/file", {}).status_code == 200
    assert score(enterprise, 1).get_json()["model_version"] == v2
    # Withdrawing the current version makes the newest remaining filed one current.
    assert (
        operator.post(f"/v1/model-products/pums-risk/versions/{v2}/withdraw", {}).status_code == 200
    )
    assert score(enterprise, 1).get_json()["model_version"] == v1
    refile = regulator.post(f"/v1/model-products/pums-risk/versions/{v2}/file", {})
    assert refile.status_code == 409  # withdrawal is final
    assert (
        enterprise.post(f"/v1/model-products/pums-risk/versions/{v1}/withdraw", {}).status_code
        == 403
    )
    assert (
        regulator.post(f"/v1/model-products/pums-risk/versions/{v1}/withdraw", {}).status_code
        == 200
    )
    gone = score(enterprise, 1)
    assert gone.status_code == 403 and error_code(gone) == "model_not_filed"
    # The regulator sees every version, its history and its calls.
    view = regulator.get("/v1/model-products/pums-risk").get_json()
    assert [v["status"] for v in view["versions"]] == ["withdrawn", "withdrawn"]
    first = view["versions"][0]
    assert [h["event"] for h in first["history"]] == ["define", "file", "withdraw"]
    assert first["history"][1]["note"] == "备案 #1" and first["calls"] == 3
    assert view["versions"][1]["calls"] == 1
    # An enterprise sees no definition.
    mine = enterprise.get("/v1/model-products/pums-risk").get_json()
    assert "versions" not in mine and mine["bands"] == ["A", "B", "C"]
    for action in ("model_product.define", "model_product.file", "model_product.withdraw"):
        got = regulator.get(f"/v1/audit/entries?action={action}&limit=100").get_json()["entries"]
        assert got, action


def test_bands_match_the_data_unknown_subjects_and_what_responses_hold(
    product: str, regulator: Caller, enterprise: Caller, shared_dir: Path, rt: Runtime
) -> None:
    assert (
        regulator.post(f"/v1/model-products/pums-risk/versions/{product}/file", {}).status_code
        == 200
    )
    rows = pums_rows(shared_dir)[:200]
    items = [{"subject": {"pid": r["pid"]}} for r in rows] + [{"subject": {"pid": 10**9}}]
    resp = enterprise.post(
        "/v1/model-products/pums-risk/score/batch", {"scope": "sc-score", "items": items}
    )
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert set(body) == {"results", "model_version", "receipt"}
    got = [r["band"] for r in body["results"]]
    assert got[:-1] == [band(card_score(r)) for r in rows]
    assert got[-1] == band(card_score(None))  # unknown: the all-missing band
    assert len(set(got)) == 3
    for r in body["results"]:
        assert set(r) == {"band"} and r["band"] in {"A", "B", "C"}
    one = enterprise.post(
        "/v1/model-products/pums-risk/score",
        {"scope": "sc-score", "subject": {"pid": rows[0]["pid"]}},
    ).get_json()
    assert set(one) == {"band", "model_version", "receipt"}
    unknown = score(enterprise, 123456789).get_json()
    assert unknown["band"] == band(card_score(None))
    # The entry: hashed subject, the version, the band only inside result_hash.
    e = entry(regulator, resp)
    assert e["model_version"] == product and len(e["subject_key_hashes"]) == 201
    text = json.dumps(e)
    assert '"band"' not in text


def test_the_regulator_reproduces_a_scores_model_version(
    product: str, regulator: Caller, enterprise: Caller
) -> None:
    regulator.post(f"/v1/model-products/pums-risk/versions/{product}/file", {})
    resp = score(enterprise, 3)
    version = entry(regulator, resp)["model_version"]
    view = regulator.get("/v1/model-products/pums-risk").get_json()
    [v] = [v for v in view["versions"] if v["version"] == version]
    assert hashlib.sha256(rfc8785.dumps(v["definition"])).hexdigest() == version
    assert v["definition"]["model"] == CARD


def test_rate_quota_consent_and_enumeration(
    pums: str, operator: Caller, regulator: Caller, enterprise: Caller, rt: Runtime
) -> None:
    body = define(operator, natural_person=True).get_json()
    regulator.post(f"/v1/model-products/pums-risk/versions/{body['version']}/file", {})
    grant(operator, "sc-slow", score=["pums-risk"])
    no_consent = score(enterprise, 1, scope="sc-slow")
    assert no_consent.status_code == 400 and "consent_ref" in json.dumps(no_consent.get_json())
    ok = score(enterprise, 1, scope="sc-slow", consent_ref="AUTH-2026-0001")
    assert ok.status_code == 200
    assert entry(regulator, ok)["consent_ref"] == "AUTH-2026-0001"
    # rate and quota, counted as for verification (each call, refused ones included)
    for sid, rate, quota, code in (
        ("sc-rate", 2, 100, "rate_limited"),
        ("sc-quota", 100, 2, "quota_exceeded"),
    ):
        resp = operator.post(
            "/v1/scopes",
            {
                "id": sid,
                "enterprise": "ent-acme",
                "product": "pums",
                "purpose": "scoring",
                "operations": {"score": ["pums-risk"]},
                "epsilon": 1,
                "rate_per_minute": rate,
                "daily_quota": quota,
                "valid_from": "2026-01-01T00:00:00Z",
                "valid_until": "2099-01-01T00:00:00Z",
            },
        )
        assert resp.status_code == 201, resp.get_json()
        got = [score(enterprise, 1, scope=sid, consent_ref="c") for _ in range(3)]
        assert [g.status_code for g in got] == [200, 200, 429], sid
        assert error_code(got[2]) == code
    # enumeration: 500 unknown subjects are flagged and the scope suspended by the review
    items = [{"subject": {"pid": 10**8 + i}, "consent_ref": "c"} for i in range(500)]
    for start in range(0, 500, 250):
        got = enterprise.post(
            "/v1/model-products/pums-risk/score/batch",
            {"scope": "sc-slow", "items": items[start : start + 250]},
        )
        assert got.status_code == 200, got.get_json()
    assert rt.scopes.get("sc-slow").status.value == "active"
    outcome = review(rt)
    assert outcome is not None and outcome.allowed
    blocked = score(enterprise, 1, scope="sc-slow", consent_ref="c")
    assert blocked.status_code == 403 and error_code(blocked) == "scope_suspended"


def test_scoring_needs_the_scope_operation(
    product: str, regulator: Caller, operator: Caller, enterprise: Caller
) -> None:
    regulator.post(f"/v1/model-products/pums-risk/versions/{product}/file", {})
    grant(operator, "sc-none")
    resp = score(enterprise, 1, scope="sc-none")
    assert resp.status_code == 403 and error_code(resp) == "operation_not_allowed"
    bad = operator.post(
        "/v1/scopes",
        {
            "id": "sc-bad",
            "enterprise": "ent-acme",
            "product": "pums",
            "purpose": "x",
            "operations": {"score": ["nope"]},
            "epsilon": 1,
            "rate_per_minute": 3,
            "daily_quota": 4,
            "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": "2099-01-01T00:00:00Z",
        },
    )
    assert (
        bad.status_code == 400
        and "operations.score" in bad.get_json()["error"]["details"]["fields"]
    )


def test_linear_model_product_and_one_from_a_training_release(
    pums: str, operator: Caller, regulator: Caller, enterprise: Caller, shared_dir: Path
) -> None:
    linear = {
        "kind": "linear",
        "intercept": 1000.0,
        "features": [
            {"column": "age", "coefficient": 10.0, "bounds": [18, 90]},
            {"column": "income", "coefficient": 0.01},
        ],
    }
    bands = [
        {"label": "high", "min_score": 2500},
        {"label": "mid", "min_score": 1500},
        {"label": "low", "min_score": 1000},
    ]
    resp = operator.post(
        "/v1/model-products",
        {
            "id": "pums-linear",
            "product": "pums",
            "key": ["pid"],
            "model": linear,
            "output": {"bands": bands},
        },
    )
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["score_range"] == [1180.0, 1900.0 + 5000.0]
    regulator.post(f"/v1/model-products/pums-linear/versions/{resp.get_json()['version']}/file", {})
    grant(operator, "sc-lin", score=["pums-linear"])
    rows = pums_rows(shared_dir)[:50]
    got = enterprise.post(
        "/v1/model-products/pums-linear/score/batch",
        {"scope": "sc-lin", "items": [{"subject": {"pid": r["pid"]}} for r in rows]},
    ).get_json()

    def expect(r: dict[str, Any]) -> str:
        s = 1000 + 10 * min(max(r["age"], 18), 90) + 0.01 * min(max(r["income"], 0), 500000)
        return "high" if s >= 2500 else ("mid" if s >= 1500 else "low")

    assert [x["band"] for x in got["results"]] == [expect(r) for r in rows]
    # from a training release: the regulator sees the release behind the version
    trained_request = {
        "scope": pums,
        "product": "pums",
        "epsilon": 2,
        "spec": {
            "kind": "scorecard",
            "target": {"column": "married", "equals": 1},
            "features": ["age", "sex"],
        },
    }
    trained = enterprise.post("/v1/models/train", trained_request)
    assert trained.status_code == 200, trained.get_json()
    release = trained.get_json()["release"]
    lo = trained.get_json()["model"]["score_range"][0]
    published = {
        "id": "pums-trained",
        "product": "pums",
        "key": ["pid"],
        "from_release": release,
        "output": {"bands": [{"label": "ok", "min_score": lo}]},
    }
    made = operator.post("/v1/model-products", published)
    assert made.status_code == 201, made.get_json()
    view = regulator.get("/v1/model-products/pums-trained").get_json()
    training = view["versions"][0]["training"]
    assert training["release"] == release and training["epsilon"] == "2"
    assert training["product_version"] == 1 and "auc" in training["metrics"]
    # The same training request under a second scope is a second release with the same
    # id (and its own noise): an id that names two models is refused, never guessed.
    grant(operator, "sc-pums-2")
    again = enterprise.post("/v1/models/train", {**trained_request, "scope": "sc-pums-2"})
    assert again.status_code == 200 and again.get_json()["release"] == release
    ambiguous = operator.post("/v1/model-products", {**published, "id": "pums-trained-2"})
    assert ambiguous.status_code == 400, ambiguous.get_json()
    assert "from_release" in ambiguous.get_json()["error"]["details"]["fields"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"model": {**CARD, "features": [{**CARD["features"][0], "column": "nope"}]}},
            "model.features.0.column",
        ),
        (
            {"model": {**CARD, "features": [{**CARD["features"][0], "column": "pid"}]}},
            "model.features.0.column",
        ),
        ({"output": {"bands": [BANDS[1], BANDS[0], BANDS[2]]}}, "output.bands"),
        ({"output": {"bands": BANDS[:2]}}, "output.bands"),  # does not cover the range
        (
            {
                "model": {
                    **CARD,
                    "features": [{**CARD["features"][2], "bins": [{"value": "x", "points": 1}]}],
                }
            },
            "model.features",
        ),
        (
            {
                "model": {
                    **CARD,
                    "features": [
                        {
                            **CARD["features"][0],
                            "bins": [
                                {"range": [0, 20], "points": 1},
                                {"range": [30, 40], "points": 1},
                            ],
                        }
                    ],
                }
            },
            "model.features.0.bins.1.range",
        ),
        ({"key": ["sex"]}, "key"),
        ({"product": "nope"}, "product"),
        ({"model": {"kind": "tree"}}, "model.kind"),
        # Numbers RFC 8785 cannot encode, in fields the checks leave free: the version
        # hash cannot be taken, so the definition is refused (was a 500).
        ({"model": {**CARD, "target": float("nan")}}, "model"),
        ({"model": {**CARD, "target": 10**30}}, "model"),
    ],
)
def test_bad_definitions_are_refused_with_the_field(
    pums: str, operator: Caller, change: dict[str, Any], field: str
) -> None:
    resp = define(operator, **change)
    assert resp.status_code == 400, resp.get_json()
    assert field in resp.get_json()["error"]["details"]["fields"], resp.get_json()
