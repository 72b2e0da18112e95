"""Signed calls (DESIGN §6), both ways: ``sign_call`` for clients, ``verify_call`` for
the server. Every JWT goes through pyjwt; the checks pyjwt would otherwise skip
(required claims, lifetime cap, ``typ``, per-key algorithm pinning, request binding
and replay) are made explicitly here.

SM2 (DESIGN §13) is registered with pyjwt under the algorithm name ``SM2SM3`` through
its public algorithm API (:class:`SM2SM3Algorithm`, ``jwt.register_algorithm``): the
signature is the SM2 signature ``r || s`` over the JWS signing input, with the default
user id. Registering happens when this module is imported; receipts and the client
sign through the same registration.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import Algorithm

from policies.errors import BadSignature, TokenExpired, Unauthenticated
from policies.principals import KeyAlg, Principal, PublicKey, load_public_key
from policies.sm2 import SM2PrivateKey, SM2PublicKey
from products.errors import InvalidRequest
from products.text import is_utf8

CALL_TYP = "pds-call+jwt"


REQUIRED_CLAIMS = ("iss", "aud", "iat", "exp", "jti", "htm", "htu", "bh")
MAX_JTI_LENGTH = 256


def body_hash(body: bytes) -> str:
    """Return the ``bh`` claim for a body: base64url, no padding, of its SHA-256."""
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()


def bh_of_digest(digest: bytes) -> str:
    """Return the ``bh`` claim from an already computed SHA-256 digest."""
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class SM2SM3Algorithm(Algorithm):
    """JWS algorithm ``SM2SM3`` (DESIGN §13): SM2 with SM3 over the signing input, the
    signature ``r || s`` (64 bytes) as JWS encodes ECDSA. Keys: :class:`SM2PrivateKey`
    or :class:`SM2PublicKey`, or their PEM (PKCS#8 or SPKI)."""

    def prepare_key(self, key: Any) -> SM2PrivateKey | SM2PublicKey:
        if isinstance(key, SM2PrivateKey | SM2PublicKey):
            return key
        if isinstance(key, str):
            key = key.encode()
        if not isinstance(key, bytes):
            raise jwt.InvalidKeyError("SM2SM3 needs an SM2 key")
        try:
            if b"PRIVATE KEY-----" in key:
                return SM2PrivateKey.from_pem(key)
            return SM2PublicKey.from_pem(key)
        except InvalidRequest as exc:
            raise jwt.InvalidKeyError(str(exc)) from None

    def sign(self, msg: bytes, key: Any) -> bytes:
        if not isinstance(key, SM2PrivateKey):
            raise jwt.InvalidKeyError("signing with SM2SM3 needs an SM2 private key")
        return key.sign(msg)

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        public = key.public if isinstance(key, SM2PrivateKey) else key
        return isinstance(public, SM2PublicKey) and public.verify(msg, sig)

    @staticmethod
    def to_jwk(key_obj: Any, as_dict: bool = False) -> Any:
        public = key_obj.public if isinstance(key_obj, SM2PrivateKey) else key_obj
        if not isinstance(public, SM2PublicKey):
            raise jwt.InvalidKeyError("not an SM2 key")
        point = public.public_key
        jwk = {
            "kty": "EC",
            "crv": "SM2",
            "x": base64.urlsafe_b64encode(point[1:33]).rstrip(b"=").decode(),
            "y": base64.urlsafe_b64encode(point[33:]).rstrip(b"=").decode(),
        }
        return jwk if as_dict else json.dumps(jwk)

    @staticmethod
    def from_jwk(jwk: str | dict[str, Any]) -> SM2PublicKey:
        obj = json.loads(jwk) if isinstance(jwk, str) else jwk
        if obj.get("kty") != "EC" or obj.get("crv") != "SM2":
            raise jwt.InvalidKeyError("not an SM2 JWK")
        try:
            x = base64.urlsafe_b64decode(obj["x"] + "=" * (-len(obj["x"]) % 4))
            y = base64.urlsafe_b64decode(obj["y"] + "=" * (-len(obj["y"]) % 4))
            return SM2PublicKey.from_point(b"\x04" + x + y)
        except (KeyError, TypeError, ValueError, InvalidRequest):
            raise jwt.InvalidKeyError("not an SM2 JWK") from None


def register_sm2sm3() -> None:
    """Register ``SM2SM3`` with pyjwt's global JWS object (idempotent)."""
    try:
        jwt.get_algorithm_by_name(KeyAlg.SM2SM3.value)
    except NotImplementedError:
        jwt.register_algorithm(KeyAlg.SM2SM3.value, SM2SM3Algorithm())


register_sm2sm3()


def _alg_for_private(private_pem: bytes) -> str:
    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except UnsupportedAlgorithm:  # cryptography has no SM2 curve
        SM2PrivateKey.from_pem(private_pem)
        return KeyAlg.SM2SM3.value
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return load_public_key(public)[1].value


def sign_call(
    private_pem: bytes,
    *,
    issuer: str,
    kid: str,
    audience: str,
    method: str,
    path_and_query: str,
    body: bytes = b"",
    now: datetime | None = None,
    lifetime_s: int = 60,
    jti: str | None = None,
) -> str:
    """Return the compact JWT that authorises one request (for ``Authorization: Bearer``)."""
    issued = int((now or datetime.now(UTC)).timestamp())
    claims = {
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "exp": issued + lifetime_s,
        "jti": jti or secrets.token_urlsafe(18),
        "htm": method.upper(),
        "htu": path_and_query,
        "bh": body_hash(body),
    }
    alg = _alg_for_private(private_pem)
    key: Any = SM2PrivateKey.from_pem(private_pem) if alg == KeyAlg.SM2SM3.value else private_pem
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": CALL_TYP})


@dataclass(frozen=True)
class VerifiedCall:
    """A request whose signature and binding checked out."""

    principal: Principal
    kid: str
    jti: str
    issued_at: datetime
    expires_at: datetime
    body_hash: str  # the signed ``bh`` claim
    replay_window_ends: datetime  # until when the nonce must be remembered (exp + skew)

    def check_body(self, body_sha256: bytes) -> None:
        """Check a body read after the token was verified (streamed uploads).

        Raises ``BadSignature`` (``bh_mismatch``).
        """
        if not hmac.compare_digest(self.body_hash.encode(), bh_of_digest(body_sha256).encode()):
            raise BadSignature(
                "request body does not match the signed body hash",
                "bh_mismatch",
                issuer=self.principal.id,
            )


@dataclass(frozen=True)
class CallPolicy:
    audience: str
    max_lifetime_s: int = 300
    clock_skew_s: int = 60


PrincipalLookup = Callable[[str], Principal | None]


def claimed_issuer(token: str) -> str | None:
    """Return the unverified ``iss`` of a token, for audit only (never for decisions)."""
    try:
        iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError:
        return None
    if not isinstance(iss, str) or len(iss) > 128 or not is_utf8(iss):
        return None
    return iss


def _unverified_parts(token: str) -> tuple[str | None, dict[str, Any]]:
    """Return the token's claimed issuer (for the audit entry and the key lookup only)
    and its header. Raises ``Unauthenticated`` if the token is not a compact JWS."""
    try:
        # One parse for both in the common case of a well-formed token.
        parts = jwt.decode_complete(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        parts = None
    if parts is not None and isinstance(parts["payload"], dict):
        iss = parts["payload"].get("iss")
        ok = isinstance(iss, str) and len(iss) <= 128 and is_utf8(iss)
        return (iss if ok else None), parts["header"]
    issuer = claimed_issuer(token)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Unauthenticated(
            "the token is not a compact JWS", "malformed_token", issuer=issuer
        ) from None
    return issuer, header


def verify_call(
    authorization: str | None,
    *,
    method: str,
    path_and_query: str,
    body_sha256: bytes | None,
    policy: CallPolicy,
    principals: PrincipalLookup,
    now: datetime,
) -> VerifiedCall:
    """Check the ``Authorization`` header of one request (DESIGN §6).

    Returns the verified call. Raises ``Unauthenticated``, ``BadSignature`` or
    ``TokenExpired``, each with ``details.reason`` naming the check. The nonce is
    claimed by the caller, in the transaction that commits the call
    (``NonceStore.claim``; a replay is refused there). ``body_sha256`` None defers the
    ``bh`` check to ``VerifiedCall.check_body`` (for bodies streamed to disk only once
    the caller is known).
    """
    if not authorization:
        raise Unauthenticated(
            "this endpoint needs a signed call (Authorization: Bearer <JWT>)", "missing_token"
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("Authorization must be 'Bearer <JWT>'", "malformed_authorization")
    issuer, header = _unverified_parts(token)
    alg = header.get("alg")
    if header.get("typ") != CALL_TYP:
        raise BadSignature(f"token typ must be {CALL_TYP!r}", "wrong_typ", issuer=issuer)
    if alg not in {a.value for a in KeyAlg}:
        raise BadSignature(
            f"algorithm {alg!r} is not accepted (EdDSA, ES256 or SM2SM3 only)",
            "alg_not_allowed",
            issuer=issuer,
        )
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Unauthenticated("token header needs kid", "missing_kid", issuer=issuer)
    if issuer is None:
        raise Unauthenticated(
            "token needs an iss claim", "missing_claim", issuer=None, details={"claim": "iss"}
        )

    principal = principals(issuer)
    key: PublicKey | None = principal.key(kid) if principal else None
    if principal is None or key is None:
        raise Unauthenticated(
            f"no key {kid!r} registered for principal {issuer!r}", "unknown_kid", issuer=issuer
        )
    if not principal.active:
        raise Unauthenticated(
            f"principal {issuer!r} is disabled", "principal_disabled", issuer=issuer
        )
    if not key.active:
        raise Unauthenticated(f"key {kid!r} is disabled", "key_disabled", issuer=issuer)
    if alg != key.alg.value:
        raise BadSignature(
            f"key {kid!r} is registered for {key.alg.value}, not {alg}",
            "alg_mismatch",
            issuer=issuer,
        )

    public_key: Any = load_public_key(key.pem)[0]
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=public_key,
            algorithms=[key.alg.value],
            audience=policy.audience,
            leeway=policy.clock_skew_s,
            options={
                "require": list(REQUIRED_CLAIMS),
                "verify_signature": True,
                # Time is checked below against the injected clock, not pyjwt's.
                "verify_exp": False,
                "verify_iat": False,
                "verify_aud": True,
                "verify_iss": False,
                "verify_nbf": False,
            },
        )
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthenticated(
            f"token lacks required claim {exc.claim!r}",
            "missing_claim",
            issuer=issuer,
            details={"claim": exc.claim},
        ) from None
    except jwt.ExpiredSignatureError:
        raise TokenExpired("token has expired", "expired", issuer=issuer) from None
    except jwt.ImmatureSignatureError:
        raise Unauthenticated(
            "token iat is in the future beyond the allowed skew", "iat_in_future", issuer=issuer
        ) from None
    except jwt.InvalidAudienceError:
        raise BadSignature(
            "token is addressed to another audience", "wrong_audience", issuer=issuer
        ) from None
    except jwt.InvalidSignatureError:
        raise BadSignature("signature does not verify", "bad_signature", issuer=issuer) from None
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"token rejected: {exc}", "invalid_token", issuer=issuer) from None

    # pyjwt checked ``aud``: the audience, or an array containing it (RFC 7519 §4.1.3).
    for name in ("iat", "exp"):
        value = claims[name]
        # A NumericDate may be fractional (RFC 7519 §2); a finite number.
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise Unauthenticated(
                f"{name} must be a NumericDate",
                "invalid_claim",
                issuer=issuer,
                details={"claim": name},
            )
        if not -(2**53) < value < 2**53:
            raise Unauthenticated(
                f"{name} is out of range", "invalid_claim", issuer=issuer, details={"claim": name}
            )
    for name in ("jti", "htm", "htu", "bh"):
        if not isinstance(claims[name], str) or not is_utf8(claims[name]):
            raise Unauthenticated(
                f"{name} must be a string", "invalid_claim", issuer=issuer, details={"claim": name}
            )
    iat, exp = claims["iat"], claims["exp"]
    now_s = now.timestamp()
    if exp - iat > policy.max_lifetime_s or exp <= iat:
        raise Unauthenticated(
            f"token lifetime exp-iat must be at most {policy.max_lifetime_s} s",
            "lifetime_too_long",
            issuer=issuer,
        )
    if iat > now_s + policy.clock_skew_s:
        raise Unauthenticated(
            "token iat is in the future beyond the allowed skew", "iat_in_future", issuer=issuer
        )
    if exp + policy.clock_skew_s <= now_s:
        raise TokenExpired("token has expired", "expired", issuer=issuer)
    if not claims["jti"] or len(claims["jti"]) > MAX_JTI_LENGTH:
        raise Unauthenticated(
            "jti must be 1..256 characters",
            "invalid_claim",
            issuer=issuer,
            details={"claim": "jti"},
        )
    if claims["htm"] != method.upper():
        raise BadSignature("token is bound to another HTTP method", "htm_mismatch", issuer=issuer)
    if claims["htu"] != path_and_query:
        raise BadSignature("token is bound to another path or query", "htu_mismatch", issuer=issuer)
    if body_sha256 is not None and not hmac.compare_digest(
        claims["bh"].encode(), bh_of_digest(body_sha256).encode()
    ):
        raise BadSignature(
            "request body does not match the signed body hash", "bh_mismatch", issuer=issuer
        )

    expires_at = datetime.fromtimestamp(exp + policy.clock_skew_s, UTC)
    return VerifiedCall(
        principal=principal,
        kid=kid,
        jti=claims["jti"],
        issued_at=datetime.fromtimestamp(iat, UTC),
        expires_at=datetime.fromtimestamp(exp, UTC),
        body_hash=claims["bh"],
        replay_window_ends=expires_at,
    )


def expiry_window(policy: CallPolicy) -> timedelta:
    """How long a nonce must be remembered: the longest lifetime plus skew."""
    return timedelta(seconds=policy.max_lifetime_s + policy.clock_skew_s)
