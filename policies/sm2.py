"""SM2 keys and signatures on the call path (GB/T 32918 with SM3, DESIGN §13).

The only module that imports ``tongsuopy`` (a ``cryptography`` fork over Tongsuo, the
OpenSSL-derived library with the national algorithms): docs/suites.md records why it was
chosen (published vectors, interoperability with four other implementations, speed, and
nonces from OpenSSL's DRBG; the pure-Python ``gmssl`` package draws SM2 nonces from
``random`` and is never used to sign).

Signatures are ``r || s``, two 32-byte big-endian integers (as JWS encodes ECDSA), over
``SM3(Z_A || M)`` with ``Z_A`` computed from the default user id ``1234567812345678``
(GM/T 0009; Tongsuo's default, checked against the GB/T 32918.5 Annex A vector in the
tests). Keys are PKCS#8 PEM (private) and SPKI PEM (public) with the SM2 curve OID
1.2.156.10197.1.301.

:class:`SM2PrivateKey` has the three members of ``audit.note.RawSigner`` (``key_type``,
``public_key``, ``sign``), so it signs checkpoints and cosignatures as well as JWS; a
hardware signing server (密码机) would be another class with the same members.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from tongsuopy.crypto import hashes, serialization
from tongsuopy.crypto.asymciphers import ec
from tongsuopy.crypto.exceptions import InvalidSignature, UnsupportedAlgorithm

from products.errors import InvalidRequest

__all__ = ["DEFAULT_USER_ID", "SM2PrivateKey", "SM2PublicKey", "is_sm2_pem"]

DEFAULT_USER_ID = b"1234567812345678"
_SIGNATURE = ec.ECDSA(hashes.SM3())  # Tongsuo: SM2 sign with SM3 and Z_A of the default id
_N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123


def _point(public: ec.EllipticCurvePublicKey) -> bytes:
    return bytes(
        public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )


class SM2PublicKey:
    """An SM2 public key; verifies ``r || s`` signatures."""

    key_type = "SM2"

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        if not isinstance(key.curve, ec.SM2):
            raise InvalidRequest("not an SM2 public key")
        self._key = key
        self.public_key = _point(key)  # the 65-byte point 04 || X || Y

    @classmethod
    def from_pem(cls, pem: str | bytes) -> SM2PublicKey:
        """Parse an SPKI PEM SM2 key; raises ``InvalidRequest``."""
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise InvalidRequest("not an SM2 public key (SPKI PEM)") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise InvalidRequest("not an SM2 public key (SPKI PEM)")
        return cls(key)

    @classmethod
    def from_point(cls, point: bytes) -> SM2PublicKey:
        """Load the 65-byte point ``04 || X || Y``; raises ``InvalidRequest``."""
        try:
            return cls(ec.EllipticCurvePublicKey.from_encoded_point(ec.SM2(), point))
        except (ValueError, TypeError):
            raise InvalidRequest("not a point on the SM2 curve") from None

    @property
    def x(self) -> int:
        return int.from_bytes(self.public_key[1:33], "big")

    @property
    def y(self) -> int:
        return int.from_bytes(self.public_key[33:], "big")

    def pem(self) -> bytes:
        """Return the SPKI PEM."""
        return bytes(
            self._key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True if ``signature`` (``r || s``) is this key's SM2 signature of ``message``."""
        if len(signature) != 64:
            return False
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        if not (0 < r < _N and 0 < s < _N):
            return False
        try:
            self._key.verify(encode_dss_signature(r, s), message, _SIGNATURE)
        except InvalidSignature:
            return False
        return True


class SM2PrivateKey:
    """An SM2 private key held in this process (a ``RawSigner`` of ``audit.note``)."""

    key_type = "SM2"

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SM2):
            raise InvalidRequest("not an SM2 private key")
        self._key = key
        self.public = SM2PublicKey(key.public_key())
        self.public_key = self.public.public_key

    @classmethod
    def generate(cls) -> SM2PrivateKey:
        """Return a fresh key (Tongsuo's DRBG)."""
        return cls(ec.generate_private_key(ec.SM2()))

    @classmethod
    def from_pem(cls, pem: str | bytes) -> SM2PrivateKey:
        """Parse an unencrypted PKCS#8 PEM SM2 key; raises ``InvalidRequest``."""
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise InvalidRequest("not an unencrypted PKCS#8 PEM SM2 private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise InvalidRequest("not an unencrypted PKCS#8 PEM SM2 private key")
        return cls(key)

    @classmethod
    def from_scalar(cls, d: int) -> SM2PrivateKey:
        """Return the key with private scalar ``d`` (for the standard's test vectors)."""
        return cls(ec.derive_private_key(d, ec.SM2()))

    def private_pem(self) -> bytes:
        """Return the key as unencrypted PKCS#8 PEM."""
        return bytes(
            self._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def public_pem(self) -> bytes:
        """Return the public key as SPKI PEM."""
        return self.public.pem()

    def sign(self, message: bytes) -> bytes:
        """Return the SM2 signature ``r || s`` of ``message`` (random nonce from Tongsuo's
        DRBG; Z_A with the default user id)."""
        r, s = decode_dss_signature(self._key.sign(message, _SIGNATURE))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def is_sm2_pem(pem: str | bytes) -> bool:
    """True if ``pem`` is an SM2 private (PKCS#8) or public (SPKI) PEM key."""
    data = pem.encode() if isinstance(pem, str) else pem
    loader = SM2PrivateKey.from_pem if b"PRIVATE KEY-----" in data else SM2PublicKey.from_pem
    try:
        loader(data)
    except InvalidRequest:
        return False
    return True
