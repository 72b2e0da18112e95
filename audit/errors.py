"""The audit package's one error tree.

Every error carries ``code``: the DESIGN §5 machine-readable code it maps to when it
crosses the HTTP edge (the mapping itself lives in ``sandbox/errors.py``), and a
readable message for the CLI line.
"""

from __future__ import annotations


class AuditError(Exception):
    """Base of every error raised by ``audit``."""

    code = "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotCanonical(AuditError):
    """A value cannot be encoded as an audit entry (RFC 8785 / DESIGN §7 rules)."""


class BadEntry(AuditError):
    """Entry fields are missing, of the wrong type, or a leaf does not parse."""


class OutOfRange(AuditError):
    """An index or tree size lies outside the log (e.g. ``index >= tree_size``)."""


class MalformedBundle(AuditError):
    """A bundle line cannot be parsed or is out of place (DESIGN §7 format)."""


class BadCheckpoint(AuditError):
    """A checkpoint or signed note does not parse, or no trusted signature verifies."""


class BadSignature(BadCheckpoint):
    """A signature from a known key failed to verify."""


class BadProof(AuditError):
    """An inclusion or consistency proof does not verify."""


class BadReceipt(AuditError):
    """A receipt (compact JWS) is malformed, wrongly signed, or lacks claims."""

    code = "bad_signature"


class UnsupportedAlgorithm(AuditError):
    """A suite, hash or key type this verifier does not know or cannot run here."""


class TamperDetected(AuditError):
    """Entries do not match what was checkpointed; ``index`` is the first bad index."""

    code = "internal"  # the log is not what its checkpoints say: never the caller's fault

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"entry {index}: {message}")
        self.index = index
