"""Principals (operators, enterprises, regulators) and their public keys.

Keys are accepted as PEM (SPKI public, PKCS#8 private) and published as JWKs. The
default ``kid`` is the RFC 7638 thumbprint of the public JWK. Each key is pinned to
one algorithm: Ed25519 keys sign ``EdDSA``, P-256 keys sign ``ES256``, SM2 keys sign
``SM2SM3`` (DESIGN §13; JWK ``{"kty": "EC", "crv": "SM2", "x", "y"}``); a token that
names any other algorithm for the key is refused.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from policies.sm2 import SM2PrivateKey, SM2PublicKey
from policies.tables import principal_keys, principals
from products.errors import InvalidRequest, NotFound
from products.parsing import field_error

PRINCIPAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
KID = re.compile(r"^[A-Za-z0-9._~-]{1,128}\Z")
Clock = Callable[[], datetime]


class Role(StrEnum):
    OPERATOR = "operator"
    ENTERPRISE = "enterprise"
    REGULATOR = "regulator"


class KeyAlg(StrEnum):
    EDDSA = "EdDSA"
    ES256 = "ES256"
    SM2SM3 = "SM2SM3"


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


PublicKeyObject = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | SM2PublicKey


@functools.lru_cache(maxsize=4096)
def load_public_key(pem: str | bytes) -> tuple[PublicKeyObject, KeyAlg]:
    """Parse an SPKI PEM public key. Returns the key and its pinned algorithm.

    Raises ``InvalidRequest`` for anything but Ed25519, P-256 or SM2. Cached: every
    signed call verifies with a registered key, and parsing costs as much as verifying.
    """
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except UnsupportedAlgorithm:
        # cryptography knows no SM2 curve: try Tongsuo (policies/sm2.py).
        try:
            return SM2PublicKey.from_pem(data), KeyAlg.SM2SM3
        except InvalidRequest:
            raise InvalidRequest(
                "only Ed25519 (EdDSA), P-256 (ES256) and SM2 (SM2SM3) public keys are accepted",
                {"field": "public_key"},
            ) from None
    except (ValueError, TypeError):
        raise InvalidRequest(
            "public_key is not a PEM (SPKI) public key", {"field": "public_key"}
        ) from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, KeyAlg.EDDSA
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, KeyAlg.ES256
    raise InvalidRequest(
        "only Ed25519 (EdDSA), P-256 (ES256) and SM2 (SM2SM3) public keys are accepted",
        {"field": "public_key"},
    )


def public_jwk(pem: str | bytes) -> dict[str, str]:
    """Return the public JWK (RFC 7517) of an SPKI PEM key, without ``kid``."""
    key, _alg = load_public_key(pem)
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64u(raw)}
    if isinstance(key, SM2PublicKey):
        point = key.public_key
        return {"kty": "EC", "crv": "SM2", "x": _b64u(point[1:33]), "y": _b64u(point[33:])}
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64u(numbers.x.to_bytes(32, "big")),
        "y": _b64u(numbers.y.to_bytes(32, "big")),
    }


def jwk_thumbprint(pem: str | bytes) -> str:
    """Return the RFC 7638 SHA-256 thumbprint (base64url) of a public key."""
    jwk = public_jwk(pem)
    required = ("crv", "kty", "x") if jwk["kty"] == "OKP" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64u(hashlib.sha256(canonical.encode()).digest())


def generate_keypair(alg: str = "ed25519") -> tuple[bytes, bytes]:
    """Return ``(private PKCS#8 PEM, public SPKI PEM)`` for ``ed25519``, ``es256`` or
    ``sm2``."""
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    if alg.lower() == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    elif alg.lower() == "es256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif alg.lower() == "sm2":
        sm2_key = SM2PrivateKey.generate()
        return sm2_key.private_pem(), sm2_key.public_pem()
    else:
        raise InvalidRequest(f"unknown key algorithm {alg!r}: use ed25519, es256 or sm2")
    priv_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return priv_pem, pub_pem


def public_pem_of(private_pem: bytes) -> bytes:
    """Return the SPKI PEM of a PKCS#8 PEM private key. Raises ``InvalidRequest``."""
    try:
        private = serialization.load_pem_private_key(private_pem, password=None)
    except UnsupportedAlgorithm:
        return SM2PrivateKey.from_pem(private_pem).public_pem()
    except (ValueError, TypeError):
        raise InvalidRequest("not an unencrypted PKCS#8 PEM private key") from None
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class PublicKey:
    kid: str
    alg: KeyAlg
    pem: str
    status: str = "active"

    @property
    def active(self) -> bool:
        return self.status == "active"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "alg": self.alg.value,
            "status": self.status,
            "public_key": self.pem,
            "jwk": {**public_jwk(self.pem), "kid": self.kid, "alg": self.alg.value},
        }


