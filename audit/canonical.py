"""RFC 8785 (JCS) canonical JSON for audit entries, integers only.

DESIGN §7: an entry is encoded canonically so that any language re-encodes it to the same
bytes, and it carries *no non-integer numbers* (epsilon and other decimals are decimal
strings). Restricting numbers to integers in the I-JSON safe range (RFC 7493 §2.2,
|n| <= 2**53 - 1) means the ECMAScript number serialisation that JCS prescribes
(RFC 8785 §3.2.2.3) is simply the decimal digits, so no float formatting is ever needed.

The general encoding is the ``rfc8785`` library's; when a value holds only exact JSON
types, integers in the safe range and ASCII keys, ``json.dumps(sort_keys=True)`` (in C,
about 3.5 times faster on an entry) writes the same bytes and is used instead
(``tests/audit/test_audit_canonical.py`` compares the two with hypothesis).

Differences from ``json.dumps(sort_keys=True)`` that matter:

* keys are sorted by their UTF-16 code units (RFC 8785 §3.2.3), not by code points, which
  differs for characters above U+FFFF versus U+E000..U+FFFF;
* floats, NaN and infinities are refused rather than written;
* strings must be valid Unicode (a lone surrogate is refused, RFC 8785 §3.2.2.2).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import rfc8785

from audit.errors import NotCanonical

__all__ = ["MAX_SAFE_INTEGER", "dumps", "dumps_general", "encode", "encode_general", "loads"]

#: Largest integer that every JSON implementation reads exactly (RFC 7493 §2.2).
MAX_SAFE_INTEGER = 2**53 - 1


def _check(value: Any, floats: bool, depth: int = 0) -> Any:
    """Return ``value`` ready for ``rfc8785.dumps``, refusing what an entry may not hold.

    rfc8785 writes floats; entries must not carry them (DESIGN §7), so they are refused
    here unless ``floats`` (response hashing). Integers outside the I-JSON range are
    refused in entries, and in responses written as the double a JavaScript client sees.
    """
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return int(value)
        if not floats:
            raise NotCanonical(f"integer {value} is outside the I-JSON safe range")
        try:
            return float(value)
        except OverflowError:
            raise NotCanonical(f"integer {value} is beyond the double range") from None
    if isinstance(value, float):
        if not floats:
            raise NotCanonical(
                f"non-integer number {value!r}: audit entries carry decimals as strings"
            )
        if not math.isfinite(value):
            raise NotCanonical(f"{value!r} is not a JSON number")
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise NotCanonical(f"object key {k!r} is not a string")
            out[str(k)] = _check(v, floats, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_check(v, floats, depth + 1) for v in value]
    raise NotCanonical(f"cannot encode {type(value).__name__} in an audit entry")


def _plain(value: Any) -> bool:
    """Whether ``json.dumps(sort_keys=True)`` already writes ``value`` as RFC 8785 does:
    exact JSON types only, integers in the safe range, no floats, ASCII keys (whose
    code-point order is their UTF-16 order)."""
    t = type(value)
    if t is str or value is None or t is bool:
        return True
    if t is int:
        return bool(-MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str or not k.isascii() or not _plain(v):
                return False
        return True
    if t is list or t is tuple:
        return all(_plain(v) for v in value)
    return False


_dump_plain = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode


def dumps(value: Any, *, floats: bool = False) -> str:
    """Return the RFC 8785 text of ``value``.

    Accepts ``None``, ``bool``, ``int`` (|n| <= 2**53 - 1), ``str``, lists/tuples and
    mappings with ``str`` keys. Raises :class:`NotCanonical` for anything else, floats
    included unless ``floats=True`` (then written per RFC 8785 §3.2.2.3; only for
    hashing responses, never for entries).
    """
    if _plain(value):  # the common case, written by the C encoder
        return _dump_plain(value)
    return dumps_general(value, floats=floats)


def dumps_general(value: Any, *, floats: bool = False) -> str:
    """``dumps`` without the fast path: the ``rfc8785`` library's encoding of ``value``
    after the entry rules (tests compare the two paths)."""
    return encode_general(value, floats=floats).decode("utf-8")


def encode_general(value: Any, *, floats: bool = False) -> bytes:
    """RFC 8785 bytes by the ``rfc8785`` library; raises :class:`NotCanonical`."""
    try:
        return rfc8785.dumps(_check(value, floats))
    except RecursionError:
        raise NotCanonical("value nests too deeply") from None
    except (rfc8785.CanonicalizationError, UnicodeEncodeError) as exc:
        raise NotCanonical(f"cannot canonicalise: {exc}") from exc


def encode(value: Any, *, floats: bool = False) -> bytes:
    """Return the RFC 8785 UTF-8 bytes of ``value``; raises :class:`NotCanonical`.

    A lone surrogate in a string cannot be UTF-8 and is refused (RFC 8785 §3.2.2.2).
    ``floats`` as for :func:`dumps`.
    """
    if _plain(value):
        try:
            return _dump_plain(value).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise NotCanonical("string is not valid Unicode (lone surrogate)") from exc
    return encode_general(value, floats=floats)


def _refuse_float(text: str) -> Any:
    raise NotCanonical(f"non-integer number {text} in canonical JSON")


def _refuse_constant(text: str) -> Any:
    raise NotCanonical(f"{text} is not JSON")


def loads(data: bytes | str) -> Any:
    """Parse JSON that must contain integers only; return the Python value.

    Raises :class:`NotCanonical` for non-integer numbers, NaN/Infinity or invalid JSON.
    Does not check that ``data`` is in canonical form: compare ``encode(loads(d)) == d``
    for that.
    """
    try:
        return json.loads(data, parse_float=_refuse_float, parse_constant=_refuse_constant)
    except NotCanonical:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise NotCanonical(f"invalid JSON: {type(exc).__name__}: {exc}") from exc
