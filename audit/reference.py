"""A reference verifier of audit bundles, written to be read, not to be fast.

It follows the specifications directly — RFC 9162 §2.1's recursive Merkle tree hash,
C2SP signed-note and tlog-checkpoint, DESIGN §7's bundle lines — with no code shared
with the rest of this package, so that a regulator can read it in a few minutes and
check the fast verifier (``audit/verify.py``) against it; the test suite does so on
random bundles and random tampering. It answers one question: does a checkpoint of
the bundle's size that a trusted key signed commit to exactly these entries? It does
not name the first bad index (the fast verifier does), and it reads bundles of the
``ed25519-sha256`` suite only (``sm2-sm3`` bundles: the fast verifier).

    python -c "from audit.reference import verify; print(verify('bundle.jsonl'))"
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from Crypto.Signature import eddsa


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 9162 §2.1.1: SHA-256(0x00 || leaf)."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree_hash(hashes: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH over leaf hashes: split at the largest power of two smaller
    than n, hash the two halves, hash them together."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return node_hash(tree_hash(hashes[:k]), tree_hash(hashes[k:]))


def root_with_prefix(prefix: list[bytes], start: int, leaves: list[bytes]) -> bytes:
    """The root of ``start + len(leaves)`` leaves when the first ``start`` are known only
    as the roots of their perfect subtrees, largest first (DESIGN §7 "prefix" line).

    Each prefix hash stands for a perfect subtree of 2^k leaves; those subtrees are
    exactly the nodes of the full tree that cover ``[0, start)``, so the root is
    ``tree_hash`` over a list where every prefix hash takes the place of its leaves.
    """
    sizes = [1 << bit for bit in range(start.bit_length() - 1, -1, -1) if start >> bit & 1]
    if len(sizes) != len(prefix):
        raise ValueError("the prefix does not have one hash per set bit of start")
    blocks: list[tuple[int, bytes]] = list(zip(sizes, prefix, strict=True))
    blocks += [(1, h) for h in leaves]
    return _blocks_hash(blocks)


def _blocks_hash(blocks: list[tuple[int, bytes]]) -> bytes:
    # Like tree_hash, over blocks of known sizes that never straddle a split point.
    if len(blocks) == 1:
        return blocks[0][1]
    n = sum(size for size, _ in blocks)
    k = 1
    while k * 2 < n:
        k *= 2
    covered, i = 0, 0
    while covered < k:
        covered += blocks[i][0]
        i += 1
    if covered != k:
        raise ValueError("the prefix does not split where the tree does")
    return node_hash(_blocks_hash(blocks[:i]), _blocks_hash(blocks[i:]))


def signed_note_ok(note: str, keys: dict[str, bytes], size: int, root: bytes) -> bool:
    """Whether ``note`` is a checkpoint of ``size`` and ``root`` (C2SP tlog-checkpoint)
    with an Ed25519 signature line (C2SP signed-note) by one of ``keys`` (name → raw
    32-byte public key)."""
    text, sep, signatures = note.partition("\n\n")
    if not sep:
        return False
    body = text + "\n"
    lines = text.split("\n")
    if len(lines) < 3 or lines[1] != str(size) or lines[2] != base64.b64encode(root).decode():
        return False
    for line in signatures.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "\u2014" or parts[1] not in keys:
            continue
        name, blob = parts[1], base64.b64decode(parts[2])
        public = keys[name]
        key_id = hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4]
        if blob[:4] != key_id:
            continue
        verifier = eddsa.new(eddsa.import_public_key(public), "rfc8032")
        try:
            verifier.verify(body.encode(), blob[4:])
        except ValueError:
            continue
        return True
    return False


def verify(bundle: str | Path, trusted: dict[str, bytes] | None = None) -> bool:
    """True if a checkpoint of the bundle's ``end``, signed by a trusted key, commits to
    the bundle's entries. ``trusted`` maps key names to raw Ed25519 public keys
    (default: the header's keys, which proves only self-consistency)."""
    try:
        lines = [json.loads(line) for line in Path(bundle).read_bytes().splitlines() if line]
        header = lines[0]
        if header.get("type") != "header":
            return False
        start, end = header["start"], header["end"]
        keys = trusted or {
            k["name"]: base64.urlsafe_b64decode(k["x"] + "==")
            for k in header["keys"]
            if k.get("kty") == "OKP" and k.get("crv") == "Ed25519"
        }
        body = lines[1:]
        prefix: list[bytes] = []
        if start > 0:
            if body[0].get("type") != "prefix" or body[0]["size"] != start:
                return False
            prefix = [base64.b64decode(h) for h in body[0]["hashes"]]
            body = body[1:]
        entries = [r for r in body if r.get("type") == "entry"]
        if [r["index"] for r in entries] != list(range(start, end)):
            return False
        hashes = []
        for record in entries:
            leaf = base64.b64decode(record["leaf"], validate=True)
            if json.loads(leaf).get("index") != record["index"]:
                return False
            hashes.append(leaf_hash(leaf))
        root = root_with_prefix(prefix, start, hashes) if start else tree_hash(hashes)
        notes = [r["note"] for r in body if r.get("type") == "checkpoint"]
        return any(signed_note_ok(n, keys, end, root) for n in notes)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return False
