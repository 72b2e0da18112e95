"""Verification over HTTP (DESIGN §5, §9): booleans only, consent, limits, enumeration."""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from audit.receipts import check_receipt
from products.loader import DataFormat
from products.manifest import parse_manifest
from products.parsing import parse
from products.verification import VerificationSchema
from sandbox.actions import products, verifications
from sandbox.actions.review import review
from sandbox.demo import DemoSizes, manifest_data, verification_data, write_all
from sandbox.runtime import Runtime
from sandbox.verification.codes import make_uscc
from tests.sandbox.conftest import Caller, error_code, local


@pytest.fixture
def demo(rt: Runtime, operator: Caller, enterprise: Caller, tmp_path: Path) -> dict[str, Any]:
    files = write_all(tmp_path / "csv", DemoSizes(300, 600, 100))
    for pid in ("enterprise_registry", "social_insurance"):
        local(rt, products.register(rt, parse_manifest(manifest_data()[pid]), "op-city"))
        local(rt, products.upload(rt, "op-city", pid, files[pid], DataFormat.CSV).pending)
    for body in verification_data().values():
        if body["product"] in ("enterprise_registry", "social_insurance"):
            local(rt, verifications.define(rt, "op-city", parse(VerificationSchema, body, "vp")))
    rows = {}
    for pid in ("enterprise_registry", "social_insurance"):
        with files[pid].open(encoding="utf-8") as f:
            rows[pid] = list(csv.DictReader(f))
    grant(
        operator,
        "sc-kyc",
        "enterprise_registry",
        ["enterprise-good-standing", "enterprise-capital-band", "enterprise-four-elements"],
    )
    grant(operator, "sc-social", "social_insurance", ["social-insurance-months"])
    return rows


def grant(operator: Caller, sid: str, product: str, verify: list[str], **over: Any) -> None:
    body = {
        "id": sid,
        "enterprise": "ent-acme",
        "product": product,
        "purpose": "kyc",
        "operations": {"verify": verify},
        "epsilon": 1,
        "rate_per_minute": 5000,
        "daily_quota": 100000,
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2099-01-01T00:00:00Z",
        **over,
    }
    resp = operator.post("/v1/scopes", body)
    assert resp.status_code == 201, resp.get_json()


def verify(caller: Caller, vp: str, body: dict[str, Any]) -> Any:
    return caller.post(f"/v1/verifications/{vp}", body)


def test_good_standing_true_false_and_unknown(demo: dict[str, Any], enterprise: Caller) -> None:
    registry = demo["enterprise_registry"]
    good = next(r for r in registry if r["status"] == "active" and r["abnormal_list"] == "false")
    bad = next(r for r in registry if r["status"] != "active")
    for row, expected in ((good, True), (bad, False)):
        resp = verify(
            enterprise,
            "enterprise-good-standing",
            {"scope": "sc-kyc", "subject": {"uscc": row["uscc"]}},
        )
        assert resp.status_code == 200, resp.get_json()
        body = resp.get_json()
        assert body["match"] is expected and set(body["checks"]) == {"active", "not_abnormal"}
    unknown = make_uscc("9", "1", "440106", "QQQQQQQQ")
    body = verify(
        enterprise, "enterprise-good-standing", {"scope": "sc-kyc", "subject": {"uscc": unknown}}
    ).get_json()
    assert body["match"] is False and not any(body["checks"].values())


def test_capital_band_uses_only_allowed_params(demo: dict[str, Any], enterprise: Caller) -> None:
    row = next(r for r in demo["enterprise_registry"] if int(r["registered_capital"]) >= 5_000_000)
    capital = int(row["registered_capital"])
    for band in (1_000_000, 5_000_000, 10_000_000, 50_000_000):
        body = verify(
            enterprise,
            "enterprise-capital-band",
            {
                "scope": "sc-kyc",
                "subject": {"uscc": row["uscc"]},
                "params": {"capital_at_least": band},
            },
        ).get_json()
        assert body == {"match": capital >= band, "receipt": body["receipt"]}
    free = verify(
        enterprise,
        "enterprise-capital-band",
        {
            "scope": "sc-kyc",
            "subject": {"uscc": row["uscc"]},
            "params": {"capital_at_least": capital - 1},
        },
    )
    assert free.status_code == 400 and "capital_at_least" in json.dumps(free.get_json())


