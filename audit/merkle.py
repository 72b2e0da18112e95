"""RFC 9162 §2.1 Merkle tree hashing, proofs and their verification (pure functions).

Hashes are raw 32-byte digests: SHA-256 by default, or SM3 for a deployment of the
``sm2-sm3`` suite (DESIGN §13), with the RFC's structure and prefixes unchanged. Every
function takes the tree hash as ``th`` (a :class:`TreeHash`, default :data:`SHA256`);
the module-level ``leaf_hash``/``node_hash`` are SHA-256's. Subtrees are named by
half-open leaf ranges ``(start, end)``; a *perfect* subtree is ``(level, idx)`` covering leaves
``[idx * 2**level, (idx + 1) * 2**level)``.

Proof generation is written against the ranges the RFC's recursion visits, so the same
code serves an in-memory list of leaf hashes (``inclusion_proof``) and a store that keeps
perfect-subtree hashes (``audit.log``): ``inclusion_ranges``/``consistency_ranges`` say
which subtree hashes a proof consists of, ``perfect_subtrees`` splits each range into
stored nodes, and ``fold`` combines them.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from audit.errors import BadProof
from audit.hashes import digest_for

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "SHA256",
    "CompactRange",
    "TreeHash",
    "compact_range",
    "consistency_proof",
    "consistency_ranges",
    "fold",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "perfect_subtrees",
    "root",
    "root_from_compact_range",
    "root_from_inclusion_proof",
    "subtree_hash",
    "tree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
#: MTH({}) = SHA-256() (RFC 9162 §2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(leaf: bytes) -> bytes:
    """Return ``SHA-256(0x00 || leaf)`` (RFC 9162 §2.1.1)."""
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return ``SHA-256(0x01 || left || right)`` (RFC 9162 §2.1.1)."""
    return _sha256(b"\x01" + left + right).digest()


@dataclass(frozen=True)
class TreeHash:
    """The hash of one suite in RFC 9162's tree: leaf and node hash functions and the
    root of the empty tree. Prefixes are the RFC's (0x00 leaf, 0x01 node)."""

    name: str
    leaf: Callable[[bytes], bytes]
    node: Callable[[bytes, bytes], bytes]
    empty: bytes


#: RFC 9162 as written: SHA-256.
SHA256 = TreeHash("sha256", leaf_hash, node_hash, EMPTY_ROOT)


