"""Receipts (DESIGN §5): the claims the platform signs, and an offline check of them.

The server signs receipts elsewhere (with pyjwt); this module is the regulator-side,
independent check: a compact JWS with header ``typ: pds-receipt+jwt`` and a ``kid``
naming a key in a JWK set: ``alg: EdDSA`` with an Ed25519 key (pycryptodome), or, in
an ``sm2-sm3`` deployment (DESIGN §13), ``alg: SM2SM3`` with an SM2 key (``r || s``
over the JWS signing input with the default user id, :mod:`audit.sm2`). The receipt's
algorithm names its suite, whose hash ``leaf_hash`` and ``result_hash`` are checked
with.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from Crypto.Signature import eddsa

from audit import sm2
from audit.entry import result_hash
from audit.errors import AuditError, BadReceipt
from audit.note import public_key_bytes
from audit.suites import suite_for_jws_alg

__all__ = ["RECEIPT_TYP", "REQUIRED_CLAIMS", "check_receipt", "receipt_claims"]

RECEIPT_TYP = "pds-receipt+jwt"
REQUIRED_CLAIMS = ("iss", "iat", "audit_index", "leaf_hash", "request_hash", "result_hash")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _hex(value: bytes | str) -> str:
    return value.hex() if isinstance(value, bytes) else value


def receipt_claims(
    *,
    iss: str,
    iat: int,
    audit_index: int,
    leaf_hash: bytes | str,
    request_hash: str,
    result_hash: str | None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Return the receipt payload; hashes as lowercase hex (raw bytes are converted).

    ``request_id`` (DESIGN §9, echoed from the call) is included only when given.
    """
    claims: dict[str, Any] = {
        "iss": iss,
        "iat": int(iat),
        "audit_index": int(audit_index),
        "leaf_hash": _hex(leaf_hash),
        "request_hash": request_hash,
        "result_hash": result_hash,
    }
    if request_id is not None:
        claims["request_id"] = request_id
    return claims


def _b64url(part: str, what: str) -> bytes:
    if not _B64URL.fullmatch(part) or len(part) % 4 == 1:
        raise BadReceipt(f"receipt {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        raise BadReceipt(f"receipt {what} is not base64url") from exc


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadReceipt(f"receipt {what} is not JSON") from exc
    if not isinstance(obj, dict):
        raise BadReceipt(f"receipt {what} is not a JSON object")
    return obj


def _keys(jwks: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(jwks, Mapping):
        keys = jwks.get("keys", [jwks] if "kty" in jwks else [])
    else:
        keys = list(jwks)
    return [k for k in keys if isinstance(k, Mapping)]


def check_receipt(
    token: str,
    jwks: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    issuer: str | None = None,
    leaf: bytes | None = None,
    response: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Verify a receipt offline and return its claims.

    ``jwks`` is a JWK set (``{"keys": [...]}``) or a list of JWKs. Optionally checks the
    issuer, that ``leaf_hash`` is the RFC 9162 hash of ``leaf`` (the audit entry fetched
    later) and that ``result_hash`` matches ``response`` (the answer received), with
    the hash of the suite the receipt's algorithm belongs to. Raises
    :class:`BadReceipt` for anything wrong: format, algorithm (EdDSA or SM2SM3 only, and
    the one the key is for), type, unknown ``kid``, signature, missing or mistyped
    claims, mismatches.
    """
    if not isinstance(token, str) or token.count(".") != 2:
        raise BadReceipt("a receipt is a compact JWS: three dot-separated parts")
    head_b64, body_b64, sig_b64 = token.split(".")
    header = _json_object(_b64url(head_b64, "header"), "header")
    alg = header.get("alg")
    if alg not in ("EdDSA", "SM2SM3"):
        raise BadReceipt(f"receipt algorithm {alg!r} is not EdDSA or SM2SM3")
    suite = suite_for_jws_alg(alg)
    if header.get("typ") != RECEIPT_TYP:
        raise BadReceipt(f"receipt type {header.get('typ')!r} is not {RECEIPT_TYP}")
    if "crit" in header:
        raise BadReceipt("receipt has critical header parameters this checker does not know")
    kid = header.get("kid")
    matching = [k for k in _keys(jwks) if k.get("kid") == kid]
    if not isinstance(kid, str) or not matching:
        raise BadReceipt(f"receipt key {kid!r} is not in the key set")
    signing_input = f"{head_b64}.{body_b64}".encode("ascii")
    signature = _b64url(sig_b64, "signature")
    try:
        if alg == "SM2SM3":
            ok = sm2.verify(sm2.public_key_bytes(matching[0]), signing_input, signature)
        else:
            pub = public_key_bytes(matching[0])
            try:
                eddsa.new(eddsa.import_public_key(pub), "rfc8032").verify(signing_input, signature)
                ok = True
            except ValueError:
                ok = False
    except AuditError as exc:
        raise BadReceipt(f"receipt key {kid!r}: {exc.message}") from exc
    if not ok:
        raise BadReceipt("receipt signature does not verify")
    claims = _json_object(_b64url(body_b64, "payload"), "payload")
    missing = [c for c in REQUIRED_CLAIMS if c not in claims]
    if missing:
        raise BadReceipt(f"receipt lacks claim(s) {', '.join(missing)}")
    if not isinstance(claims["iss"], str):
        raise BadReceipt("receipt 'iss' is not a string")
    for name in ("iat", "audit_index"):
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadReceipt(f"receipt {name!r} is not a non-negative integer")
    for name in ("leaf_hash", "request_hash", "result_hash"):
        value = claims[name]
        if name == "result_hash" and value is None:
            continue
        if not isinstance(value, str) or not _HEX64.fullmatch(value):
            raise BadReceipt(f"receipt {name!r} is not 64 lowercase hex digits")
    if "request_id" in claims and not isinstance(claims["request_id"], str):
        raise BadReceipt("receipt 'request_id' is not a string")
    if issuer is not None and claims["iss"] != issuer:
        raise BadReceipt(f"receipt issuer {claims['iss']!r} is not {issuer!r}")
    if leaf is not None and suite.tree.leaf(leaf).hex() != claims["leaf_hash"]:
        raise BadReceipt("receipt leaf_hash does not match the audit entry")
    if response is not None and result_hash(response, digest=suite.digest) != claims["result_hash"]:
        raise BadReceipt("receipt result_hash does not match the response")
    return claims
