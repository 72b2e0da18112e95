"""The audit trail over HTTP (DESIGN §5, §7): every call recorded, proofs, bundles, witness.

Parametrised over both cryptographic suites (DESIGN §13): every hash below is the
deployment suite's, every key its key type."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from audit.merkle import verify_consistency, verify_inclusion
from audit.note import note_verifier, open_checkpoint
from audit.verify import verify_bundle
from sandbox.runtime import Runtime
from tests.sandbox.conftest import SUITES, Caller, cosigner, error_code, fresh_cosigner

pytestmark = pytest.mark.parametrize("suite", SUITES, indirect=True)


def test_refused_calls_are_recorded_as_anonymous_with_the_claimed_issuer_apart(
    enterprise: Caller, regulator: Caller
) -> None:
    # A call that does not verify proves nothing about who sent it: recorded under the
    # actor "anonymous", the issuer it named kept as a claim, so that nobody can write
    # entries under another principal's name (or into its own-entries view).
    forged = enterprise.call("GET", "/v1/products", sign_path="/v1/scopes")
    assert forged.status_code == 401 and error_code(forged) == "bad_signature"
    index = int(forged.headers["X-Audit-Index"])
    page = regulator.get(f"/v1/audit/entries?cursor={index}&limit=1").get_json()
    entry = page["entries"][0]["entry"]
    assert entry["index"] == index and entry["action"] == "auth.refused"
    assert (entry["actor"], entry["role"]) == ("anonymous", "unauthenticated")
    assert entry["claimed_actor"] == "ent-acme" and entry["decision"] == "deny"
    assert entry["reason"].startswith("bad_signature")
    assert "Bearer" not in json.dumps(entry)  # never the token itself
    own = enterprise.get("/v1/audit/entries?limit=1000").get_json()["entries"]
    assert index not in [e["index"] for e in own]


def test_entries_are_filtered_and_own_only_for_non_regulators(
    rt: Runtime, operator: Caller, enterprise: Caller, regulator: Caller
) -> None:
    operator.get("/v1/products")
    enterprise.get("/v1/products")
    mine = enterprise.get("/v1/audit/entries").get_json()["entries"]
    # Its own calls, and calls about it (its registration by a local command).
    assert mine and all(
        e["entry"]["actor"] == "ent-acme" or e["entry"]["target"].get("principal") == "ent-acme"
        for e in mine
    )
    assert "op-city" not in {e["entry"]["actor"] for e in mine}
    everyone = regulator.get("/v1/audit/entries?action=product.list").get_json()["entries"]
    assert {e["entry"]["actor"] for e in everyone} == {"op-city", "ent-acme"}
    denied = regulator.get("/v1/audit/entries?decision=deny").get_json()["entries"]
    assert all(e["entry"]["decision"] == "deny" for e in denied)
    for e in everyone:
        leaf = base64.b64decode(e["leaf"])
        assert rt.suite.tree.leaf(leaf).hex() == e["leaf_hash"]


def test_paging(regulator: Caller) -> None:
    for _ in range(5):
        regulator.get("/v1/products")
    first = regulator.get("/v1/audit/entries?limit=2").get_json()
    assert len(first["entries"]) == 2 and first["next_cursor"] == 2
    second = regulator.get(f"/v1/audit/entries?limit=2&cursor={first['next_cursor']}").get_json()
    assert [e["index"] for e in second["entries"]] == [2, 3]


def test_bad_audit_queries(regulator: Caller, enterprise: Caller) -> None:
    for path in (
        "/v1/audit/entries?cursor=-1",
        "/v1/audit/entries?limit=x",
        "/v1/audit/entries?from=yesterday",
        "/v1/audit/entries?decision=maybe",
        "/v1/audit/proofs/inclusion",
        "/v1/audit/proofs/inclusion?index=999",
        "/v1/audit/proofs/consistency?first=5&second=2",
    ):
        resp = regulator.get(path)
        assert resp.status_code == 400, (path, resp.get_json())
    assert error_code(enterprise.get("/v1/audit/export")) == "forbidden"


def test_checkpoint_and_proofs_verify_independently(rt: Runtime, enterprise: Caller) -> None:
    for _ in range(6):
        enterprise.get("/v1/products")
    first = enterprise.get("/v1/audit/checkpoint").get_json()
    enterprise.get("/v1/products")
    second = enterprise.get("/v1/audit/checkpoint").get_json()
    keys = [note_verifier(k) for k in enterprise.client.get("/v1/keys").get_json()["keys"]]
    cp1, _ = open_checkpoint(first["note"], keys)
    cp2, _ = open_checkpoint(second["note"], keys)
    assert cp2.size > cp1.size and base64.b64encode(cp2.root).decode() == second["root_hash"]

    proof = enterprise.get(f"/v1/audit/proofs/inclusion?index=3&tree_size={cp2.size}").get_json()
    assert (
        verify_inclusion(
            3,
            cp2.size,
            base64.b64decode(proof["leaf_hash"]),
            [base64.b64decode(p) for p in proof["proof"]],
            cp2.root,
            th=rt.suite.tree,
        )
        is None
    )
    cons = enterprise.get(
        f"/v1/audit/proofs/consistency?first={cp1.size}&second={cp2.size}"
    ).get_json()
    proof_hashes = [base64.b64decode(p) for p in cons["proof"]]
    verify_consistency(cp1.size, cp2.size, cp1.root, cp2.root, proof_hashes, th=rt.suite.tree)


def test_export_bundle_verifies_offline(tmp_path: Path, rt: Runtime, regulator: Caller) -> None:
    for _ in range(10):
        regulator.get("/v1/products")
    resp = regulator.get("/v1/audit/export?start=3&end=9")
    assert resp.status_code == 200 and "X-Audit-Index" in resp.headers
    path = tmp_path / "bundle.jsonl"
    path.write_bytes(resp.data)
    resp.close()  # a WSGI server closes the streamed spool file the same way
    lines = [json.loads(x) for x in resp.data.splitlines()]
    assert lines[0]["type"] == "header" and (lines[0]["start"], lines[0]["end"]) == (3, 9)
    assert lines[0]["suite"] == rt.suite.name
    assert lines[1]["type"] == "prefix" and lines[1]["size"] == 3
    report = verify_bundle(path)
    assert report.ok and report.suite == rt.suite.name, report.summary()
    # Flip one byte of one leaf: the verifier names that entry.
    entry = lines[4]
    leaf = bytearray(base64.b64decode(entry["leaf"]))
    leaf[leaf.index(b'"actor"') + 10] ^= 1
    entry["leaf"] = base64.b64encode(bytes(leaf)).decode()
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    bad = verify_bundle(path)
    assert not bad.ok and bad.first_bad_index == entry["index"]


def test_regulator_cosigns_and_the_cosignature_is_served(
    tmp_path: Path, suite: str, regulator: Caller, enterprise: Caller
) -> None:
    enterprise.get("/v1/products")
    cp = regulator.get("/v1/audit/checkpoint").get_json()
    signer = cosigner(regulator.private_pem, "reg-bureau")
    sig = signer.sign(cp["note"].split("\n\n")[0] + "\n", 1_790_000_000)
    cosigned = cp["note"] + sig.line()
    resp = regulator.post("/v1/audit/cosignatures", {"note": cosigned})
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json() == {"witness": "reg-bureau", "line": sig.line().strip(), "created": True}
    # A second cosignature of that checkpoint (a later time) verifies but is not stored:
    # 200 with the line that was kept, not a 201 that would claim it was stored.
    later = signer.sign(cp["note"].split("\n\n")[0] + "\n", 1_790_000_060)
    again = regulator.post("/v1/audit/cosignatures", {"note": cp["note"] + later.line()})
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["line"] == sig.line().strip()
    assert again.get_json()["created"] is False
    served = regulator.get("/v1/audit/checkpoint").get_json()
    assert sig.line().strip() in served["cosigned_note"]
    assert served["cosigned_note"].startswith(cp["note"].split("\n\n")[0])
    forged = (
        cp["note"]
        + fresh_cosigner(suite, "reg-bureau")
        .sign(cp["note"].split("\n\n")[0] + "\n", 1_790_000_000)
        .line()
    )
    assert regulator.post("/v1/audit/cosignatures", {"note": forged}).status_code == 400
    assert enterprise.post("/v1/audit/cosignatures", {"note": cosigned}).status_code == 403


def test_a_witness_cannot_cosign_from_the_future_or_go_back(
    regulator: Caller, enterprise: Caller
) -> None:
    # Third-party clients found both accepted, and the future one became the served
    # cosigned checkpoint.
    import time

    signer = cosigner(regulator.private_pem, "reg-bureau")
    enterprise.get("/v1/products")
    old = regulator.get("/v1/audit/checkpoint").get_json()["note"]
    enterprise.get("/v1/products")
    new = regulator.get("/v1/audit/checkpoint").get_json()["note"]
    now = int(time.time())

    def cosign(note: str, ts: int) -> Any:
        line = signer.sign(note.split("\n\n")[0] + "\n", ts).line()
        return regulator.post("/v1/audit/cosignatures", {"note": note + line})

    ahead = cosign(new, now + 86_400)
    assert ahead.status_code == 400 and "ahead" in ahead.get_json()["error"]["message"]
    assert cosign(new, now).status_code == 201
    back = cosign(old, now)
    assert back.status_code == 400 and "does not go back" in back.get_json()["error"]["message"]
    served = regulator.get("/v1/audit/checkpoint").get_json()["cosigned_note"]
    assert served.startswith(new.split("\n\n")[0])


def test_the_witness_key_name_is_the_regulators_principal_id(regulator: Caller) -> None:
    # A C2SP-style name ("bureau.example/witness") cannot match: principal ids hold no
    # "/", and the cosignature line's name must be the regulator's id (docs/audit.md).
    cp = regulator.get("/v1/audit/checkpoint").get_json()["note"]
    other = cosigner(regulator.private_pem, "bureau.example/witness")
    line = other.sign(cp.split("\n\n")[0] + "\n", 1_790_000_000).line()
    resp = regulator.post("/v1/audit/cosignatures", {"note": cp + line})
    assert resp.status_code == 400
    assert "reg-bureau" in resp.get_json()["error"]["message"]
