"""Audit entries (DESIGN §7) and the leaf bytes they are stored and hashed as.

An entry is a JSON object encoded with RFC 8785 (``audit.canonical``); those bytes are
the Merkle *leaf*, stored and exported verbatim. The log assigns ``index``, ``time`` and
``prev`` inside its write lock; callers supply the other fields.

``prev`` (an extension field, optional for other producers) is the hex RFC 9162 leaf hash
of entry ``index - 1`` (``null`` for entry 0). It chains each entry to its predecessor so
that the offline verifier can name the first altered entry instead of only reporting a
root mismatch; the Merkle root over all leaves remains what the signed checkpoint
commits to.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from audit import canonical
from audit.errors import BadEntry, NotCanonical

__all__ = [
    "ASSIGNED_FIELDS",
    "DECISIONS",
    "REQUIRED_FIELDS",
    "build_entry",
    "check_fields",
    "format_time",
    "make_leaf",
    "parse_leaf",
    "parse_time",
    "request_hash",
    "result_hash",
]

#: Fields the log assigns; callers must not supply them.
ASSIGNED_FIELDS = ("index", "time", "prev")
#: DESIGN §7 minimum fields a caller supplies (values may be null where noted below).
CALLER_FIELDS = (
    "actor",
    "role",
    "action",
    "target",
    "request_hash",
    "decision",
    "reason",
    "epsilon",
    "result_hash",
    "jti",
    "client",
)
REQUIRED_FIELDS = ("index", "time", *CALLER_FIELDS)
DECISIONS = ("allow", "deny")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
# Fields that may be null: an unauthenticated call has no actor/role/jti; an allowed
# call has no reason; a call without a response body has no result_hash.
_NULLABLE = frozenset({"actor", "role", "reason", "result_hash", "jti", "client", "request_hash"})


def format_time(when: datetime) -> str:
    """Return ``when`` as RFC 3339 UTC with milliseconds, e.g. ``2026-11-23T11:02:29.123Z``.

    Raises :class:`BadEntry` for a naive datetime (its zone would be a guess).
    """
    if when.tzinfo is None or when.utcoffset() is None:
        raise BadEntry("audit times must be timezone-aware")
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Parse the exact format of :func:`format_time`; raises :class:`BadEntry`."""
    if not isinstance(text, str) or not _TIME.fullmatch(text):
        raise BadEntry(f"time {text!r} is not RFC 3339 UTC with milliseconds")
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise BadEntry(f"time {text!r}: {exc}") from exc


def request_hash(method: str, path_and_query: str, body: bytes) -> str:
    """Return hex SHA-256 over ``METHOD + "\\n" + path_and_query + "\\n" + body`` (§7)."""
    head = f"{method.upper()}\n{path_and_query}\n".encode()
    return hashlib.sha256(head + body).hexdigest()


def result_hash(response: Mapping[str, Any] | None) -> str | None:
    """Return hex SHA-256 of the RFC 8785 encoding of ``response`` without ``receipt``.

    ``None`` (no response body) gives ``None``. Responses may carry floats (DP answers):
    they are written as RFC 8785 §3.2.2.3 prescribes, so a client that parses the JSON
    it received and re-encodes it with any JCS library gets the same hash. Raises
    :class:`NotCanonical` for NaN/infinity or non-JSON values.
    """
    if response is None:
        return None
    body = {k: v for k, v in response.items() if k != "receipt"}
    return hashlib.sha256(canonical.encode(body, floats=True)).hexdigest()


def check_fields(fields: Mapping[str, Any]) -> None:
    """Check caller-supplied entry fields (DESIGN §7); returns ``None``.

    Raises :class:`BadEntry` naming the first offending field, or :class:`NotCanonical`
    if a value cannot be encoded (e.g. a float).
    """
    for name in ASSIGNED_FIELDS:
        if name in fields:
            raise BadEntry(f"field {name!r} is assigned by the log")
    for name in CALLER_FIELDS:
        if name not in fields:
            raise BadEntry(f"missing field {name!r}")
        value = fields[name]
        if value is None:
            if name not in _NULLABLE:
                raise BadEntry(f"field {name!r} may not be null")
            continue
        if name == "target":
            if not isinstance(value, Mapping):
                raise BadEntry("field 'target' must be an object")
        elif not isinstance(value, str):
            raise BadEntry(f"field {name!r} must be a string")
    if fields["decision"] not in DECISIONS:
        raise BadEntry(f"decision must be one of {DECISIONS}")
    if not _DECIMAL.fullmatch(fields["epsilon"]):
        raise BadEntry("epsilon must be a decimal string such as '0.5'")
    for name in ("request_hash", "result_hash"):
        value = fields[name]
        if value is not None and not _HEX64.fullmatch(value):
            raise BadEntry(f"field {name!r} must be 64 lowercase hex digits")
    if not fields["action"]:
        raise BadEntry("field 'action' may not be empty")
    # encode, not dumps: a lone surrogate passes str operations but not UTF-8, and must
    # fail here, in its own caller, not in the group-commit leader for a whole batch.
    canonical.encode(dict(fields))  # raises NotCanonical for floats and other non-JSON


def build_entry(
    fields: Mapping[str, Any], *, index: int, time: datetime | str, prev: bytes | None = None
) -> dict[str, Any]:
    """Return the entry dict: ``fields`` plus ``index``, ``time`` and ``prev``.

    ``prev`` is the raw leaf hash of entry ``index - 1`` (``None`` for the first entry).
    Raises :class:`BadEntry` / :class:`NotCanonical` for invalid fields.
    """
    check_fields(fields)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise BadEntry("index must be a non-negative integer")
    entry = dict(fields)
    entry["index"] = index
    entry["time"] = time if isinstance(time, str) else format_time(time)
    entry["prev"] = prev.hex() if prev is not None else None
    return entry


def make_leaf(
    fields: Mapping[str, Any], *, index: int, time: datetime | str, prev: bytes | None = None
) -> bytes:
    """Return the leaf bytes (RFC 8785) of :func:`build_entry`; raises like it."""
    return canonical.encode(build_entry(fields, index=index, time=time, prev=prev))


def parse_leaf(leaf: bytes, *, strict: bool = True) -> dict[str, Any]:
    """Parse leaf bytes back into the entry dict.

    With ``strict`` the leaf must be in canonical form (RFC 8785 re-encoding gives the same
    bytes), carry the DESIGN §7 minimum fields, a non-negative integer ``index`` and a
    well-formed ``time``. Raises :class:`BadEntry`.
    """
    try:
        entry = canonical.loads(leaf)
    except NotCanonical as exc:
        raise BadEntry(f"leaf is not JSON with integers only: {exc.message}") from exc
    if not isinstance(entry, dict):
        raise BadEntry("leaf is not a JSON object")
    if strict:
        try:
            same = canonical.encode(entry) == leaf
        except NotCanonical as exc:
            raise BadEntry(f"leaf cannot be re-encoded: {exc.message}") from exc
        if not same:
            raise BadEntry("leaf is not in RFC 8785 canonical form")
        missing = [f for f in REQUIRED_FIELDS if f not in entry]
        if missing:
            raise BadEntry(f"leaf lacks field(s) {', '.join(missing)}")
        index = entry["index"]
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise BadEntry("leaf index is not a non-negative integer")
        parse_time(entry["time"])
    return entry
