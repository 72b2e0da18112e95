"""Normalising and validating the key values a caller sends (docs/verification.md).

People type Chinese public-data identifiers with an IME that emits full-width digits,
paste them with a trailing ideographic space, or write the check character of an
identity number as a lower-case ``x``. Each of those would turn a true answer into a
false one, so key values are brought to the canonical form the data is stored in
before the lookup. The rules are deliberately narrow:

- every string: surrounding whitespace is removed (Unicode white space, U+3000 and
  U+00A0 included, plus zero-width spaces and the BOM); full-width ASCII forms
  U+FF01-U+FF5E become ASCII and U+3000 becomes a space (exactly what NFKC does to
  those characters). Nothing else changes: CJK ideographs, compatibility ideographs,
  CJK punctuation such as 、。 and internal spaces are kept as sent.
- ``uscc`` and ``prc_id``: letters are upper-cased (``x`` -> ``X``), then the code is
  validated (length, alphabet, check character); a malformed code is refused with
  ``InvalidRequest`` naming the field instead of being looked up.
- ``enterprise_name``: ASCII parentheses become full-width （ ）, as registered names
  are written.
- ``person_name``: middle-dot look-alikes (・ ･ ‧ • ∙ ⋅ . and full-width ．) become
  U+00B7 ·, the separator GB 11643 records use in names such as 艾力·买买提.

A value is never echoed in an error: messages name the field and the rule broken.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from products.errors import InvalidRequest
from products.manifest import ColumnType, DataProduct, Scalar
from products.text import is_utf8
from products.verification import KeyFormat, VerificationProduct
from sandbox.verification.codes import prc_id_problem, uscc_problem

MAX_KEY_LENGTH = 256
INT64 = (-(2**63), 2**63 - 1)

# Full-width ASCII variants (U+FF01-U+FF5E) -> ASCII, ideographic space -> space: the
# NFKC mapping of exactly these characters, and of nothing else.
_WIDTH_FOLD = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_EDGE = re.compile(r"^[\s\u200b\u200c\u200d\u2060\ufeff]+|[\s\u200b\u200c\u200d\u2060\ufeff]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAME_PARENS = str.maketrans({"(": "（", ")": "）"})
_MIDDLE_DOTS = str.maketrans(dict.fromkeys("・･‧•∙⋅.", "·"))


def fold_width(text: str) -> str:
    """Return ``text`` with full-width ASCII forms and U+3000 mapped to ASCII."""
    return text.translate(_WIDTH_FOLD)


def strip_edges(text: str) -> str:
    """Return ``text`` without surrounding white space (U+3000, zero-width, BOM too)."""
    return _EDGE.sub("", text)


def normalize_text(value: str, fmt: KeyFormat | None = None) -> str:
    """Return the canonical form of a key string for a key of format ``fmt``."""
    text = strip_edges(fold_width(value))
    if fmt in (KeyFormat.USCC, KeyFormat.PRC_ID):
        return text.upper()
    if fmt is KeyFormat.ENTERPRISE_NAME:
        return text.translate(_NAME_PARENS)
    if fmt is KeyFormat.PERSON_NAME:
        return text.translate(_MIDDLE_DOTS)
    return text


def format_problem(value: str, fmt: KeyFormat | None) -> str | None:
    """Return why a normalised value is malformed for ``fmt``, or None."""
    if fmt is KeyFormat.USCC:
        return uscc_problem(value)
    if fmt is KeyFormat.PRC_ID:
        return prc_id_problem(value)
    return None


def _key_value(raw: Any, ctype: ColumnType, fmt: KeyFormat | None) -> Scalar:
    """Return one key value typed and normalised, or raise ``ValueError`` with the rule."""
    if ctype is ColumnType.INTEGER:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError("must be an integer")
        if not INT64[0] <= raw <= INT64[1]:
            raise ValueError("is outside the 64-bit integer range")
        return raw
    if not isinstance(raw, str):
        raise ValueError("must be a string")
    if len(raw) > MAX_KEY_LENGTH:
        raise ValueError(f"must be at most {MAX_KEY_LENGTH} characters")
    text = normalize_text(raw, fmt)
    if not text:
        raise ValueError("must not be empty")
    if _CONTROL.search(text) or not is_utf8(text):
        raise ValueError(
            "must be printable Unicode text (no control characters or lone surrogates)"
        )
    if ctype is ColumnType.DATE:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError("must be an ISO date YYYY-MM-DD")
        try:
            dt.date.fromisoformat(text)
        except ValueError:
            raise ValueError("must be a real date") from None
        return text
    problem = format_problem(text, fmt)
    if problem:
        raise ValueError(f"is not a valid {fmt.value if fmt else 'value'}: {problem}")
    return text


def subject_problems(
    vp: VerificationProduct, product: DataProduct, subject: Any
) -> tuple[tuple[Scalar, ...] | None, dict[str, Any]]:
    """Return (key values in ``vp.key`` order, problems by key name).

    The values are typed and normalised; they are None when there is any problem.
    A subject must give every key column and nothing else (no wildcard, no partial key).
    """
    if not isinstance(subject, Mapping):
        return None, {"_schema": ["subject must be an object of key values"]}
    problems: dict[str, Any] = {}
    for name in subject:
        if name not in vp.key:
            problems[str(name)] = [f"not a key of {vp.id!r} (key: {', '.join(vp.key)})"]
    values: list[Scalar] = []
    for name in vp.key:
        if name not in subject:
            problems[name] = ["required: the full key must be given"]
            continue
        col = product.column(name)
        assert col is not None  # the product was validated against the manifest
        try:
            values.append(_key_value(subject[name], col.type, vp.key_formats.get(name)))
        except ValueError as exc:
            problems[name] = [str(exc)]
    if problems:
        return None, problems
    return tuple(values), {}


def parse_subject(
    vp: VerificationProduct, product: DataProduct, subject: Any
) -> tuple[Scalar, ...]:
    """Return the subject's key values, typed and normalised, in ``vp.key`` order.

    Raises ``InvalidRequest`` with ``details.fields.subject.<key>`` naming each bad
    key value (never echoing it): missing or extra keys, wrong JSON type, empty
    after normalisation, or malformed for the key's declared format.
    """
    key, problems = subject_problems(vp, product, subject)
    if key is None:
        raise InvalidRequest("invalid verification subject", {"fields": {"subject": problems}})
    return key
