"""The sm2-sm3 suite in the regulator's package (DESIGN §13): RFC 9162 with SM3, SM2
signed notes and cosignatures, the log, bundles, the offline verifier and receipts.

The SM2 private keys here come from ``policies.sm2`` (Tongsuo), as in the service; the
package under test verifies with its own implementation (``audit.sm2``, GmSSL)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from audit_helpers import checkpoint_now, make_entry, new_log, sqlite_url

from audit import merkle, verify_bundle
from audit.entry import request_hash, result_hash
from audit.errors import BadCheckpoint, BadProof, BadReceipt, UnsupportedAlgorithm
from audit.hashes import digest_for, sm3
from audit.log import AuditLog
from audit.note import (
    SM2_COSIGNATURE,
    SM2_NOTE,
    CosignatureSigner,
    CosignatureVerifier,
    NoteSigner,
    SM2CosignatureVerifier,
    SM2NoteVerifier,
    checkpoint_text,
    cosignature_verifier,
    cosignature_verifier_from_vkey,
    key_id,
    note_verifier,
    note_verifier_from_vkey,
    open_checkpoint,
    open_note,
)
from audit.receipts import check_receipt, receipt_claims
from audit.suites import suite_named
from audit.witness import WitnessState, witness_checkpoint
from policies.sm2 import SM2PrivateKey

SM3 = merkle.tree_hash("sm3")
ORIGIN = "public-data-sandbox/audit"


def sm2_signer(name: str = ORIGIN) -> NoteSigner:
    return NoteSigner(SM2PrivateKey.generate(), name)


# --------------------------------------------------------------------------- hashing


def test_sm3_tree_is_rfc9162_with_sm3() -> None:
    a, b, c = b"a", b"b", b"c"
    la, lb, lc = (sm3(b"\x00" + x) for x in (a, b, c))
    assert SM3.leaf(a) == la and SM3.empty == sm3(b"")
    assert SM3.node(la, lb) == sm3(b"\x01" + la + lb)
    # Split rule: largest power of two below n (RFC 9162 §2.1.1).
    assert merkle.root([la, lb, lc], th=SM3) == sm3(b"\x01" + sm3(b"\x01" + la + lb) + lc)
    assert merkle.root([la, lb, lc], th=SM3) != merkle.root([la, lb, lc])
    assert merkle.root([], th=SM3) == sm3(b"")


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 17])
def test_sm3_proofs_round_trip_and_refuse_sha256(n: int) -> None:
    leaves = [SM3.leaf(bytes([i])) for i in range(n)]
    root = merkle.root(leaves, th=SM3)
    for i in range(n):
        proof = merkle.inclusion_proof(i, leaves, th=SM3)
        merkle.verify_inclusion(i, n, leaves[i], proof, root, th=SM3)
        if n > 1:  # one node hash at least: the wrong hash function cannot pass
            with pytest.raises(BadProof):
                merkle.verify_inclusion(i, n, leaves[i], proof, root)
    for m in range(1, n):
        proof = merkle.consistency_proof(m, leaves, th=SM3)
        old = merkle.root(leaves[:m], th=SM3)
        merkle.verify_consistency(m, n, old, root, proof, th=SM3)
    cr = merkle.CompactRange(th=SM3)
    for h in leaves:
        cr.append(h)
    assert cr.root() == root and cr.copy().root() == root


def test_request_and_result_hashes_follow_the_suite() -> None:
    digest = digest_for("sm3")
    want = sm3(b"POST\n/v1/x\n{}").hex()
    assert request_hash("post", "/v1/x", b"{}", digest=digest) == want
    assert request_hash("POST", "/v1/x", b"{}") != want  # SHA-256 by default
    assert result_hash({"match": True, "receipt": "x"}, digest=digest) == (
        sm3(b'{"match":true}').hex()
    )
    with pytest.raises(UnsupportedAlgorithm):
        digest_for("md5")
    with pytest.raises(UnsupportedAlgorithm):
        suite_named("rsa-sha1")


# --------------------------------------------------------------------------- notes


def test_sm2_note_signature_key_type_and_vkey() -> None:
    signer = sm2_signer()
    text = checkpoint_text(ORIGIN, 3, b"\x07" * 32, "2026-01-01T00:00:00.000Z")
    note = signer.sign_note(text)
    verifier = signer.verifier()
    assert isinstance(verifier, SM2NoteVerifier) and verifier.key_type == "SM2"
    assert signer.key_id == key_id(ORIGIN, SM2_NOTE, signer.public_key)
    assert SM2_NOTE == b"\xffpds/sm2-sm3"  # documented in docs/audit.md
    open_checkpoint(note, [verifier])
    # From its vkey and from its JWK, as a regulator would pin it.
    vkey = signer.vkey()
    assert base64.b64decode(vkey.split("+", 2)[2]).startswith(SM2_NOTE + b"\x04")
    assert note_verifier_from_vkey(vkey).key_id == signer.key_id
    jwk = signer.public_jwk()
    assert (jwk["kty"], jwk["crv"], jwk["name"]) == ("EC", "SM2", ORIGIN)
    open_note(note, [note_verifier(jwk)])
    # Another SM2 key of the same name, or an altered text, does not verify.
    with pytest.raises(BadCheckpoint):
        open_note(note, [sm2_signer().verifier()])
    with pytest.raises(BadCheckpoint):
        open_note(note.replace("\n3\n", "\n4\n"), [verifier])
    # An Ed25519 vkey is not read as SM2 and the reverse.
    ed = NoteSigner.generate(ORIGIN)
    assert type(note_verifier_from_vkey(ed.vkey())) is not SM2NoteVerifier
    with pytest.raises(BadCheckpoint):
        SM2NoteVerifier.from_vkey(ed.vkey())


def test_sm2_cosignatures_and_witness() -> None:
    log_signer = sm2_signer()
    witness = CosignatureSigner(SM2PrivateKey.generate(), "reg-bureau")
    assert witness.key_id == key_id("reg-bureau", SM2_COSIGNATURE, witness.public_key)
    leaves = [SM3.leaf(bytes([i])) for i in range(6)]
    first = log_signer.sign_note(checkpoint_text(ORIGIN, 4, merkle.root(leaves[:4], th=SM3), None))
    seen = witness_checkpoint(
        first,
        log_keys=[log_signer.verifier()],
        cosigner=witness,
        state=None,
        proof=[],
        now=1_800_000_000,
        suite="sm2-sm3",
    )
    assert seen.state.suite == "sm2-sm3"
    assert WitnessState.from_json(seen.state.to_json()) == seen.state
    verifier = cosignature_verifier(witness.public_jwk())
    assert isinstance(verifier, SM2CosignatureVerifier)
    assert isinstance(cosignature_verifier_from_vkey(witness.vkey()), SM2CosignatureVerifier)
    sig = next(s for s in open_note(seen.note, [verifier]).signatures if verifier.matches(s))
    assert verifier.timestamp(seen.checkpoint.text(), sig) == 1_800_000_000
    second = log_signer.sign_note(checkpoint_text(ORIGIN, 6, merkle.root(leaves, th=SM3), None))
    proof = merkle.consistency_proof(4, leaves, th=SM3)
    witness_checkpoint(
        second,
        log_keys=[log_signer.verifier()],
        cosigner=witness,
        state=seen.state,
        proof=proof,
        now=1_800_000_060,
        suite="sm2-sm3",
    )
    # A witness never follows a log that changes suite, and a SHA-256 proof fails.
    with pytest.raises(BadCheckpoint, match="never changes suite"):
        witness_checkpoint(
            second,
            log_keys=[log_signer.verifier()],
            cosigner=witness,
            state=seen.state,
            proof=proof,
            now=1_800_000_060,
        )
    with pytest.raises(BadProof):
        witness_checkpoint(
            second,
            log_keys=[log_signer.verifier()],
            cosigner=witness,
            state=seen.state,
            proof=merkle.consistency_proof(4, leaves),
            now=1_800_000_060,
            suite="sm2-sm3",
        )
    assert issubclass(SM2CosignatureVerifier, CosignatureVerifier)


# --------------------------------------------------------------------------- the log


def test_sm2_sm3_log_export_and_offline_verification(tmp_path: Path) -> None:
    signer = sm2_signer()
    log = new_log(sqlite_url(tmp_path), signer, suite="sm2-sm3")
    assert isinstance(log, AuditLog)
    appended = [log.append(make_entry(i)) for i in range(9)]
    assert appended[3].leaf_hash == SM3.leaf(appended[3].leaf)
    assert json.loads(appended[4].leaf)["prev"] == appended[3].leaf_hash.hex()
    cp = checkpoint_now(log)
    size = cp.size  # type: ignore[attr-defined]
    root = log.root(size)
    assert root == merkle.root([SM3.leaf(log.leaf(i)) for i in range(size)], th=SM3)
    proof = log.inclusion_proof(2, size)
    merkle.verify_inclusion(2, size, proof.leaf_hash, proof.proof, root, th=SM3)
    cons = log.consistency_proof(3, size)
    merkle.verify_consistency(3, size, cons.first_root, root, cons.proof, th=SM3)

    out = io.BytesIO()
    log.export(out, start=2, end=size)
    path = tmp_path / "sm2.jsonl"
    path.write_bytes(out.getvalue())
    header = json.loads(out.getvalue().splitlines()[0])
    assert header["suite"] == "sm2-sm3" and header["keys"][0]["crv"] == "SM2"
    report = verify_bundle(path, trusted_keys=[signer.verifier()])
    assert report.ok and report.suite == "sm2-sm3", report.summary()
    assert "(sm2-sm3)" in report.summary()

    # A header that names the wrong suite for its keys, or an unknown suite, fails.
    lines = out.getvalue().splitlines()
    for suite, message in (("ed25519-sha256", "Ed25519 keys"), ("sm9", "unknown")):
        bad = dict(header, suite=suite)
        (tmp_path / "bad.jsonl").write_bytes(b"\n".join([json.dumps(bad).encode(), *lines[1:]]))
        got = verify_bundle(tmp_path / "bad.jsonl")
        assert not got.ok and message in got.errors[0], got.errors


def test_a_log_signs_with_its_suites_key_type(tmp_path: Path) -> None:
    engine = sa.create_engine(sqlite_url(tmp_path))
    try:
        with pytest.raises(BadCheckpoint, match="SM2"):
            AuditLog(engine, suite="sm2-sm3", signer=NoteSigner.generate(ORIGIN))
        with pytest.raises(BadCheckpoint, match="Ed25519"):
            AuditLog(engine, signer=sm2_signer())  # default suite: ed25519-sha256
    finally:
        engine.dispose()


def test_sm2sm3_receipts_offline() -> None:
    key = SM2PrivateKey.generate()
    signer = NoteSigner(key, ORIGIN)
    jwks = {"keys": [{**signer.public_jwk("k1"), "alg": "SM2SM3"}]}
    leaf = b'{"index":0}'
    response = {"match": True}
    claims = receipt_claims(
        iss="platform",
        iat=1,
        audit_index=0,
        leaf_hash=SM3.leaf(leaf),
        request_hash="0" * 64,
        result_hash=result_hash(response, digest=sm3),
    )

    def jws(alg: str, kid: str = "k1") -> str:
        def b64(raw: bytes) -> str:
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        head = b64(json.dumps({"alg": alg, "kid": kid, "typ": "pds-receipt+jwt"}).encode())
        body = b64(json.dumps(claims).encode())
        return f"{head}.{body}.{b64(key.sign(f'{head}.{body}'.encode()))}"

    got = check_receipt(jws("SM2SM3"), jwks, leaf=leaf, response=response)
    assert got["leaf_hash"] == SM3.leaf(leaf).hex()
    with pytest.raises(BadReceipt, match="result_hash"):
        check_receipt(jws("SM2SM3"), jwks, response={"match": False})
    # The algorithm is pinned to the key's type: an SM2 key cannot back an EdDSA receipt.
    with pytest.raises(BadReceipt):
        check_receipt(jws("EdDSA"), jwks)
    with pytest.raises(BadReceipt, match="not EdDSA or SM2SM3"):
        check_receipt(jws("ES256"), jwks)


def test_hostile_sm2_keys_and_signatures_in_notes() -> None:
    signer = sm2_signer()
    text = checkpoint_text(ORIGIN, 1, b"\x02" * 32, None)
    verifier = signer.verifier()
    good = signer.sign(text)
    # A signature line of the right key with a short, long or zero signature.
    for raw in (good.signature[:63], good.signature + b"\x00", b"\x00" * 64):
        bad = type(good)(good.name, good.key_id, raw)
        with pytest.raises(BadCheckpoint):
            verifier.verify(text, bad)
    # vkeys: another 0xff identifier, a point off the curve, a truncated point.
    name, kid, b64 = signer.vkey().split("+", 2)
    raw = base64.b64decode(b64)
    point = raw[len(SM2_NOTE) :]
    for forged in (
        b"\xffpds/sm2-sm4" + point,
        SM2_NOTE + point[:-1] + bytes([point[-1] ^ 1]),
        SM2_NOTE + point[:33],
    ):
        with pytest.raises(BadCheckpoint):
            note_verifier_from_vkey(f"{name}+{kid}+{base64.b64encode(forged).decode()}")
    # JWKs: off-curve, wrong lengths, not base64url, unknown curve.
    jwk = signer.public_jwk()
    for bad_jwk in (
        {**jwk, "y": jwk["x"]},
        {**jwk, "x": jwk["x"][:-2]},
        {**jwk, "x": "!!"},
        {**jwk, "crv": "P-256"},
    ):
        with pytest.raises(BadCheckpoint):
            note_verifier(bad_jwk)
    with pytest.raises(BadCheckpoint):
        cosignature_verifier({**jwk, "kty": "OKP"})