@functools.cache
def tree_hash(name: str) -> TreeHash:
    """Return the tree hash over digest ``sha256`` or ``sm3``.

    Raises :class:`~audit.errors.UnsupportedAlgorithm` for another name or when SM3
    is not available.
    """
    if name == "sha256":
        return SHA256
    digest = digest_for(name)

    def leaf(data: bytes) -> bytes:
        return digest(b"\x00" + data)

    def node(left: bytes, right: bytes) -> bytes:
        return digest(b"\x01" + left + right)

    return TreeHash(name, leaf, node, digest(b""))


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (n >= 2), RFC 9162 §2.1.1."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """Split ``[start, end)`` into perfect subtrees ``(level, idx)``, left to right.

    Returns the minimal decomposition into aligned power-of-two blocks (for ``start == 0``
    these are the compact range of ``end``: one per set bit, largest first). Raises
    ``ValueError`` if the range is empty or negative.
    """
    if not 0 <= start < end:
        raise ValueError(f"empty or negative range [{start}, {end})")
    left: list[tuple[int, int]] = []
    right: list[tuple[int, int]] = []
    # Grow from both ends: at ``start`` take the largest aligned block that fits, at
    # ``end`` likewise backwards; this is the decomposition a compact range uses.
    level = 0
    while start < end:
        size = 1 << level
        if start & size and start + size <= end:
            left.append((level, start >> level))
            start += size
        if end & size and end - size >= start:
            end -= size
            right.append((level, end >> level))
        level += 1
    return left + right[::-1]


def fold(hashes: Sequence[bytes], *, th: TreeHash = SHA256) -> bytes:
    """Combine a left-to-right decomposition into one hash, right-most pair first.

    This is MTH of a range whose decomposition is ``hashes`` (RFC 9162 §2.1.1: the right
    part of every split is the incomplete one). Raises ``ValueError`` for an empty list.
    """
    if not hashes:
        raise ValueError("nothing to fold")
    node = th.node
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node(h, acc)
    return acc


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Ranges whose MTHs form PATH(index, D[size]), in RFC 9162 §2.1.3.1 order.

    Raises ``ValueError`` unless ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise ValueError(f"index {index} not in a tree of size {size}")
    out: list[tuple[int, int]] = []
    lo, hi = 0, size
    # Walk down from the root; each step contributes the sibling range. Collected
    # top-down, returned bottom-up (the RFC lists the leaf's sibling first).
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo = lo + k
    out.reverse()
    return out


def consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """Ranges whose MTHs form PROOF(first, D[second]), RFC 9162 §2.1.4.1 order.

    Empty when ``first == second``. Raises ``ValueError`` unless
    ``0 < first <= second``.
    """
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from {first} to {second}")
    out: list[tuple[int, int]] = []
    lo, hi, m, whole = 0, second, first, True
    while True:
        n = hi - lo
        if m == n:
            if not whole:
                out.append((lo, hi))
            break
        k = _split(n)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    out.reverse()
    return out


def subtree_hash(
    leaf_hashes: Sequence[bytes], start: int, end: int, *, th: TreeHash = SHA256
) -> bytes:
    """Return MTH of ``leaf_hashes[start:end]`` (non-empty range); O(end - start)."""
    if not 0 <= start < end <= len(leaf_hashes):
        raise ValueError(f"bad range [{start}, {end}) of {len(leaf_hashes)} leaves")
    cr = CompactRange(th=th)
    for h in leaf_hashes[start:end]:
        cr.append(h)
    return cr.root()


def root(leaf_hashes: Sequence[bytes], *, th: TreeHash = SHA256) -> bytes:
    """Return MTH of all ``leaf_hashes`` (the empty tree's root for none)."""
    if not leaf_hashes:
        return th.empty
    return subtree_hash(leaf_hashes, 0, len(leaf_hashes), th=th)


def inclusion_proof(
    index: int, leaf_hashes: Sequence[bytes], *, th: TreeHash = SHA256
) -> list[bytes]:
    """Return the RFC 9162 inclusion proof of leaf ``index`` in the whole list."""
    ranges = inclusion_ranges(index, len(leaf_hashes))
    return [subtree_hash(leaf_hashes, a, b, th=th) for a, b in ranges]


def consistency_proof(
    first: int, leaf_hashes: Sequence[bytes], *, th: TreeHash = SHA256
) -> list[bytes]:
    """Return the RFC 9162 consistency proof from size ``first`` to the whole list."""
    ranges = consistency_ranges(first, len(leaf_hashes))
    return [subtree_hash(leaf_hashes, a, b, th=th) for a, b in ranges]


def _check_path(proof: Sequence[bytes]) -> None:
    for p in proof:
        if not isinstance(p, bytes | bytearray) or len(p) != HASH_SIZE:
            raise BadProof("proof element is not a 32-byte hash")


def root_from_inclusion_proof(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], *, th: TreeHash = SHA256
) -> bytes:
    """Return the root that ``proof`` implies for leaf hash ``leaf`` at ``index``.

    RFC 9162 §2.1.3.2 steps 1-4. Raises :class:`BadProof` if the proof has the wrong
    length for ``(index, size)``.
    """
    if not 0 <= index < size:
        raise BadProof(f"index {index} not in a tree of size {size}")
    if len(leaf) != HASH_SIZE:
        raise BadProof("leaf hash is not 32 bytes")
    _check_path(proof)
    node = th.node
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise BadProof("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise BadProof("inclusion proof too short")
    return r


def verify_inclusion(
    index: int,
    size: int,
    leaf: bytes,
    proof: Sequence[bytes],
    root_hash: bytes,
    *,
    th: TreeHash = SHA256,
) -> None:
    """Check that leaf hash ``leaf`` is at ``index`` in the tree ``(size, root_hash)``.

    Returns ``None``; raises :class:`BadProof` on any mismatch (RFC 9162 §2.1.3.2).
    """
    if root_from_inclusion_proof(index, size, leaf, proof, th=th) != root_hash:
        raise BadProof(f"inclusion proof of {index} does not lead to the root of size {size}")


def verify_consistency(
    first: int,
    second: int,
    first_root: bytes,
    second_root: bytes,
    proof: Sequence[bytes],
    *,
    th: TreeHash = SHA256,
) -> None:
    """Check that tree ``(second, second_root)`` extends ``(first, first_root)``.

    RFC 9162 §2.1.4.2, with the edge cases of the transparency-dev verifier: equal sizes
    need an empty proof and equal roots; a proof from size 0 proves nothing and is
    refused. Returns ``None``; raises :class:`BadProof`.
    """
    if first > second:
        raise BadProof(f"first size {first} exceeds second size {second}")
    if first == second:
        if proof:
            raise BadProof("consistency proof between equal sizes must be empty")
        if first_root != second_root:
            raise BadProof("equal sizes but different roots")
        if first == 0:
            raise BadProof("consistency from the empty tree proves nothing")
        return
    if first == 0:
        raise BadProof("consistency from the empty tree proves nothing")
    if not proof:
        raise BadProof("empty consistency proof")
    _check_path(proof)
    node = th.node
    path = list(proof)
    if first & (first - 1) == 0:  # first is an exact power of two: step 2
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise BadProof("consistency proof too long")
        if fn & 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise BadProof("consistency proof too short")
    if fr != first_root:
        raise BadProof(f"consistency proof does not lead to the root of size {first}")
    if sr != second_root:
        raise BadProof(f"consistency proof does not lead to the root of size {second}")


class CompactRange:
    """The roots of the perfect subtrees covering leaves ``[0, size)``, largest first.

    DESIGN §7 "prefix": one hash per set bit of ``size``. Appending a leaf hash merges
    equal-size subtrees like a binary counter; amortised one node hash per leaf.
    """

    __slots__ = ("_node", "hashes", "size", "th")

    def __init__(
        self, size: int = 0, hashes: Iterable[bytes] = (), *, th: TreeHash = SHA256
    ) -> None:
        self.size = size
        self.hashes = list(hashes)
        self.th = th
        self._node = th.node
        if len(self.hashes) != size.bit_count() or any(len(h) != HASH_SIZE for h in self.hashes):
            raise ValueError(f"a compact range of size {size} needs {size.bit_count()} hashes")

    def append(self, leaf: bytes, on_node: Callable[[int, int, bytes], None] | None = None) -> None:
        """Append one leaf hash; ``on_node(level, idx, hash)`` sees each completed node."""
        hashes, s, h, level, node = self.hashes, self.size, leaf, 0, self._node
        while s & 1:
            h = node(hashes.pop(), h)
            s >>= 1
            level += 1
            if on_node is not None:
                on_node(level, self.size >> level, h)
        hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        """Return MTH of the covered leaves (the empty tree's root when empty)."""
        return fold(self.hashes, th=self.th) if self.hashes else self.th.empty

    def copy(self) -> CompactRange:
        """Return an independent copy."""
        return CompactRange(self.size, self.hashes, th=self.th)


def compact_range(leaf_hashes: Sequence[bytes], *, th: TreeHash = SHA256) -> list[bytes]:
    """Return the compact range (prefix hashes) of ``leaf_hashes``, largest first."""
    cr = CompactRange(th=th)
    for h in leaf_hashes:
        cr.append(h)
    return cr.hashes


def root_from_compact_range(
    size: int, prefix: Sequence[bytes], leaves: Iterable[bytes], *, th: TreeHash = SHA256
) -> bytes:
    """Return the root after appending leaf hashes ``leaves`` to the prefix of ``size``.

    Raises ``ValueError`` if ``prefix`` is not a compact range of ``size``.
    """
    cr = CompactRange(size, prefix, th=th)
    for h in leaves:
        cr.append(h)
    return cr.root()
