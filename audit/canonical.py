"""RFC 8785 (JCS) canonical JSON for audit entries, integers only.

DESIGN §7: an entry is encoded canonically so that any language re-encodes it to the same
bytes, and it carries *no non-integer numbers* (epsilon and other decimals are decimal
strings). Restricting numbers to integers in the I-JSON safe range (RFC 7493 §2.2,
|n| <= 2**53 - 1) means the ECMAScript number serialisation that JCS prescribes
(RFC 8785 §3.2.2.3) is simply the decimal digits, so no float formatting is ever needed.

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
from decimal import Decimal
from typing import Any

from audit.errors import NotCanonical

__all__ = ["MAX_SAFE_INTEGER", "dumps", "dumps_general", "encode", "es_number", "loads"]

#: Largest integer that every JSON implementation reads exactly (RFC 7493 §2.2).
MAX_SAFE_INTEGER = 2**53 - 1

# ``json.dumps(str, ensure_ascii=False)`` escapes exactly what RFC 8785 §3.2.2.2 asks:
# '"' and '\\', the short forms \b \f \n \r \t, other C0 controls as lowercase \u00xx,
# and nothing else (DEL, non-ASCII, U+2028/9 stay literal).
_dump_str = json.JSONEncoder(ensure_ascii=False).encode


def _utf16_key(key: str) -> bytes:
    # Big-endian UTF-16 bytes compare like the sequence of UTF-16 code units.
    return key.encode("utf-16-be", "surrogatepass")


def es_number(value: float) -> str:
    """Return ``value`` as ECMAScript's Number::toString would (RFC 8785 §3.2.2.3).

    Used only for hashing response objects (``entry.result_hash``), which may carry DP
    answers as floats; entries themselves never contain non-integer numbers. Raises
    :class:`NotCanonical` for NaN and infinities.
    """
    if not math.isfinite(value):
        raise NotCanonical(f"{value!r} is not a JSON number")
    if value == 0:
        return "0"  # also -0
    sign = "-" if value < 0 else ""
    # repr() gives the shortest digits that round-trip, as ECMAScript requires.
    _, digit_tuple, exp = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    assert isinstance(exp, int)
    exp += len("".join(map(str, digit_tuple))) - len(digits)
    k = len(digits)
    n = exp + k  # value = 0.digits * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        text = f"{mantissa}e{'+' if e > 0 else '-'}{abs(e)}"
    return sign + text


def _encode(value: Any, out: list[str], floats: bool = False) -> None:
    # bool before int: True is an int in Python but "true" in JSON.
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_dump_str(value))
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            if floats:  # as a JavaScript client would see it: a double
                try:
                    out.append(es_number(float(value)))
                except OverflowError:
                    raise NotCanonical(f"integer {value} is beyond the double range") from None
                return
            raise NotCanonical(f"integer {value} is outside the I-JSON safe range")
        out.append(str(int(value)))
    elif isinstance(value, Mapping):
        keys = list(value)
        for key in keys:
            if not isinstance(key, str):
                raise NotCanonical(f"object key {key!r} is not a string")
        out.append("{")
        first = True
        for key in sorted(keys, key=_utf16_key):
            if not first:
                out.append(",")
            first = False
            out.append(_dump_str(key))
            out.append(":")
            _encode(value[key], out, floats)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out, floats)
        out.append("]")
    elif isinstance(value, float):
        if floats:
            out.append(es_number(value))
            return
        raise NotCanonical(f"non-integer number {value!r}: audit entries carry decimals as strings")
    else:
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
    """``dumps`` without the fast path: every value walked in Python (tests compare the
    two)."""
    out: list[str] = []
    _encode(value, out, floats)
    return "".join(out)


def encode(value: Any, *, floats: bool = False) -> bytes:
    """Return the RFC 8785 UTF-8 bytes of ``value``; raises :class:`NotCanonical`.

    A lone surrogate in a string cannot be UTF-8 and is refused (RFC 8785 §3.2.2.2).
    ``floats`` as for :func:`dumps`.
    """
    text = dumps(value, floats=floats)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NotCanonical("string is not valid Unicode (lone surrogate)") from exc


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