def test_four_elements_and_normalisation(demo: dict[str, Any], enterprise: Caller) -> None:
    row = demo["enterprise_registry"][0]
    subject = {
        "uscc": row["uscc"].lower(),
        "name": f"  {row['name']} ",
        "legal_rep_name": row["legal_rep_name"],
        "legal_rep_id": row["legal_rep_id"].lower(),
    }
    body = {"scope": "sc-kyc", "subject": subject, "consent_ref": "AUTH-1"}
    resp = verify(enterprise, "enterprise-four-elements", body)
    assert resp.get_json().get("match") is True, resp.get_json()
    subject["legal_rep_name"] = "张三丰"
    assert verify(enterprise, "enterprise-four-elements", body).get_json()["match"] is False


def test_malformed_keys_name_the_field(demo: dict[str, Any], enterprise: Caller) -> None:
    cases = [
        {"uscc": "123"},
        {"uscc": "91440111857194246Q"},
        {},
        {"uscc": 5},
        {"uscc": "91440111857194246R", "extra": "x"},
    ]
    for subject in cases:
        resp = verify(
            enterprise, "enterprise-good-standing", {"scope": "sc-kyc", "subject": subject}
        )
        assert resp.status_code == 400 and error_code(resp) == "invalid_request", subject
        assert "subject" in json.dumps(resp.get_json()["error"]["details"])
    assert verify(enterprise, "nope", {"scope": "sc-kyc", "subject": {}}).status_code == 404


def test_no_record_value_leaves(demo: dict[str, Any], enterprise: Caller) -> None:
    row = demo["enterprise_registry"][3]
    texts = [
        verify(
            enterprise,
            vp,
            {
                "scope": "sc-kyc",
                "subject": {"uscc": row["uscc"]},
                **(
                    {"params": {"capital_at_least": 1_000_000}}
                    if vp == "enterprise-capital-band"
                    else {}
                ),
            },
        ).get_data(as_text=True)
        for vp in ("enterprise-good-standing", "enterprise-capital-band")
    ]
    values = [
        row[k]
        for k in (
            "name",
            "legal_rep_name",
            "legal_rep_id",
            "registered_capital",
            "founded_on",
            "district",
        )
    ]
    for text in texts:
        body = json.loads(text)
        body.pop("receipt")
        flat = json.dumps(body, ensure_ascii=False)
        assert not any(v in flat for v in values), flat


def test_natural_person_needs_consent(
    demo: dict[str, Any], enterprise: Caller, regulator: Caller
) -> None:
    row = next(r for r in demo["social_insurance"] if int(r["months_paid"]) >= 12)
    subject = {"person_id": row["person_id"], "employer_uscc": row["employer_uscc"]}
    missing = verify(
        enterprise,
        "social-insurance-months",
        {"scope": "sc-social", "subject": subject, "params": {"months_at_least": 12}},
    )
    assert missing.status_code == 400 and "consent_ref" in json.dumps(missing.get_json())
    ok = verify(
        enterprise,
        "social-insurance-months",
        {
            "scope": "sc-social",
            "subject": subject,
            "params": {"months_at_least": 12},
            "consent_ref": "AUTH-2026-000123",
            "request_id": "loan-77",
        },
    )
    assert ok.status_code == 200
    body = ok.get_json()
    assert body["checks"]["months_at_least"] is True
    claims = check_receipt(body["receipt"], enterprise.client.get("/v1/keys").get_json())
    assert claims["request_id"] == "loan-77"
    entry = regulator.get(
        f"/v1/audit/entries?cursor={ok.headers['X-Audit-Index']}&limit=1"
    ).get_json()["entries"][0]["entry"]
    assert entry["consent_ref"] == "AUTH-2026-000123" and entry["request_id"] == "loan-77"
    assert len(entry["subject_key_hash"]) == 64
    assert row["person_id"] not in json.dumps(entry, ensure_ascii=False)


