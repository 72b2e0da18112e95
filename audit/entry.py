"""Audit entries (DESIGN §7) and the leaf bytes they are stored and hashed as.

An entry is a JSON object encoded with RFC 8785 (``audit.canonical``); those bytes are
the Merkle *leaf*, stored and exported verbatim. The log assigns ``index``, ``time`` and
``prev`` inside its write lock; producers supply an :class:`Entry`.

``prev`` (an extension field, optional for other producers) is the hex RFC 9162 leaf hash
of entry ``index - 1`` (``null`` for entry 0). It chains each entry to its predecessor so
that the offline verifier can name the first altered entry instead of only reporting a
root mismatch; the Merkle root over all leaves remains what the signed checkpoint
commits to.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from audit import canonical
from audit.errors import BadEntry, NotCanonical
from audit.hashes import Digest, sha256

__all__ = [
    "ASSIGNED_FIELDS",
    "DECISIONS",
    "REQUIRED_FIELDS",
    "Entry",
    "format_time",
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

_RESERVED = frozenset((*ASSIGNED_FIELDS, *CALLER_FIELDS))
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


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


def request_hash(method: str, path_and_query: str, body: bytes, *, digest: Digest = sha256) -> str:
    """Return hex SHA-256 over ``METHOD + "\\n" + path_and_query + "\\n" + body`` (§7).

    ``digest`` is the suite's hash (DESIGN §13: SM3 in an ``sm2-sm3`` deployment).
    """
    head = f"{method.upper()}\n{path_and_query}\n".encode()
    return digest(head + body).hex()


def result_hash(response: Mapping[str, Any] | None, *, digest: Digest = sha256) -> str | None:
    """Return hex SHA-256 (or the suite's ``digest``) of the RFC 8785 encoding of
    ``response`` without ``receipt``.

    ``None`` (no response body) gives ``None``. Responses may carry floats (DP answers):
    they are written as RFC 8785 §3.2.2.3 prescribes, so a client that parses the JSON
    it received and re-encodes it with any JCS library gets the same hash. Raises
    :class:`NotCanonical` for NaN/infinity or non-JSON values.
    """
    if response is None:
        return None
    body = {k: v for k, v in response.items() if k != "receipt"}
    return digest(canonical.encode(body, floats=True)).hex()


@dataclass(frozen=True)
class Entry:
    """One audit entry as its producer supplies it (DESIGN §7): the log adds ``index``,
    ``time`` and ``prev`` when it appends.

    ``extra`` holds the producer's extension fields (e.g. ``status``, ``sql_hash``);
    they may not shadow a DESIGN §7 field. Construction checks every field and that the
    whole entry encodes canonically, so an entry that exists can always be appended.
    Raises :class:`BadEntry` naming the first offending field, or
    :class:`NotCanonical` for a value that cannot be encoded (e.g. a float).
    """

    actor: str | None
    role: str | None
    action: str
    target: Mapping[str, str]
    request_hash: str | None
    decision: str
    reason: str | None
    epsilon: str
    result_hash: str | None
    jti: str | None
    client: str | None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("actor", "role", "request_hash", "reason", "result_hash", "jti", "client"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise BadEntry(f"field {name!r} must be a string or null")
        if not isinstance(self.action, str) or not self.action:
            raise BadEntry("field 'action' must be a non-empty string")
        if not isinstance(self.target, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.target.items()
        ):
            raise BadEntry("field 'target' must be an object of strings")
        if self.decision not in DECISIONS:
            raise BadEntry(f"decision must be one of {DECISIONS}")
        if not isinstance(self.epsilon, str) or not _DECIMAL.fullmatch(self.epsilon):
            raise BadEntry("epsilon must be a decimal string such as '0.5'")
        for name in ("request_hash", "result_hash"):
            value = getattr(self, name)
            if value is not None and not _HEX64.fullmatch(value):
                raise BadEntry(f"field {name!r} must be 64 lowercase hex digits")
        clash = set(self.extra) & _RESERVED
        if clash:
            raise BadEntry(f"extension field(s) {sorted(clash)} shadow entry fields")
        # encode, not dumps: a lone surrogate passes str operations but not UTF-8, and
        # must fail here, in its producer, not in the group-commit leader for a batch.
        canonical.encode(self.fields())

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> Entry:
        """Return the entry of a flat JSON object of DESIGN §7 fields (every one of
        them, none of the log's) plus extension fields. Raises :class:`BadEntry` or
        :class:`NotCanonical`."""
        for name in ASSIGNED_FIELDS:
            if name in fields:
                raise BadEntry(f"field {name!r} is assigned by the log")
        missing = [name for name in CALLER_FIELDS if name not in fields]
        if missing:
            raise BadEntry(f"missing field {missing[0]!r}")
        core = {name: fields[name] for name in CALLER_FIELDS}
        extra = {k: v for k, v in fields.items() if k not in CALLER_FIELDS}
        return cls(**core, extra=extra)

    def fields(self) -> dict[str, Any]:
        """Return the entry as a JSON object without the log's fields."""
        out = dict(self.extra)
        out.update(
            actor=self.actor,
            role=self.role,
            action=self.action,
            target=dict(self.target),
            request_hash=self.request_hash,
            decision=self.decision,
            reason=self.reason,
            epsilon=self.epsilon,
            result_hash=self.result_hash,
            jti=self.jti,
            client=self.client,
        )
        return out

    def leaf(self, *, index: int, time: str, prev: bytes | None) -> bytes:
        """Return the leaf bytes (RFC 8785) of this entry at ``index`` and ``time``, after
        the entry whose leaf hash is ``prev`` (``None`` for the first)."""
        out = self.fields()
        out["index"] = index
        out["time"] = time
        out["prev"] = prev.hex() if prev is not None else None
        return canonical.encode(out)


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
