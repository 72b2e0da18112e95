"""The platform's own signing keys: receipts (JWS via pyjwt) and audit checkpoints,
and the deployment's cryptographic suite (DESIGN §13).

Keys live under ``<data dir>/keys`` as ``platform-<kid>.key`` (PKCS#8 PEM, mode
0600) and ``.pub`` (SPKI PEM); ``current`` names the signing key. Rotation adds a
key and moves ``current``; old public keys stay published in ``/v1/keys`` so that
old receipts and checkpoints still verify.

The suite is chosen once, at ``sandbox init --suite`` (default ``ed25519-sha256``), and
written to ``<keys dir>/suite``; every process reads it at start and refuses to run
another. In ``sm2-sm3`` the platform's keys are SM2: receipts are JWS ``SM2SM3``,
checkpoints are SM2 signed notes. Signing goes through ``sign_receipt`` and
``note_signer``: the only two places a hardware signing server (密码机) would plug in.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from audit.errors import AuditError
from audit.note import NoteSigner
from audit.suites import DEFAULT_SUITE, Suite, suite_named
from policies.calls import register_sm2sm3
from policies.principals import (
    KeyAlg,
    generate_keypair,
    jwk_thumbprint,
    load_public_key,
    public_jwk,
)
from policies.sm2 import SM2PrivateKey
from products.errors import Conflict, InvalidRequest

RECEIPT_TYP = "pds-receipt+jwt"
register_sm2sm3()  # receipts of the sm2-sm3 suite are JWS "SM2SM3"


@dataclass(frozen=True)
class PlatformKey:
    kid: str
    private_pem: bytes
    public_pem: bytes


SUITE_FILE = "suite"


def key_alg_for(suite: Suite) -> str:
    """The ``keys generate --alg`` of a suite's platform key: ``ed25519`` or ``sm2``."""
    return "sm2" if suite.key_type == "SM2" else "ed25519"


def deployment_suite(keys_dir: Path, requested: str | None, *, create: bool) -> Suite:
    """Return the deployment's suite, stored in ``<keys dir>/suite``.

    A deployment without the file but with a platform key predates suites: it is
    ``ed25519-sha256``. With ``create`` the file is written (``requested`` or the
    default). Raises ``InvalidRequest`` for an unknown suite name and ``Conflict``
    when ``requested`` is not the stored suite (a deployment never changes suite).
    """
    if requested is not None:
        try:
            suite_named(requested)
        except AuditError as exc:
            raise InvalidRequest(exc.message, {"field": "suite"}) from None
    path = keys_dir / SUITE_FILE
    if path.exists():
        stored = path.read_text().strip()
    elif (keys_dir / "current").exists():
        stored = DEFAULT_SUITE
    else:
        stored = requested or DEFAULT_SUITE
    if requested is not None and requested != stored:
        raise Conflict(
            f"this deployment runs the {stored} suite; a deployment never changes suite "
            f"(asked for {requested})"
        )
    if create and not path.exists():
        keys_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(keys_dir, 0o700)
        tmp = keys_dir / f"{SUITE_FILE}.tmp"
        tmp.write_text(stored + "\n")
        os.replace(tmp, path)
    try:
        return suite_named(stored)
    except AuditError as exc:
        raise InvalidRequest(f"{path}: {exc.message}") from None


class PlatformKeys:
    """The current signing key and every public key ever used, for one suite."""

    def __init__(
        self,
        current: PlatformKey,
        public: dict[str, bytes],
        note_name: str,
        suite: Suite | None = None,
    ) -> None:
        self.current = current
        self.public = public  # kid -> SPKI PEM, current included
        self.suite = suite or suite_named(DEFAULT_SUITE)
        # kid -> parsed key
        self._loaded: dict[str, ed25519.Ed25519PrivateKey | SM2PrivateKey] = {}
        self.note_name = note_name
        want = KeyAlg.SM2SM3 if self.suite.key_type == "SM2" else KeyAlg.EDDSA
        if load_public_key(current.public_pem)[1] is not want:
            raise InvalidRequest(
                f"the platform key {current.kid} is not a {self.suite.key_type} key, as the "
                f"{self.suite.name} suite needs"
            )

    @classmethod
    def open(
        cls, keys_dir: Path, note_name: str, *, create: bool, suite: Suite | None = None
    ) -> PlatformKeys:
        """Load the keys; with ``create``, make the first key (of ``suite``'s type) if
        there is none.

        Raises ``InvalidRequest`` when no key exists and ``create`` is False, or when
        the current key is not of the suite's type.
        """
        suite = suite or suite_named(DEFAULT_SUITE)
        pointer = keys_dir / "current"
        if not pointer.exists():
            if not create:
                raise InvalidRequest(f"no platform key in {keys_dir}; run 'sandbox init' first")
            cls.install(keys_dir, *generate_keypair(key_alg_for(suite)))
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
        return cls(current, public, note_name, suite)

    @staticmethod
    def install(keys_dir: Path, private_pem: bytes, public_pem: bytes) -> str:
        """Store a key pair (Ed25519 or SM2) and make it the one that signs (the pointer
        to it is replaced atomically). Returns its kid."""
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
        """Return the JWKS of all platform keys (current first), with the deployment's
        ``suite`` (an extension member: clients and witnesses learn the hash from it)."""
        order = [self.current.kid, *sorted(k for k in self.public if k != self.current.kid)]
        return {
            "suite": self.suite.name,
            "keys": [
                {
                    **public_jwk(self.public[kid]),
                    "kid": kid,
                    "alg": load_public_key(self.public[kid])[1].value,
                    "use": "sig",
                    "name": self.note_name,
                }
                for kid in order
            ],
        }

    def _private(self) -> ed25519.Ed25519PrivateKey | SM2PrivateKey:
        current = self.current
        key = self._loaded.get(current.kid)
        if key is None:  # parsing the PEM costs more than signing: once per key
            loaded: Any
            try:
                loaded = serialization.load_pem_private_key(current.private_pem, password=None)
            except UnsupportedAlgorithm:  # cryptography has no SM2 curve
                loaded = SM2PrivateKey.from_pem(current.private_pem)
            if not isinstance(loaded, ed25519.Ed25519PrivateKey | SM2PrivateKey):
                raise InvalidRequest("the platform key is not an Ed25519 or SM2 key")
            key = self._loaded[current.kid] = loaded
        return key

    def sign_receipt(self, claims: dict[str, Any]) -> str:
        """Return the compact JWS receipt over ``claims`` with the current key (``EdDSA``,
        or ``SM2SM3`` in the ``sm2-sm3`` suite)."""
        key: Any = self._private()  # SM2 keys go to the registered SM2SM3 algorithm
        return jwt.encode(
            claims,
            key,
            algorithm=self.suite.jws_alg,
            headers={"kid": self.current.kid, "typ": RECEIPT_TYP},
        )

    def note_signer(self) -> NoteSigner:
        """Return the checkpoint signer of the current key (signed-note key name: the
        log origin)."""
        key = self._private()
        if isinstance(key, SM2PrivateKey):
            return NoteSigner(key, self.note_name)
        return NoteSigner.from_pem(self.current.private_pem, name=self.note_name)


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