def test_batch_answers_in_order_and_counts_each_item(
    demo: dict[str, Any], operator: Caller, enterprise: Caller
) -> None:
    registry = demo["enterprise_registry"][:20]
    items = [{"subject": {"uscc": r["uscc"]}} for r in registry]
    batch = enterprise.post(
        "/v1/verifications/enterprise-good-standing/batch", {"scope": "sc-kyc", "items": items}
    ).get_json()
    singles = [
        verify(
            enterprise, "enterprise-good-standing", {"scope": "sc-kyc", "subject": i["subject"]}
        ).get_json()
        for i in items
    ]
    assert batch["results"] == [{k: v for k, v in s.items() if k != "receipt"} for s in singles]
    grant(
        operator,
        "sc-small",
        "enterprise_registry",
        ["enterprise-good-standing"],
        rate_per_minute=10,
        daily_quota=11,
    )
    limited = enterprise.post(
        "/v1/verifications/enterprise-good-standing/batch",
        {"scope": "sc-small", "items": items[:11]},
    )
    assert limited.status_code == 429 and error_code(limited) == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    quota = verify(
        enterprise,
        "enterprise-good-standing",
        {"scope": "sc-small", "subject": items[0]["subject"]},
    )
    assert quota.status_code == 429 and error_code(quota) == "quota_exceeded"
    assert int(quota.headers["Retry-After"]) > 60


def test_scope_must_grant_the_verification(
    demo: dict[str, Any], operator: Caller, enterprise: Caller
) -> None:
    resp = operator.post(
        "/v1/scopes",
        {
            "id": "sc-stats",
            "enterprise": "ent-acme",
            "product": "enterprise_registry",
            "purpose": "stats",
            "operations": {"aggregate": {"columns": ["district"]}},
            "epsilon": 1,
            "rate_per_minute": 10,
            "daily_quota": 10,
            "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": "2099-01-01T00:00:00Z",
        },
    )
    assert resp.status_code == 201
    uscc = demo["enterprise_registry"][0]["uscc"]
    refused = verify(
        enterprise, "enterprise-good-standing", {"scope": "sc-stats", "subject": {"uscc": uscc}}
    )
    assert refused.status_code == 403 and error_code(refused) == "operation_not_allowed"
    wrong_product = verify(
        enterprise, "social-insurance-months", {"scope": "sc-kyc", "subject": {}}
    )
    assert error_code(wrong_product) == "operation_not_allowed"


def test_honest_callers_are_not_flagged(
    demo: dict[str, Any], rt: Runtime, enterprise: Caller, regulator: Caller
) -> None:
    known = [r["uscc"] for r in demo["enterprise_registry"][:250]]
    resp = enterprise.post(
        "/v1/verifications/enterprise-good-standing/batch",
        {"scope": "sc-kyc", "items": [{"subject": {"uscc": u}} for u in known]},
    )
    entry = regulator.get(
        f"/v1/audit/entries?cursor={resp.headers['X-Audit-Index']}&limit=1"
    ).get_json()["entries"][0]["entry"]
    assert entry["items"] == 250
    assert review(rt) is not None
    reviews = regulator.get("/v1/audit/entries?action=scope.review").get_json()["entries"]
    assert [r["entry"]["flags"] for r in reviews] == [[]]


def test_operators_define_verification_products(
    demo: dict[str, Any], operator: Caller, enterprise: Caller
) -> None:
    body = {
        "id": "active-check",
        "product": "enterprise_registry",
        "key": ["uscc"],
        "checks": [{"name": "active", "column": "status", "op": "eq", "param": "active"}],
        "answer": "all",
    }
    created = operator.post("/v1/verification-products", body)
    assert created.status_code == 201, created.get_json()
    assert operator.post("/v1/verification-products", body).status_code == 409
    free = dict(body, id="free", checks=[{"name": "c", "column": "registered_capital", "op": "ge"}])
    assert operator.post("/v1/verification-products", free).status_code == 400
    not_unique = dict(body, id="by-district", key=["district"])
    assert operator.post("/v1/verification-products", not_unique).status_code == 400
    assert enterprise.post("/v1/verification-products", body).status_code == 403
    listed = enterprise.get("/v1/verification-products?product=enterprise_registry").get_json()
    assert "active-check" in [v["id"] for v in listed["verification_products"]]


def test_sweep_forgets_expired_probes(
    demo: dict[str, Any], enterprise: Caller, rt: Runtime
) -> None:
    import sqlalchemy as sa

    from sandbox.verification.tables import verification_probes

    uscc = demo["enterprise_registry"][0]["uscc"]
    verify(enterprise, "enterprise-good-standing", {"scope": "sc-kyc", "subject": {"uscc": uscc}})
    with rt.engine.connect() as conn:
        count = sa.select(sa.func.count()).select_from(verification_probes)
        assert conn.execute(count).scalar_one() == 1
    real_clock = rt.clock
    rt.clock = lambda: real_clock() + timedelta(hours=1)
    try:
        rt.sweep()
    finally:
        rt.clock = real_clock
    with rt.engine.connect() as conn:
        assert conn.execute(count).scalar_one() == 0
