"""The acceptance flow in both cryptographic suites (DESIGN §13): signed calls, receipts,
proofs, export, offline verification, witness cosignatures and tampering detection, in
an ``ed25519-sha256`` and an ``sm2-sm3`` deployment alike.

In ``sm2-sm3`` every principal signs with SM2 (JWS ``SM2SM3``), the platform's receipts
and checkpoints are SM2, and every hash the log commits to is SM3; each step below
checks that with the regulator's own code (``audit``), not the service's.
"""

from __future__ import annotations

import base64
import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from audit.entry import request_hash, result_hash
from audit.merkle import SHA256, verify_consistency, verify_inclusion
from audit.note import note_verifier, open_checkpoint
from audit.receipts import check_receipt
from audit.verify import verify_bundle
from audit.witness import witness_checkpoint
from policies.principals import Role, generate_keypair
from products.loader import DataFormat
from products.manifest import parse_manifest
from products.parsing import parse
from products.verification import VerificationSchema
from sandbox.actions import products, verifications
from sandbox.demo import DemoSizes, manifest_data, verification_data, write_all
from sandbox.runtime import Runtime
from tests.sandbox.conftest import SUITES, Caller, add_principal, cosigner, error_code, local

pytestmark = pytest.mark.parametrize("suite", SUITES, indirect=True)

VP = "enterprise-good-standing"


@pytest.fixture
def registry(rt: Runtime, operator: Caller, enterprise: Caller, tmp_path: Path) -> list[Any]:
    """The enterprise registry with one verification product, granted to ent-acme."""
    files = write_all(tmp_path / "csv", DemoSizes(60, 10, 10))
    pid = "enterprise_registry"
    local(rt, products.register(rt, parse_manifest(manifest_data()[pid]), "op-city"))
    local(rt, products.upload(rt, "op-city", pid, files[pid], DataFormat.CSV).pending)
    local(rt, verifications.define(rt, "op-city", parse(VerificationSchema, _vp(), "vp")))
    scope = {
        "id": "sc-kyc",
        "enterprise": "ent-acme",
        "product": pid,
        "purpose": "kyc",
        "operations": {"verify": [VP]},
        "epsilon": 1,
        "rate_per_minute": 5000,
        "daily_quota": 100000,
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2099-01-01T00:00:00Z",
    }
    assert operator.post("/v1/scopes", scope).status_code == 201
    with files[pid].open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _vp() -> dict[str, Any]:
    return next(b for b in verification_data().values() if b["id"] == VP)


def _subject(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in _vp()["key"]}


