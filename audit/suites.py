"""The cryptographic suites a deployment runs (DESIGN §13), one for its whole life.

=================  =========  =================  ===========  =============================
suite              hash       platform key       receipts     signed-note key types
=================  =========  =================  ===========  =============================
``ed25519-sha256`` SHA-256    Ed25519            ``EdDSA``    0x01, cosignatures 0x04
``sm2-sm3``        SM3        SM2 (GB/T 32918)   ``SM2SM3``   ``0xff "pds/sm2-sm3"`` (+ cosig.)
=================  =========  =================  ===========  =============================

The hash covers everything the log commits to: leaf and node hashes (RFC 9162 structure
and prefixes), ``prev``, ``request_hash``, ``result_hash``, checkpoint roots and proofs.
The bundle header names its suite (``"suite"``, an extension field; a header without
it is ``ed25519-sha256``, the only suite before there were two).
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.errors import UnsupportedAlgorithm
from audit.hashes import Digest, digest_for
from audit.merkle import TreeHash, tree_hash

__all__ = ["DEFAULT_SUITE", "SUITE_NAMES", "Suite", "suite_for_jws_alg", "suite_named"]

DEFAULT_SUITE = "ed25519-sha256"
SUITE_NAMES = ("ed25519-sha256", "sm2-sm3")


@dataclass(frozen=True)
class Suite:
    """One suite: its name, hash, platform key type and receipt (JWS) algorithm."""

    name: str
    hash_name: str  # "sha256" | "sm3"
    key_type: str  # the platform's key: "Ed25519" | "SM2"
    jws_alg: str  # receipts: "EdDSA" | "SM2SM3"

    @property
    def digest(self) -> Digest:
        """The suite's hash function (raises if SM3 is not available here)."""
        return digest_for(self.hash_name)

    @property
    def tree(self) -> TreeHash:
        """The suite's RFC 9162 tree hash."""
        return tree_hash(self.hash_name)


_SUITES = {
    "ed25519-sha256": Suite("ed25519-sha256", "sha256", "Ed25519", "EdDSA"),
    "sm2-sm3": Suite("sm2-sm3", "sm3", "SM2", "SM2SM3"),
}


def suite_named(name: str) -> Suite:
    """Return the suite called ``name``; raises :class:`UnsupportedAlgorithm`."""
    try:
        return _SUITES[name]
    except (KeyError, TypeError):
        raise UnsupportedAlgorithm(
            f"unknown cryptographic suite {name!r}: use one of {', '.join(SUITE_NAMES)}"
        ) from None


def suite_for_jws_alg(alg: str) -> Suite:
    """Return the suite whose receipts use JWS algorithm ``alg``; raises
    :class:`UnsupportedAlgorithm`."""
    for suite in _SUITES.values():
        if suite.jws_alg == alg:
            return suite
    raise UnsupportedAlgorithm(f"no suite signs receipts with {alg!r}")
