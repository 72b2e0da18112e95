"""Interoperability: an INDEPENDENT verifier, written here from the specifications with
``cryptography``'s Ed25519 and hand-written RFC 9162 code (sharing nothing with
``audit``), accepts the project's checkpoints and proofs, and produces cosignatures the
project accepts (DESIGN §2.6)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from audit_helpers import in_entry, make_entry, new_log, sqlite_url
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.log import AuditLog
from audit.note import CosignatureVerifier, NoteSigner

# ----------------------------------------------------------- independent implementation


def h_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\0" + data).digest()


def h_node(a: bytes, b: bytes) -> bytes:
    return hashlib.sha256(b"\1" + a + b).digest()


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, recursively."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return h_leaf(leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return h_node(mth(leaves[:k]), mth(leaves[k:]))


def ind_verify_inclusion(m: int, n: int, leaf_h: bytes, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2, written as a recursion over the tree shape."""

    def walk(m: int, n: int, path: list[bytes]) -> bytes | None:
        if n == 1:
            return leaf_h if not path else None
        if not path:
            return None
        k = 1
        while k * 2 < n:
            k *= 2
        *rest, sibling = path
        if m < k:
            sub = walk(m, k, rest)
            return None if sub is None else h_node(sub, sibling)
        sub = walk(m - k, n - k, rest)
        return None if sub is None else h_node(sibling, sub)

    return 0 <= m < n and walk(m, n, path) == root


def ind_verify_consistency(m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 §2.1.4: recompute both roots from SUBPROOF's structure."""

    def walk(m: int, n: int, proof: list[bytes], whole: bool) -> tuple[bytes, bytes] | None:
        # returns (hash of the first m leaves' part, hash of all n) for this subtree
        if m == n:
            if whole:
                return (r1, r1) if not proof else None
            return (proof[0], proof[0]) if len(proof) == 1 else None
        if not proof:
            return None
        k = 1
        while k * 2 < n:
            k *= 2
        *rest, last = proof
        if m <= k:
            sub = walk(m, k, rest, whole)
            return None if sub is None else (sub[0], h_node(sub[1], last))
        sub = walk(m - k, n - k, rest, False)
        return None if sub is None else (h_node(last, sub[0]), h_node(last, sub[1]))

    if not 0 < m < n:
        return False
    got = walk(m, n, proof, True)
    return got is not None and got == (r1, r2)


def ind_key_id(name: str, kind: int, pub: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + pub).digest()[:4]


def ind_open_checkpoint(note: str, name: str, pub: Ed25519PublicKey) -> tuple[str, int, bytes]:
    text, _, sigs = note.rpartition("\n\n")
    text += "\n"
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ok = False
    for line in sigs.splitlines():
        dash, who, b64 = line.split(" ")
        blob = base64.b64decode(b64)
        if dash == "\u2014" and who == name and blob[:4] == ind_key_id(name, 1, raw):
            pub.verify(blob[4:], text.encode())  # raises InvalidSignature
            ok = True
    assert ok, "no signature by the log key"
    origin, size, root = text.splitlines()[:3]
    return origin, int(size), base64.b64decode(root)


# ------------------------------------------------------------------------------- tests


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    lg = new_log(sqlite_url(tmp_path), NoteSigner.generate("public-data-sandbox/audit"))
    assert isinstance(lg, AuditLog)
    return lg


def test_independent_verifier_accepts_checkpoint_and_proofs(log: AuditLog) -> None:
    assert log.signer is not None
    pub = serialization.load_pem_public_key(log.signer.public_pem().encode())
    assert isinstance(pub, Ed25519PublicKey)
    leaves = [log.append(make_entry(i)).leaf for i in range(13)]
    old = log.checkpoint()
    leaves += [log.append(make_entry(i)).leaf for i in range(13, 29)]
    new = log.checkpoint()
    origin, size, root = ind_open_checkpoint(new.note, log.signer.name, pub)
    assert (origin, size, root) == (log.origin, 29, mth(leaves))
    _, size1, root1 = ind_open_checkpoint(old.note, log.signer.name, pub)
    assert root1 == mth(leaves[:13])
    for i in range(size):
        p = log.inclusion_proof(i, size)
        assert ind_verify_inclusion(i, size, h_leaf(leaves[i]), p.proof, root)
        assert not ind_verify_inclusion(i, size, h_leaf(leaves[i] + b" "), p.proof, root)
    c = log.consistency_proof(size1, size)
    assert ind_verify_consistency(size1, size, root1, root, c.proof)
    assert not ind_verify_consistency(size1, size, root, root1, c.proof)
    for m in range(1, size):
        assert ind_verify_consistency(
            m, size, mth(leaves[:m]), root, log.consistency_proof(m, size).proof
        )
    tampered = new.note.replace("\n29\n", "\n28\n")
    with pytest.raises(InvalidSignature):
        ind_open_checkpoint(tampered, log.signer.name, pub)


def test_independent_cosignature_is_accepted(log: AuditLog) -> None:
    for i in range(3):
        log.append(make_entry(i))
    cp = log.checkpoint()
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    name = "witness.regulator.example"
    text = cp.note.rpartition("\n\n")[0] + "\n"
    ts = 1_790_000_000
    sig = key.sign(b"cosignature/v1\ntime %d\n" % ts + text.encode())
    blob = ind_key_id(name, 4, raw) + ts.to_bytes(8, "big") + sig
    cosigned = cp.note + f"\u2014 {name} {base64.b64encode(blob).decode()}\n"
    verifier = CosignatureVerifier(name, raw)
    stored = in_entry(log, lambda tx: tx.add_cosignature(cosigned, verifier))
    with log.engine.connect() as conn:
        assert stored.line in log.cosigned_note(conn, cp)
