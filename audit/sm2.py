"""SM2 signature verification for the regulator's side (GB/T 32918, DESIGN §13).

Verification only: the audit package never signs with SM2 itself (the platform and the
witness sign through a :class:`audit.note.RawSigner` the service provides). The curve
arithmetic is GmSSL's, through the ``gmssl-pyx`` extension, which is a different
implementation from the one the service signs with (Tongsuo, ``policies/sm2.py``): an
offline check that does not share code with what it checks (docs/suites.md records the
comparison that chose both).

Keys are the 65-byte uncompressed point ``04 || X || Y`` on the recommended curve
(GB/T 32918.5), read from raw bytes, SPKI (PEM or DER, algorithm ``id-ecPublicKey``
with curve OID 1.2.156.10197.1.301) or a JWK ``{"kty": "EC", "crv": "SM2", "x", "y"}``.
Signatures are ``r || s``, two 32-byte big-endian integers (as JWS encodes ECDSA),
over ``SM3(Z_A || M)`` with ``Z_A`` from the user id (default ``1234567812345678``,
GM/T 0009).

Every check that can be made before the curve arithmetic is made here (point on the
curve, ``1 <= r, s < n``), so hostile input never reaches the C library in an
unexpected shape.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from audit.errors import UnsupportedAlgorithm

__all__ = [
    "DEFAULT_USER_ID",
    "SIGNATURE_SIZE",
    "SPKI_PREFIX",
    "jwk_of",
    "public_key_bytes",
    "spki_der",
    "spki_pem",
    "verify",
]

DEFAULT_USER_ID = b"1234567812345678"
SIGNATURE_SIZE = 64

# GB/T 32918.5 recommended curve y^2 = x^3 + ax + b over F_p, order n.
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123

#: DER of SubjectPublicKeyInfo up to the point: SEQUENCE { SEQUENCE { id-ecPublicKey,
#: sm2 curve 1.2.156.10197.1.301 }, BIT STRING (65 bytes) }. Fixed for every key.
SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")
_PEM = re.compile(
    r"\s*-----BEGIN PUBLIC KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PUBLIC KEY-----\s*"
)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_point(raw: bytes) -> bytes:
    if len(raw) != 65 or raw[0] != 4:
        raise UnsupportedAlgorithm("an SM2 public key is the 65-byte point 04 || X || Y")
    x, y = int.from_bytes(raw[1:33], "big"), int.from_bytes(raw[33:], "big")
    if not (x < P and y < P and (y * y - (x * x * x + A * x + B)) % P == 0):
        raise UnsupportedAlgorithm("not a point on the SM2 curve")
    return raw


def public_key_bytes(key: bytes | str | Mapping[str, Any]) -> bytes:
    """Return the 65-byte SM2 point of ``key``: raw point, SPKI DER/PEM, or SM2 JWK.

    Raises :class:`UnsupportedAlgorithm` for anything else or a point off the curve.
    """
    if isinstance(key, Mapping):
        if key.get("kty") != "EC" or key.get("crv") != "SM2":
            raise UnsupportedAlgorithm("JWK is not an SM2 key (kty EC, crv SM2)")
        try:
            x = _b64url_decode(str(key.get("x", "")))
            y = _b64url_decode(str(key.get("y", "")))
        except (ValueError, binascii.Error) as exc:
            raise UnsupportedAlgorithm("SM2 JWK 'x'/'y' are not base64url") from exc
        if len(x) != 32 or len(y) != 32:
            raise UnsupportedAlgorithm("SM2 JWK coordinates are 32 bytes each")
        return _check_point(b"\x04" + x + y)
    if isinstance(key, str):
        key = key.encode()
    if len(key) == 65:
        return _check_point(key)
    if key.startswith(SPKI_PREFIX):
        return _check_point(key[len(SPKI_PREFIX) :])
    match = _PEM.fullmatch(key.decode("ascii", "replace"))
    if match is None:
        raise UnsupportedAlgorithm("not an SM2 public key (SPKI PEM, DER, JWK or raw point)")
    try:
        der = base64.b64decode("".join(match.group(1).split()), validate=True)
    except binascii.Error as exc:
        raise UnsupportedAlgorithm("public key PEM is not base64") from exc
    if len(der) != len(SPKI_PREFIX) + 65 or not der.startswith(SPKI_PREFIX):
        raise UnsupportedAlgorithm("not an SM2 public key (SPKI with the SM2 curve OID)")
    return _check_point(der[len(SPKI_PREFIX) :])


def spki_der(point: bytes) -> bytes:
    """Return the SubjectPublicKeyInfo DER of a 65-byte SM2 point."""
    return SPKI_PREFIX + _check_point(point)


def spki_pem(point: bytes) -> str:
    """Return the SubjectPublicKeyInfo PEM of a 65-byte SM2 point."""
    b64 = base64.b64encode(spki_der(point)).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"


def jwk_of(point: bytes) -> dict[str, str]:
    """Return the JWK ``{"kty": "EC", "crv": "SM2", "x", "y"}`` of a 65-byte point."""
    _check_point(point)
    return {"kty": "EC", "crv": "SM2", "x": _b64url(point[1:33]), "y": _b64url(point[33:])}


def _der_integer(value: int) -> bytes:
    body = value.to_bytes((value.bit_length() + 8) // 8, "big")  # a leading 0 if needed
    return b"\x02" + bytes([len(body)]) + body


def verify(
    public_key: bytes, message: bytes, signature: bytes, user_id: bytes = DEFAULT_USER_ID
) -> bool:
    """True if ``signature`` (``r || s``) is ``public_key``'s SM2 signature of ``message``.

    ``public_key`` is a 65-byte point (see :func:`public_key_bytes`). Returns False for
    any malformed signature. Raises :class:`UnsupportedAlgorithm` when the ``gmssl-pyx``
    extension is not installed, or for a bad public key.
    """
    _check_point(public_key)
    if len(signature) != SIGNATURE_SIZE:
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    if not (0 < r < N and 0 < s < N):
        return False
    try:
        from gmssl_pyx import sm2_verify
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise UnsupportedAlgorithm(
            "SM2 verification needs the gmssl-pyx package (pip install gmssl-pyx)"
        ) from exc
    body = _der_integer(r) + _der_integer(s)
    der = b"\x30" + bytes([len(body)]) + body
    try:
        return bool(sm2_verify(public_key[1:], message, der, user_id))
    except Exception:  # the extension raises its own error types for bad input
        return False