def test_signed_calls_receipts_and_proofs(
    rt: Runtime, suite: str, registry: list[Any], enterprise: Caller, regulator: Caller
) -> None:
    keys = enterprise.client.get("/v1/keys").get_json()
    assert keys["suite"] == suite
    want_alg = "SM2SM3" if suite == "sm2-sm3" else "EdDSA"
    assert {k["alg"] for k in keys["keys"]} == {want_alg}
    assert rt.principals.get("ent-acme").keys[0].alg.value == want_alg

    body = {"scope": "sc-kyc", "subject": _subject(registry[0]), "request_id": "r-1"}
    ok = enterprise.post(f"/v1/verifications/{VP}", body)
    assert ok.status_code == 200, ok.get_json()
    answer = ok.get_json()
    index = int(ok.headers["X-Audit-Index"])

    # The receipt, checked offline with the regulator's package: signature (EdDSA or
    # SM2SM3), and result_hash / leaf_hash in the suite's hash.
    entry = regulator.get(f"/v1/audit/entries?cursor={index}&limit=1").get_json()["entries"][0]
    leaf = base64.b64decode(entry["leaf"])
    claims = check_receipt(answer["receipt"], keys, leaf=leaf, response=answer)
    head = json.loads(base64.urlsafe_b64decode(answer["receipt"].split(".")[0] + "=="))
    assert head["alg"] == want_alg and claims["audit_index"] == index
    sent = json.dumps(body).encode()
    path = f"/v1/verifications/{VP}"
    assert claims["request_hash"] == request_hash("POST", path, sent, digest=rt.suite.digest)
    assert claims["result_hash"] == result_hash(answer, digest=rt.suite.digest)
    assert claims["leaf_hash"] == rt.suite.tree.leaf(leaf).hex()
    if suite == "sm2-sm3":  # not SHA-256 anywhere the log commits to
        assert claims["result_hash"] != result_hash(answer)
        assert claims["leaf_hash"] != SHA256.leaf(leaf).hex()
    # Local commands' entries too (the first: a principal registered by the CLI).
    first_entry = regulator.get("/v1/audit/entries?limit=1").get_json()["entries"][0]["entry"]
    cli_hash = request_hash("CLI", "sandbox tests", b"", digest=rt.suite.digest)
    assert first_entry["request_hash"] == cli_hash
    # A receipt whose answer was changed does not check out.
    with pytest.raises(Exception, match="result_hash"):
        check_receipt(answer["receipt"], keys, response={**answer, "match": not answer["match"]})

    # Its inclusion in a signed checkpoint, verified with the suite's tree hash.
    cp = enterprise.get("/v1/audit/checkpoint").get_json()
    log_keys = [note_verifier(k) for k in keys["keys"]]
    checkpoint, _ = open_checkpoint(cp["note"], log_keys)
    proof = enterprise.get(
        f"/v1/audit/proofs/inclusion?index={index}&tree_size={checkpoint.size}"
    ).get_json()
    leaf_hash = base64.b64decode(proof["leaf_hash"])
    assert leaf_hash.hex() == claims["leaf_hash"]
    hashes = [base64.b64decode(p) for p in proof["proof"]]
    verify_inclusion(index, checkpoint.size, leaf_hash, hashes, checkpoint.root, th=rt.suite.tree)

    # Tampered, replayed and wrongly signed calls are refused and recorded.
    tampered = enterprise.call(
        "POST",
        path,
        json_body={**body, "request_id": "r-2"},
        sign_body=sent,
    )
    assert tampered.status_code == 401 and error_code(tampered) == "bad_signature"
    token = _token(enterprise, "POST", path, sent)
    first = enterprise.call("POST", path, json_body=body, token=token)
    replay = enterprise.call("POST", path, json_body=body, token=token)
    assert first.status_code == 200 and error_code(replay) == "replayed"
    other_key = generate_keypair("sm2" if suite == "sm2-sm3" else "ed25519")[0]
    forged = enterprise.call(
        "POST", path, json_body=body, token=_token(enterprise, "POST", path, sent, other_key)
    )
    assert forged.status_code == 401 and error_code(forged) == "bad_signature"


def _token(
    caller: Caller, method: str, path: str, body: bytes, private_pem: bytes | None = None
) -> str:
    from policies.calls import sign_call

    return sign_call(
        private_pem or caller.private_pem,
        issuer=caller.id,
        kid=caller.kid,
        audience="public-data-sandbox",
        method=method,
        path_and_query=path,
        body=body,
    )


