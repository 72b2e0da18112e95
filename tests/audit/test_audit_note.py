"""C2SP signed notes, checkpoints and cosignatures (DESIGN §7)."""

from __future__ import annotations

import base64

import jwt
import pytest
from Crypto.PublicKey import ECC

from audit.errors import BadCheckpoint, BadReceipt, BadSignature
from audit.note import (
    Checkpoint,
    CosignatureSigner,
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
    checkpoint_text,
    key_id,
    open_checkpoint,
    open_note,
    parse_note,
)
from audit.receipts import check_receipt, receipt_claims

# golang.org/x/mod/sumdb/note's published example (key, text and signature).
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SEED_B64 = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
# transparency-dev/formats: a vkey of type 0x04 (tlog-cosignature/v1).
COSIG_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"


def test_go_signed_note_known_answer() -> None:
    v = NoteVerifier.from_vkey(GO_VKEY)
    assert open_note(GO_NOTE, [v]).text == GO_TEXT
    seed = base64.b64decode(GO_SEED_B64)[1:]
    signer = NoteSigner(ECC.construct(curve="Ed25519", seed=seed), "PeterNeumann")
    assert signer.sign_note(GO_TEXT) == GO_NOTE  # Ed25519 is deterministic
    assert signer.vkey() == GO_VKEY
    with pytest.raises(BadSignature):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), [v])


def test_cosignature_vkey_and_key_ids() -> None:
    c = CosignatureVerifier.from_vkey(COSIG_VKEY)
    assert c.vkey() == COSIG_VKEY and c.key_id.hex() == "da77ade7"
    with pytest.raises(BadCheckpoint):
        NoteVerifier.from_vkey(COSIG_VKEY)  # type 0x04 is not a note key
    with pytest.raises(BadCheckpoint):
        NoteVerifier.from_vkey(GO_VKEY.replace("c74f20a3", "c74f20a4"))
    assert key_id("a", 1, b"\0" * 32) != key_id("a", 4, b"\0" * 32)


def test_checkpoint_sign_open_and_formats(signer: NoteSigner) -> None:
    text = checkpoint_text(signer.name, 5, b"\x07" * 32, "2026-11-23T11:02:29.123Z")
    assert text.splitlines()[3] == "time 2026-11-23T11:02:29.123Z"
    note = signer.sign_note(text)
    assert note.startswith(text + "\n\u2014 " + signer.name + " ")
    jwk = signer.public_jwk(kid="k1")
    assert jwk["kid"] == "k1" and jwk["name"] == signer.name and jwk["crv"] == "Ed25519"
    for v in (
        signer.verifier(),
        NoteVerifier.from_jwk(jwk),
        NoteVerifier.from_key(signer.name, signer.public_pem()),
        NoteVerifier.from_vkey(signer.vkey()),
    ):
        cp, _ = open_checkpoint(note, [v], origin=signer.name)
        assert (cp.size, cp.root, cp.time) == (5, b"\x07" * 32, "2026-11-23T11:02:29.123Z")
    other = NoteSigner.generate("someone-else")
    with pytest.raises(BadCheckpoint, match="not signed by any trusted key"):
        open_checkpoint(note, [other.verifier()])
    with pytest.raises(BadCheckpoint):
        open_checkpoint(note, [signer.verifier()], origin="another/log")
    assert NoteSigner.from_pem(signer.private_pem(), signer.name).vkey() == signer.vkey()


@pytest.mark.parametrize(
    "bad",
    [
        "origin\n5\nAAAA\n\n\u2014 k AAAAAAAAAAAA\n",  # root not 32 bytes
        "origin\n05\n" + "A" * 43 + "=\n\n\u2014 k AAAAAAAAAAAA\n",  # leading zero
        "origin\n5\n" + "A" * 43 + "=\n\n",  # no signature
        "origin\n5\n" + "A" * 43 + "=\n\n- k AAAAAAAAAAAA\n",  # not an em dash
        "origin\n5\n" + "A" * 43 + "=\n\n\u2014 k AAAAAAAAAAAA",  # no final newline
        "orig\tin\n5\n" + "A" * 43 + "=\n\n\u2014 k AAAAAAAAAAAA\n",  # control character
    ],
)
def test_malformed_notes(bad: str) -> None:
    with pytest.raises(BadCheckpoint):
        Checkpoint.parse(parse_note(bad).text)


def test_cosignature_round_trip_and_tamper(signer: NoteSigner) -> None:
    w = CosignatureSigner.generate("regulator.example/w")
    note = parse_note(signer.sign_note(checkpoint_text(signer.name, 1, b"\1" * 32, None)))
    sig = w.sign(note.text, 1_727_964_367)
    assert len(sig.signature) == 72 and sig.signature[:8] == (1_727_964_367).to_bytes(8, "big")
    v = w.verifier()
    assert v.timestamp(note.text, sig) == 1_727_964_367
    with pytest.raises(BadSignature):
        v.timestamp(note.text.replace("\n1\n", "\n2\n"), sig)
    with pytest.raises(BadCheckpoint):
        w.sign(note.text)  # a cosignature needs its timestamp


def test_receipts_signed_by_pyjwt_check_offline(signer: NoteSigner) -> None:
    response = {"match": True, "receipt": "ignored"}
    from audit.entry import result_hash

    claims = receipt_claims(
        iss="public-data-sandbox",
        iat=1_790_000_000,
        audit_index=7,
        leaf_hash=b"\x11" * 32,
        request_hash="a" * 64,
        result_hash=result_hash(response),
        request_id="r-1",
    )
    key = signer.private_pem()
    jwks = {"keys": [signer.public_jwk(kid="k1")]}
    token = jwt.encode(
        claims, key, algorithm="EdDSA", headers={"kid": "k1", "typ": "pds-receipt+jwt"}
    )
    assert check_receipt(token, jwks, issuer="public-data-sandbox", response=response) == claims
    bad_tokens = [
        jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "k2", "typ": "pds-receipt+jwt"}),
        jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "k1", "typ": "JWT"}),
        jwt.encode(
            claims | {"audit_index": -1},
            key,
            algorithm="EdDSA",
            headers={"kid": "k1", "typ": "pds-receipt+jwt"},
        ),
        jwt.encode(
            {k: v for k, v in claims.items() if k != "leaf_hash"},
            key,
            algorithm="EdDSA",
            headers={"kid": "k1", "typ": "pds-receipt+jwt"},
        ),
        jwt.encode(
            claims,
            "secret-secret-secret-secret-32by",
            algorithm="HS256",
            headers={"kid": "k1", "typ": "pds-receipt+jwt"},
        ),
        token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
        "not-a-jws",
    ]
    for bad in bad_tokens:
        with pytest.raises(BadReceipt):
            check_receipt(bad, jwks)
    with pytest.raises(BadReceipt):
        check_receipt(token, jwks, issuer="someone-else")
    with pytest.raises(BadReceipt):
        check_receipt(token, jwks, response={"match": False})
    with pytest.raises(BadReceipt):
        check_receipt(token, jwks, leaf=b"x")