@dataclass(frozen=True)
class Principal:
    id: str
    role: Role
    name: str
    keys: tuple[PublicKey, ...]
    created_at: datetime
    disabled_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    def key(self, kid: str) -> PublicKey | None:
        return next((k for k in self.keys if k.kid == kid), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role.value,
            "name": self.name,
            "keys": [k.to_dict() for k in self.keys],
            "created_at": _iso(self.created_at),
            "disabled_at": _iso(self.disabled_at) if self.disabled_at else None,
        }


def _iso(t: datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_key(spec: dict[str, Any]) -> PublicKey:
    """Validate one ``{"kid"?, "alg"?, "public_key"}`` entry. Raises ``InvalidRequest``."""
    pem = spec.get("public_key")
    if not isinstance(pem, str):
        raise InvalidRequest("each key needs public_key (SPKI PEM)", {"field": "public_key"})
    _, alg = load_public_key(pem)
    claimed = spec.get("alg")
    if claimed is not None and claimed != alg.value:
        raise InvalidRequest(
            f"alg {claimed!r} does not fit this key; it is a {alg.value} key",
            {"field": "alg"},
        )
    kid = spec.get("kid") or jwk_thumbprint(pem)
    if not isinstance(kid, str) or not KID.match(kid):
        raise InvalidRequest("kid must match [A-Za-z0-9._~-]{1,128}", {"field": "kid"})
    return PublicKey(kid=kid, alg=alg, pem=pem.strip() + "\n")


#: Names the platform itself writes entries under: no principal may take them.
RESERVED_IDS = frozenset({"platform", "anonymous", "unauthenticated"})


def check_new_principal(principal_id: str, keys: Sequence[PublicKey]) -> None:
    """Raise ``InvalidRequest`` for an id or key set that may not be registered."""
    if not PRINCIPAL_ID.match(principal_id):
        raise InvalidRequest(
            "principal id must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}", {"field": "id"}
        )
    if principal_id.lower() in RESERVED_IDS:
        raise InvalidRequest(
            f"principal id {principal_id!r} is reserved for the platform's own entries",
            {"field": "id"},
        )
    kids = [k.kid for k in keys]
    if len(set(kids)) != len(kids):
        raise InvalidRequest("two keys share a kid", {"field": "keys"})


class KeySchema(Schema):
    """A public key ``{public_key, kid?, alg?}`` (DESIGN §5) → :class:`PublicKey`."""

    class Meta:
        unknown = RAISE

    public_key = fields.String(
        required=True,
        validate=validate.Length(max=16_000),
        metadata={"description": "SPKI PEM (Ed25519, P-256 or SM2)"},
    )
    kid = fields.String(metadata={"description": "default: the RFC 7638 JWK thumbprint"})
    alg = fields.String(validate=validate.OneOf([a.value for a in KeyAlg]))

    @post_load
    def _key(self, data: dict[str, Any], **_: Any) -> PublicKey:
        try:
            return parse_key(data)
        except InvalidRequest as exc:
            raise field_error(exc, "public_key") from None


@dataclass(frozen=True)
class PrincipalRequest:
    """A principal to register, as parsed: its keys checked, not yet stored."""

    id: str
    role: Role
    name: str
    keys: tuple[PublicKey, ...]


class PrincipalSchema(Schema):
    """``{id, role, name, keys}`` (DESIGN §5) → :class:`PrincipalRequest`."""

    class Meta:
        unknown = RAISE

    id = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf([r.value for r in Role]))
    name = fields.String(required=True, validate=validate.Length(min=1, max=300))
    keys = fields.List(
        fields.Nested(KeySchema), required=True, validate=validate.Length(min=1, max=16)
    )

    @post_load
    def _principal(self, data: dict[str, Any], **_: Any) -> PrincipalRequest:
        keys = tuple(data["keys"])
        try:
            check_new_principal(data["id"], keys)
        except InvalidRequest as exc:
            raise field_error(exc, "id") from None
        if not data["name"].strip():
            raise ValidationError({"name": ["must not be blank"]})
        return PrincipalRequest(data["id"], Role(data["role"]), data["name"].strip(), keys)