def test_witness_export_offline_verification_and_tampering(
    rt: Runtime, suite: str, tmp_path: Path, enterprise: Caller, regulator: Caller
) -> None:
    for _ in range(5):
        enterprise.get("/v1/products")
    keys = regulator.client.get("/v1/keys").get_json()
    log_keys = [note_verifier(k) for k in keys["keys"]]
    witness = cosigner(regulator.private_pem, "reg-bureau")

    # The regulator witnesses two checkpoints, the second checked for consistency.
    first = regulator.get("/v1/audit/checkpoint").get_json()
    seen = witness_checkpoint(
        first["note"], log_keys=log_keys, cosigner=witness, state=None, proof=[], now=1, suite=suite
    )
    assert regulator.post("/v1/audit/cosignatures", {"note": seen.note}).status_code == 201
    for _ in range(3):
        enterprise.get("/v1/products")
    second = regulator.get("/v1/audit/checkpoint").get_json()
    cons = regulator.get(
        f"/v1/audit/proofs/consistency?first={seen.state.size}&second={second['tree_size']}"
    ).get_json()
    proof = [base64.b64decode(p) for p in cons["proof"]]
    verify_consistency(
        seen.state.size,
        second["tree_size"],
        seen.state.root,
        base64.b64decode(second["root_hash"]),
        proof,
        th=rt.suite.tree,
    )
    again = witness_checkpoint(
        second["note"],
        log_keys=log_keys,
        cosigner=witness,
        state=seen.state,
        proof=proof,
        now=2,
        suite=suite,
    )
    assert regulator.post("/v1/audit/cosignatures", {"note": again.note}).status_code == 201
    assert again.line in regulator.get("/v1/audit/checkpoint").get_json()["cosigned_note"]

    # Export, and verify offline with the platform's key pinned and the witness named.
    resp = regulator.get("/v1/audit/export")
    path = tmp_path / "bundle.jsonl"
    path.write_bytes(resp.data)
    resp.close()
    lines = [json.loads(x) for x in path.read_bytes().splitlines()]
    assert lines[0]["suite"] == suite
    pinned = [v.vkey() for v in log_keys]
    report = verify_bundle(path, trusted_keys=log_keys)
    assert report.ok and report.keys_pinned and report.suite == suite, report.summary()
    assert any("reg-bureau" in c.cosigned_by for c in report.checkpoints)
    # ... and with `python -m audit verify`, a process that imports nothing but audit.
    cli = subprocess.run(
        [sys.executable, "-m", "audit", "verify", str(path), "--key", pinned[0]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 0 and f"({suite})" in cli.stdout, cli.stderr

    # Tampering: one byte of one entry; the verifier names it.
    victim = lines[3]
    leaf = bytearray(base64.b64decode(victim["leaf"]))
    leaf[leaf.index(b'"actor"') + 10] ^= 1
    victim["leaf"] = base64.b64encode(bytes(leaf)).decode()
    bad_path = tmp_path / "bad.jsonl"
    bad_path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    bad = verify_bundle(bad_path, trusted_keys=log_keys)
    assert not bad.ok and bad.first_bad_index == victim["index"]

    # A bundle that claims the other suite (same entries, same signatures) fails: its
    # hashes do not give the signed root.
    lines = [json.loads(x) for x in path.read_bytes().splitlines()]
    lines[0]["suite"] = next(s for s in SUITES if s != suite)
    swapped = tmp_path / "swapped.jsonl"
    swapped.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert not verify_bundle(swapped).ok


def test_a_deployment_registers_keys_of_its_suite(
    rt: Runtime, suite: str, operator: Caller
) -> None:
    other = "ed25519" if suite == "sm2-sm3" else "sm2"
    public = generate_keypair(other)[1]
    body = {"id": "ent-other", "role": "enterprise", "name": "Other", "keys": []}
    resp = operator.post("/v1/principals", {**body, "keys": [{"public_key": public.decode()}]})
    if suite == "sm2-sm3":
        # DESIGN §13: GB/T 39786 deployments register SM2 call-signing keys only.
        assert resp.status_code == 400 and error_code(resp) == "invalid_request"
        assert "SM2" in resp.get_json()["error"]["message"]
        assert rt.principals.find("ent-other") is None
    else:
        # SM2 keys are accepted in either suite.
        assert resp.status_code == 201, resp.get_json()
        assert add_principal(rt, "ent-sm2b", Role.ENTERPRISE, generate_keypair("sm2")[1])


def test_a_dp_query_is_charged_receipted_and_verifiable_in_the_suite(
    rt: Runtime, suite: str, operator: Caller, enterprise: Caller, tmp_path: Path
) -> None:
    """The DP query flow (DESIGN §7) end to end in the suite: a signed query, its budget
    charge, and a receipt and inclusion proof the regulator's code checks with the
    suite's signature and hash; the same request again is the stored release."""
    files = write_all(tmp_path / "csv", DemoSizes(10, 200, 10))
    pid = "population"
    local(rt, products.register(rt, parse_manifest(manifest_data()[pid]), "op-city"))
    local(rt, products.upload(rt, "op-city", pid, files[pid], DataFormat.CSV).pending)
    scope = {
        "id": "sc-stats",
        "enterprise": "ent-acme",
        "product": pid,
        "purpose": "market sizing",
        "operations": {"aggregate": {"columns": ["district", "household_size"]}},
        "epsilon": 2,
        "rate_per_minute": 60,
        "daily_quota": 1000,
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2099-01-01T00:00:00Z",
    }
    granted = operator.post("/v1/scopes", scope)
    assert granted.status_code == 201, granted.get_json()
    body = {
        "scope": "sc-stats",
        "sql": "SELECT district, COUNT(*) AS n FROM population GROUP BY district",
        "epsilon": 0.5,
    }
    ok = enterprise.post("/v1/queries", body)
    assert ok.status_code == 200, ok.get_json()
    answer = ok.get_json()
    assert answer["epsilon_spent"] == 0.5 and len(answer["rows"]) == 11
    keys = enterprise.client.get("/v1/keys").get_json()
    index = int(ok.headers["X-Audit-Index"])
    claims = check_receipt(answer["receipt"], keys, response=answer)
    assert claims["audit_index"] == index
    assert claims["result_hash"] == result_hash(answer, digest=rt.suite.digest)
    cp = enterprise.get("/v1/audit/checkpoint").get_json()
    checkpoint, _ = open_checkpoint(cp["note"], [note_verifier(k) for k in keys["keys"]])
    proof = enterprise.get(
        f"/v1/audit/proofs/inclusion?index={index}&tree_size={checkpoint.size}"
    ).get_json()
    hashes = [base64.b64decode(p) for p in proof["proof"]]
    leaf_hash = base64.b64decode(proof["leaf_hash"])
    assert leaf_hash.hex() == claims["leaf_hash"]
    verify_inclusion(index, checkpoint.size, leaf_hash, hashes, checkpoint.root, th=rt.suite.tree)
    # The same request again: the stored release, charged once.
    again = enterprise.post("/v1/queries", body).get_json()
    assert again["rows"] == answer["rows"]
    budget = enterprise.get("/v1/scopes/sc-stats").get_json()
    assert budget["budget"]["spent"] == 0.5


def test_console_entries_hash_their_request_in_the_suite(
    app: Any, rt: Runtime, regulator: Caller
) -> None:
    """A console page's entry records the request's hash in the deployment's suite, over
    the path as sent (percent-encoded), like the API's entries."""
    from tests.sandbox.console.conftest import browser_session

    client = browser_session(app, regulator)
    path = "/console/audit?text=%E6%B5%8B"
    assert client.get(path).status_code == 200
    entry = rt.audit.entries(cursor=rt.audit.size() - 1, limit=1).entries[0].entry
    assert entry["action"] == "audit.read"
    assert entry["request_hash"] == request_hash("GET", path, b"", digest=rt.suite.digest)


def test_the_console_entry_page_names_its_suite_for_the_browser_check(
    app: Any, rt: Runtime, regulator: Caller
) -> None:
    """The page's script checks SHA-256 and Ed25519 (WebCrypto's); it is told the suite,
    so an sm2-sm3 entry is left to the offline verifier instead of raising an alarm."""
    import html
    import json
    import re

    from tests.sandbox.console.conftest import browser_session

    client = browser_session(app, regulator)
    page = client.get("/console/audit/0")
    assert page.status_code == 200
    found = re.search(r'id="proof-data">(.*?)</script>', page.get_data(as_text=True), re.S)
    assert found is not None
    data = json.loads(html.unescape(found.group(1)))
    assert data["suite"] == rt.suite.name and data["messages"]["other_suite"]
