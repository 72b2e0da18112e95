"""The audit bundle: a JSON Lines file (DESIGN §7), written and read as a stream.

Lines, in order::

    {"type":"header","version":1,"origin":...,"start":s,"end":e,"keys":[JWK...]}
    {"type":"prefix","size":s,"hashes":[base64...]}        only when s > 0
    {"type":"entry","index":i,"leaf":"<base64 leaf>"}      s <= i < e, in order
    {"type":"checkpoint","note":"<signed note>"}           one or more; one of size e

Writers emit compact JSON with the members in the order above, which lets readers take a
fast path for entry lines; any other valid JSON spelling of a line is accepted too.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, TypeGuard

from audit.errors import MalformedBundle
from audit.merkle import HASH_SIZE

__all__ = [
    "BundleWriter",
    "Header",
    "Record",
    "checkpoint_line",
    "entry_line",
    "header_line",
    "iter_bundle",
    "parse_checkpoint_line",
    "parse_entry_line",
    "parse_header",
    "parse_line",
    "parse_prefix",
    "prefix_line",
]

VERSION = 1
_ENTRY_HEAD = b'{"type":"entry","index":'
_LEAF_SEP = b',"leaf":"'
_a2b = binascii.a2b_base64
_b2a = binascii.b2a_base64


def _dumps(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def decode_b64(text: str | bytes, what: str) -> bytes:
    """Strict standard base64: returns the bytes or raises :class:`MalformedBundle`.

    The re-encoding must give back the input, so no two texts decode to the same bytes
    (otherwise an edit of the padding bits would go unnoticed).
    """
    raw_text = text.encode("ascii", "replace") if isinstance(text, str) else text
    try:
        raw = _a2b(raw_text)
    except binascii.Error as exc:
        raise MalformedBundle(f"{what} is not base64") from exc
    if _b2a(raw, newline=False) != raw_text:
        raise MalformedBundle(f"{what} is not canonical standard base64")
    return raw


@dataclass(frozen=True)
class Header:
    """The bundle header: log origin, entry range ``[start, end)`` and public keys."""

    origin: str
    start: int
    end: int
    keys: tuple[Mapping[str, Any], ...]
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def suite(self) -> str:
        """The cryptographic suite the bundle names (DESIGN §13); ``ed25519-sha256``
        when the header has no ``suite`` (bundles from before there were two)."""
        value = self.extra.get("suite", "ed25519-sha256")
        return value if isinstance(value, str) else ""


def header_line(
    origin: str,
    start: int,
    end: int,
    keys: Sequence[Mapping[str, Any]],
    witnesses: Sequence[Mapping[str, Any]] = (),
    suite: str | None = None,
) -> bytes:
    """Return the header line (with newline).

    ``witnesses`` (an extension field, omitted when empty) lists the JWKs, each with
    its signed-note ``name``, of the witnesses whose cosignatures the bundle carries.
    ``suite`` (an extension field) names the cryptographic suite (DESIGN §13).
    """
    obj: dict[str, Any] = {
        "type": "header",
        "version": VERSION,
        "origin": origin,
        "start": start,
        "end": end,
        "keys": [dict(k) for k in keys],
    }
    if witnesses:
        obj["witnesses"] = [dict(w) for w in witnesses]
    if suite is not None:
        obj["suite"] = suite
    return _dumps(obj)


def prefix_line(size: int, hashes: Sequence[bytes]) -> bytes:
    """Return the prefix line: the compact range of the first ``size`` leaves."""
    b64 = [base64.b64encode(h).decode() for h in hashes]
    return _dumps({"type": "prefix", "size": size, "hashes": b64})


def entry_line(index: int, leaf: bytes) -> bytes:
    """Return one entry line (with newline)."""
    return b'%s%d%s%s"}\n' % (_ENTRY_HEAD, index, _LEAF_SEP, _b2a(leaf, newline=False))


def checkpoint_line(note: str) -> bytes:
    """Return a checkpoint line carrying the exact signed-note text."""
    return _dumps({"type": "checkpoint", "note": note})


def _load(line: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedBundle(f"line is not JSON: {type(exc).__name__}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise MalformedBundle("line is not an object with a 'type'")
    return obj


def parse_header(line: bytes) -> Header:
    """Parse the header line; raises :class:`MalformedBundle`."""
    obj = _load(line)
    if obj["type"] != "header":
        raise MalformedBundle("the first line is not a header")
    if obj.get("version") != VERSION:
        raise MalformedBundle(f"unsupported bundle version {obj.get('version')!r}")
    origin, start, end, keys = (obj.get(k) for k in ("origin", "start", "end", "keys"))
    if not isinstance(origin, str) or not origin:
        raise MalformedBundle("header origin missing")
    if not _is_count(start) or not _is_count(end) or start > end:
        raise MalformedBundle("header start/end are not 0 <= start <= end")
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise MalformedBundle("header keys must be a list of JWK objects")
    if "suite" in obj and not isinstance(obj["suite"], str):
        raise MalformedBundle("header suite must be a string")
    known = {"type", "version", "origin", "start", "end", "keys"}
    extra = {k: v for k, v in obj.items() if k not in known}
    return Header(origin, start, end, tuple(keys), extra)


def parse_prefix(line: bytes) -> tuple[int, list[bytes]]:
    """Parse a prefix line into ``(size, hashes)``; raises :class:`MalformedBundle`."""
    obj = _load(line)
    if obj["type"] != "prefix":
        raise MalformedBundle("expected a prefix line")
    size, hashes = obj.get("size"), obj.get("hashes")
    if not _is_count(size) or not isinstance(hashes, list):
        raise MalformedBundle("prefix needs a size and a list of hashes")
    raw = [decode_b64(h if isinstance(h, str) else "", "prefix hash") for h in hashes]
    # HASH_SIZE is 32 bytes for both suites' hashes (SHA-256 and SM3).
    if len(raw) != size.bit_count() or any(len(h) != HASH_SIZE for h in raw):
        raise MalformedBundle(f"prefix of size {size} needs {size.bit_count()} 32-byte hashes")
    return size, raw


def parse_entry_line(line: bytes) -> tuple[int, bytes]:
    """Parse an entry line into ``(index, leaf bytes)``; raises :class:`MalformedBundle`.

    Lines as :func:`entry_line` writes them are sliced without a JSON parse (the fixed
    prefix, a canonical decimal, then base64 which cannot contain a quote); any other
    spelling goes through ``json.loads``.
    """
    if line.startswith(_ENTRY_HEAD):
        sep = line.find(_LEAF_SEP, 24)
        end = len(line) - (3 if line.endswith(b'"}\n') else 2)
        digits = line[24:sep]
        if (
            sep > 24
            and line[end:].rstrip(b"\n") == b'"}'
            and digits.isdigit()
            and (digits == b"0" or not digits.startswith(b"0"))
        ):
            text = line[sep + 9 : end]
            try:
                leaf = _a2b(text)
            except binascii.Error:
                leaf = None
            if leaf is not None and _b2a(leaf, newline=False) == text:
                return int(digits), leaf
    obj = _load(line)
    if obj["type"] != "entry":
        raise MalformedBundle(f"expected an entry line, got {obj['type']!r}")
    index, leaf_text = obj.get("index"), obj.get("leaf")
    if not _is_count(index) or not isinstance(leaf_text, str):
        raise MalformedBundle("entry line needs an integer index and a base64 leaf")
    return index, decode_b64(leaf_text, "leaf")


def parse_checkpoint_line(line: bytes) -> str:
    """Return the note text of a checkpoint line; raises :class:`MalformedBundle`."""
    obj = _load(line)
    if obj["type"] != "checkpoint" or not isinstance(obj.get("note"), str):
        raise MalformedBundle("expected a checkpoint line with a note")
    note: str = obj["note"]
    return note


@dataclass(frozen=True)
class Record:
    """One parsed bundle line: ``kind`` and the parsed value."""

    kind: str  # "header" | "prefix" | "entry" | "checkpoint"
    value: Any


def parse_line(line: bytes) -> Record:
    """Parse any one non-header line by its type; raises :class:`MalformedBundle`."""
    if line.startswith(_ENTRY_HEAD):
        return Record("entry", parse_entry_line(line))
    obj = _load(line)
    kind = obj["type"]
    if kind == "entry":
        return Record("entry", parse_entry_line(line))
    if kind == "prefix":
        return Record("prefix", parse_prefix(line))
    if kind == "checkpoint":
        return Record("checkpoint", parse_checkpoint_line(line))
    raise MalformedBundle(f"unknown line type {kind!r}")


def iter_bundle(stream: IO[bytes]) -> Iterator[Record]:
    """Yield the records of a bundle read from a binary stream, header first.

    Raises :class:`MalformedBundle` at the first line that does not parse.
    """
    first = stream.readline()
    yield Record("header", parse_header(first))
    for line in stream:
        if line.strip():
            yield parse_line(line)


class BundleWriter:
    """Writes bundle lines to ``write`` (a ``Callable[[bytes], None]``)."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write

    def header(
        self,
        origin: str,
        start: int,
        end: int,
        keys: Sequence[Mapping[str, Any]],
        witnesses: Sequence[Mapping[str, Any]] = (),
        suite: str | None = None,
    ) -> None:
        """Write the header line."""
        self._write(header_line(origin, start, end, keys, witnesses, suite))

    def prefix(self, size: int, hashes: Sequence[bytes]) -> None:
        """Write the prefix line."""
        self._write(prefix_line(size, hashes))

    def entry(self, index: int, leaf: bytes) -> None:
        """Write one entry line."""
        self._write(entry_line(index, leaf))

    def checkpoint(self, note: str) -> None:
        """Write one checkpoint line."""
        self._write(checkpoint_line(note))