# Inserts that write nothing for a taken id or kid instead of failing, so that they can
# run in a shared transaction (the audit append's); RETURNING tells whether they wrote.
_INSERT_PRINCIPAL = {
    name: insert(principals)
    .on_conflict_do_nothing(index_elements=["id"])
    .returning(principals.c.id)
    for name, insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert))
}
_INSERT_KEY = {
    name: insert(principal_keys)
    .on_conflict_do_nothing(index_elements=["principal_id", "kid"])
    .returning(principal_keys.c.kid)
    for name, insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert))
}


class PrincipalStore:
    """Principals and their keys in the control-plane store.

    ``find`` (on every signed call) is served from a per-process cache for at most
    ``cache_ttl_s`` seconds; this process's own changes clear it at once, another
    process's changes (a disabled key) take effect here within that time.
    """

    def __init__(self, engine: Engine, clock: Clock, cache_ttl_s: float = 1.0) -> None:
        self._engine = engine
        self._clock = clock
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    @staticmethod
    def add(conn: Connection, principal: Principal, created_by: str | None) -> Principal | None:
        """Store ``principal`` with its keys on ``conn`` (checked by
        ``check_new_principal``); returns it, or None, writing nothing, if the id is
        taken."""
        row = dict(
            id=principal.id,
            role=principal.role.value,
            name=principal.name,
            created_by=created_by,
            created_at=principal.created_at,
        )
        if conn.execute(_INSERT_PRINCIPAL[conn.dialect.name], row).first() is None:
            return None
        for k in principal.keys:
            conn.execute(
                principal_keys.insert().values(
                    principal_id=principal.id,
                    kid=k.kid,
                    alg=k.alg.value,
                    public_key=k.pem,
                    status="active",
                    created_at=principal.created_at,
                )
            )
        return principal

    def find(self, principal_id: str) -> Principal | None:
        """Return the principal, or None."""
        now = time.monotonic()
        hit = self._cache.get(principal_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = self._load(principal_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[principal_id] = (now + self._ttl, found)
        return found

    def _load(self, principal_id: str) -> Principal | None:
        with self._engine.connect() as conn:
            return self.load(conn, principal_id)

    @staticmethod
    def load(conn: Connection, principal_id: str) -> Principal | None:
        """Return the principal as read on ``conn``, or None."""
        row = conn.execute(sa.select(principals).where(principals.c.id == principal_id)).first()
        if row is None:
            return None
        keys = conn.execute(
            sa.select(principal_keys)
            .where(principal_keys.c.principal_id == principal_id)
            .order_by(principal_keys.c.created_at, principal_keys.c.kid)
        ).all()
        return Principal(
            id=row.id,
            role=Role(row.role),
            name=row.name,
            keys=tuple(PublicKey(k.kid, KeyAlg(k.alg), k.public_key, k.status) for k in keys),
            created_at=row.created_at,
            disabled_at=row.disabled_at,
        )

    def get(self, principal_id: str) -> Principal:
        """Return the principal as stored now. Raises ``NotFound``."""
        found = self._load(principal_id)
        if found is None:
            raise NotFound(f"no principal {principal_id!r}", {"principal": principal_id})
        return found

    @staticmethod
    def add_key(conn: Connection, principal_id: str, key: PublicKey, now: datetime) -> bool:
        """Add ``key`` to an existing principal on ``conn``: returns False, writing
        nothing, if the kid is taken."""
        values = {
            "principal_id": principal_id,
            "kid": key.kid,
            "alg": key.alg.value,
            "public_key": key.pem,
            "status": "active",
            "created_at": now,
        }
        return conn.execute(_INSERT_KEY[conn.dialect.name], values).first() is not None

    @staticmethod
    def disable_key(conn: Connection, principal_id: str, kid: str, now: datetime) -> bool:
        """Disable a key on ``conn`` (tokens signed with it are refused from then on):
        False if there is no such key."""
        n = conn.execute(
            principal_keys.update()
            .where(principal_keys.c.principal_id == principal_id, principal_keys.c.kid == kid)
            .values(status="disabled", disabled_at=now)
        ).rowcount
        return bool(n)

    def forget(self) -> None:
        """Drop this process's cached copies (after a change committed here)."""
        self._cache.clear()

    def with_role(self, role: Role) -> list[Principal]:
        """Return every principal of ``role``, ordered by id."""
        with self._engine.connect() as conn:
            ids = (
                conn.execute(
                    sa.select(principals.c.id)
                    .where(principals.c.role == role.value)
                    .order_by(principals.c.id)
                )
                .scalars()
                .all()
            )
        return [self.get(str(i)) for i in ids]

    def count(self) -> int:
        with self._engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(principals)).scalar_one()
            )
