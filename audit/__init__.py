"""The regulator's package: canonical entries, the Merkle audit log, checkpoints,
receipts, bundles and the offline verifier (DESIGN §7).

Importing ``audit`` loads only the offline path (stdlib + pycryptodome). The database
side, ``audit.log`` and ``audit.tables``, needs SQLAlchemy and is imported explicitly.
"""

from audit.errors import (
    AuditError,
    BadCheckpoint,
    BadEntry,
    BadProof,
    BadReceipt,
    BadSignature,
    MalformedBundle,
    NotCanonical,
    OutOfRange,
    TamperDetected,
)
from audit.verify import CheckpointReport, Report, verify_bundle

__all__ = [
    "AuditError",
    "BadCheckpoint",
    "BadEntry",
    "BadProof",
    "BadReceipt",
    "BadSignature",
    "CheckpointReport",
    "MalformedBundle",
    "NotCanonical",
    "OutOfRange",
    "Report",
    "TamperDetected",
    "verify_bundle",
]
