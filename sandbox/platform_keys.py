"""The platform's own signing keys: receipts (JWS via pyjwt) and audit checkpoints.

Keys live under ``<data dir>/keys`` as ``platform-<kid>.key`` (PKCS#8 PEM, mode
0600) and ``.pub`` (SPKI PEM); ``current`` names the signing key. Rotation adds a
key and moves ``current``; old public keys stay published in ``/v1/keys`` so that
old receipts and checkpoints still verify.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from policies.principals import generate_keypair, jwk_thumbprint, public_jwk
from products.errors import InvalidRequest

RECEIPT_TYP = "pds-receipt+jwt"


@dataclass(frozen=True)
class PlatformKey:
    kid: str
    private_pem: bytes
    public_pem: bytes


class PlatformKeys:
    """The current signing key and every public key ever used."""

    def __init__(self, current: PlatformKey, public: dict[str, bytes], note_name: str) -> None:
        self.current = current
        self.public = public  # kid -> SPKI PEM, current included
        self._loaded: dict[str, ed25519.Ed25519PrivateKey] = {}  # kid -> parsed key
        self.note_name = note_name

    @classmethod
    def open(cls, keys_dir: Path, note_name: str, *, create: bool) -> PlatformKeys:
        """Load the keys; with ``create``, make the first key if there is none.

        Raises ``InvalidRequest`` when no key exists and ``create`` is False.
        """
        pointer = keys_dir / "current"
        if not pointer.exists():
            if not create:
                raise InvalidRequest(f"no platform key in {keys_dir}; run 'sandbox init' first")
            cls.install(keys_dir, *generate_keypair("ed25519"))
        kid = pointer.read_text().strip()
        current = PlatformKey(
            kid=kid,
            private_pem=(keys_dir / f"platform-{kid}.key").read_bytes(),
            public_pem=(keys_dir / f"platform-{kid}.pub").read_bytes(),
        )
        public = {
            p.name[len("platform-") : -len(".pub")]: p.read_bytes()
            for p in sorted(keys_dir.glob("platform-*.pub"))
        }
        return cls(current, public, note_name)

    @staticmethod
    def install(keys_dir: Path, private_pem: bytes, public_pem: bytes) -> str:
        """Store an Ed25519 key pair and make it the one that signs (the pointer to it
        is replaced atomically). Returns its kid."""
        keys_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(keys_dir, 0o700)
        kid = jwk_thumbprint(public_pem)
        key_path = keys_dir / f"platform-{kid}.key"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem)
        (keys_dir / f"platform-{kid}.pub").write_bytes(public_pem)
        tmp = keys_dir / "current.tmp"
        tmp.write_text(kid + "\n")
        os.replace(tmp, keys_dir / "current")
        return kid

    def jwks(self) -> dict[str, Any]:
        """Return the JWKS of all platform keys (current first)."""
        order = [self.current.kid, *sorted(k for k in self.public if k != self.current.kid)]
        return {
            "keys": [
                {
                    **public_jwk(self.public[kid]),
                    "kid": kid,
                    "alg": "EdDSA",
                    "use": "sig",
                    "name": self.note_name,
                }
                for kid in order
            ]
        }

    def sign_receipt(self, claims: dict[str, Any]) -> str:
        """Return the compact JWS receipt over ``claims`` with the current key."""
        current = self.current
        key = self._loaded.get(current.kid)
        if key is None:  # parsing the PEM costs more than signing: once per key
            loaded = serialization.load_pem_private_key(current.private_pem, password=None)
            if not isinstance(loaded, ed25519.Ed25519PrivateKey):
                raise InvalidRequest("the platform key is not an Ed25519 key")
            key = self._loaded[current.kid] = loaded
        return jwt.encode(
            claims, key, algorithm="EdDSA", headers={"kid": current.kid, "typ": RECEIPT_TYP}
        )


def subject_key_secret(keys_dir: Path, *, create: bool) -> bytes:
    """Return the deployment's secret for keyed hashes of verification subjects.

    Audit entries and enumeration counters hold HMAC-SHA-256(secret, subject key),
    never the key: with 32 random bytes no one without the secret can test guesses.
    Created (mode 0600) on first use when ``create``. Raises ``InvalidRequest``.
    """
    path = keys_dir / "subject-key.secret"
    if not path.exists():
        if not create:
            raise InvalidRequest(f"no subject-key secret in {keys_dir}; run 'sandbox init'")
        keys_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path.read_bytes()
