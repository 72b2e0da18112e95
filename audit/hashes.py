"""The hash functions of the two cryptographic suites (DESIGN §13): SHA-256 and SM3.

Both come from the standard library's ``hashlib``: SHA-256 always, SM3 (GB/T 32905)
when Python's OpenSSL provides it (OpenSSL 3 does, unless the build disabled it). The
SM3 digest copies a prepared context instead of calling ``hashlib.new("sm3", ...)``
each time, which halves the cost on the short inputs Merkle node hashes are made of
(docs/suites.md, "Measurements").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from audit.errors import UnsupportedAlgorithm

__all__ = [
    "HASH_NAMES",
    "Digest",
    "digest_for",
    "new_hash",
    "sha256",
    "sm3",
    "sm3_available",
]

Digest = Callable[[bytes], bytes]
HASH_NAMES = ("sha256", "sm3")


def sha256(data: bytes) -> bytes:
    """Return the SHA-256 digest of ``data``."""
    return hashlib.sha256(data).digest()


def _sm3_context() -> hashlib._Hash | None:
    try:
        return hashlib.new("sm3")
    except ValueError:  # this OpenSSL was built without SM3
        return None


_SM3 = _sm3_context()


def sm3_available() -> bool:
    """True when this Python's OpenSSL provides SM3."""
    return _SM3 is not None


def sm3(data: bytes) -> bytes:
    """Return the SM3 digest (GB/T 32905) of ``data``.

    Raises :class:`UnsupportedAlgorithm` when Python's OpenSSL has no SM3.
    """
    if _SM3 is None:
        raise UnsupportedAlgorithm(
            "SM3 is not available: this Python's OpenSSL was built without it "
            "(OpenSSL 3 with SM3 enabled is needed for the sm2-sm3 suite)"
        )
    h = _SM3.copy()
    h.update(data)
    return h.digest()


def digest_for(name: str) -> Digest:
    """Return the digest function named ``sha256`` or ``sm3``.

    Raises :class:`UnsupportedAlgorithm` for any other name, or for ``sm3`` when it
    is not available.
    """
    if name == "sha256":
        return sha256
    if name == "sm3":
        sm3(b"")  # fail here, not at first use
        return sm3
    raise UnsupportedAlgorithm(f"unknown hash {name!r}: use one of {', '.join(HASH_NAMES)}")


def new_hash(name: str) -> hashlib._Hash:
    """Return a fresh incremental hash object (``update``, ``digest``, ``hexdigest``) of
    ``sha256`` or ``sm3``, for data read in chunks. Raises :class:`UnsupportedAlgorithm`."""
    if name == "sha256":
        return hashlib.sha256()
    digest_for(name)
    assert _SM3 is not None
    return _SM3.copy()
