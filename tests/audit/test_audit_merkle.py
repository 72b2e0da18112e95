"""RFC 9162 §2.1 hashing and proofs, against published vectors and as properties."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit import merkle
from audit.errors import BadProof

# RFC 6962 reference tree (from the vectors' README): leaf inputs and roots by size.
RFC6962_LEAVES = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
RFC6962_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def b64(s: str | None) -> bytes:
    return base64.b64decode(s or "")


def load(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    cases = sorted(folder.rglob("*.json"))
    assert cases, f"no vectors under {folder}"
    return [(str(p.relative_to(folder)), json.loads(p.read_text())) for p in cases]


def test_rfc6962_reference_roots() -> None:
    hashes = [merkle.leaf_hash(bytes.fromhex(x)) for x in RFC6962_LEAVES]
    for size, want in enumerate(RFC6962_ROOTS):
        assert merkle.root(hashes[:size]).hex() == want


def test_rfc6962_reference_proofs_roundtrip() -> None:
    hashes = [merkle.leaf_hash(bytes.fromhex(x)) for x in RFC6962_LEAVES]
    for size in range(1, 9):
        r = bytes.fromhex(RFC6962_ROOTS[size])
        for i in range(size):
            merkle.verify_inclusion(i, size, hashes[i], merkle.inclusion_proof(i, hashes[:size]), r)
        for first in range(1, size + 1):
            proof = merkle.consistency_proof(first, hashes[:size])
            merkle.verify_consistency(first, size, bytes.fromhex(RFC6962_ROOTS[first]), r, proof)


def test_inclusion_vectors(vectors: Path) -> None:
    cases = load(vectors / "merkle" / "inclusion")
    assert len(cases) >= 98
    for name, c in cases:
        proof = [b64(p) for p in c["proof"] or []]
        args = (c["leafIdx"], c["treeSize"], b64(c["leafHash"]), proof, b64(c["root"]))
        if c["wantErr"]:
            with pytest.raises(BadProof):
                merkle.verify_inclusion(*args)
        else:
            merkle.verify_inclusion(*args)
        assert name


def test_consistency_vectors(vectors: Path) -> None:
    cases = load(vectors / "merkle" / "consistency")
    assert len(cases) >= 98
    for _name, c in cases:
        proof = [b64(p) for p in c["proof"] or []]
        args = (c["size1"], c["size2"], b64(c["root1"]), b64(c["root2"]), proof)
        if c["wantErr"]:
            with pytest.raises(BadProof):
                merkle.verify_consistency(*args)
        else:
            merkle.verify_consistency(*args)


def test_argon2020_certificate_transparency(vectors: Path) -> None:
    """Real proofs from Google's Argon2020 CT log (first=3654490 per the vectors' source)."""
    base = vectors / "argon2020"
    sth = json.loads((base / "sth.json").read_text())
    size, root = sth["tree_size"], b64(sth["sha256_root_hash"])
    leaf = b64(json.loads((base / "entries.json").read_text())["entries"][0]["leaf_input"])
    rp = json.loads((base / "proof.json").read_text())
    path = [b64(p) for p in rp["audit_path"]]
    merkle.verify_inclusion(rp["leaf_index"], size, merkle.leaf_hash(leaf), path, root)
    with pytest.raises(BadProof):
        merkle.verify_inclusion(rp["leaf_index"] + 1, size, merkle.leaf_hash(leaf), path, root)
    cons = [b64(p) for p in json.loads((base / "consistency.json").read_text())["consistency"]]
    old = b64("AuIZ5V6sDUj1vn3Y1K85oOaQ7y+FJJKtyRTl1edIKBQ=")
    merkle.verify_consistency(3654490, size, old, root, cons)
    with pytest.raises(BadProof):
        merkle.verify_consistency(3654491, size, old, root, cons)


def _hashes(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


@given(st.integers(1, 300), st.data())
def test_every_inclusion_proof_verifies_and_mutations_fail(n: int, data: st.DataObject) -> None:
    hashes = _hashes(n)
    r = merkle.root(hashes)
    i = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(i, hashes)
    merkle.verify_inclusion(i, n, hashes[i], proof, r)
    with pytest.raises(BadProof):
        merkle.verify_inclusion(i, n, merkle.leaf_hash(b"other"), proof, r)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[j] = bytes([bad[j][0] ^ 1]) + bad[j][1:]
        with pytest.raises(BadProof):
            merkle.verify_inclusion(i, n, hashes[i], bad, r)
        with pytest.raises(BadProof):
            merkle.verify_inclusion(i, n, hashes[i], proof[:-1], r)
    with pytest.raises(BadProof):
        merkle.verify_inclusion(i, n, hashes[i], [*proof, r], r)
    if n > 1:
        k = data.draw(st.integers(0, n - 1).filter(lambda k: k != i))
        with pytest.raises(BadProof):
            merkle.verify_inclusion(k, n, hashes[i], proof, r)


@given(st.integers(1, 300), st.data())
def test_every_consistency_proof_verifies_and_mutations_fail(n: int, data: st.DataObject) -> None:
    hashes = _hashes(n)
    m = data.draw(st.integers(1, n))
    r1, r2 = merkle.root(hashes[:m]), merkle.root(hashes)
    proof = merkle.consistency_proof(m, hashes)
    merkle.verify_consistency(m, n, r1, r2, proof)
    if m < n:
        with pytest.raises(BadProof):
            merkle.verify_consistency(m, n, r2, r2, proof)
        with pytest.raises(BadProof):
            merkle.verify_consistency(m, n, r1, r1, proof)
        j = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[j] = bytes([bad[j][0] ^ 0x80]) + bad[j][1:]
        with pytest.raises(BadProof):
            merkle.verify_consistency(m, n, r1, r2, bad)
        with pytest.raises(BadProof):
            merkle.verify_consistency(m, n, r1, r2, proof[1:])


@given(st.integers(0, 2000), st.integers(0, 300))
def test_compact_range_extends_to_the_root(start: int, more: int) -> None:
    hashes = _hashes(start + more)
    prefix = merkle.compact_range(hashes[:start])
    assert len(prefix) == start.bit_count()
    want = [
        merkle.subtree_hash(hashes, i << lv, (i + 1) << lv)
        for lv, i in (merkle.perfect_subtrees(0, start) if start else [])
    ]
    assert prefix == want
    got = merkle.root_from_compact_range(start, prefix, hashes[start:])
    assert got == merkle.root(hashes)


@given(st.integers(0, 1 << 40), st.integers(1, 1 << 20))
def test_perfect_subtrees_tile_the_range(start: int, length: int) -> None:
    end = start + length
    pos = start
    for level, idx in merkle.perfect_subtrees(start, end):
        assert idx << level == pos
        pos += 1 << level
    assert pos == end
