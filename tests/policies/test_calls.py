"""Signed calls (DESIGN §6): each attack refused with its exact error code and reason."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy.engine import Engine

from policies.calls import CallPolicy, body_hash, sign_call, verify_call
from policies.errors import AuthError
from policies.principals import PrincipalStore, Role, generate_keypair, parse_key
from tests.policies.conftest import FakeClock, add_principal

AUD = "public-data-sandbox"
POLICY = CallPolicy(audience=AUD)


@pytest.fixture
def keys() -> dict[str, tuple[bytes, bytes]]:
    return {
        "ed": generate_keypair("ed25519"),
        "ec": generate_keypair("es256"),
        "other": generate_keypair("ed25519"),
    }


@pytest.fixture
def world(engine: Engine, clock: FakeClock, keys: dict[str, tuple[bytes, bytes]]) -> Any:
    add_principal(
        engine,
        clock,
        "ent-a",
        Role.ENTERPRISE,
        [
            parse_key({"kid": "ed1", "public_key": keys["ed"][1].decode()}),
            parse_key({"kid": "ec1", "public_key": keys["ec"][1].decode()}),
        ],
    )
    add_principal(
        engine,
        clock,
        "ent-b",
        Role.ENTERPRISE,
        [parse_key({"kid": "b1", "public_key": keys["other"][1].decode()})],
    )
    return PrincipalStore(engine, clock)


def check(
    world: Any,
    clock: FakeClock,
    auth: str | None,
    *,
    method: str = "POST",
    target: str = "/v1/queries",
    body: bytes = b'{"a":1}',
) -> Any:
    store = world
    return verify_call(
        auth,
        method=method,
        path_and_query=target,
        body_sha256=hashlib.sha256(body).digest(),
        policy=POLICY,
        principals=store.find,
        now=clock(),
    )


def signed(
    keys: Any,
    clock: FakeClock,
    *,
    key: str = "ed",
    kid: str = "ed1",
    iss: str = "ent-a",
    body: bytes = b'{"a":1}',
    **kw: Any,
) -> str:
    token = sign_call(
        keys[key][0],
        issuer=iss,
        kid=kid,
        audience=kw.pop("aud", AUD),
        method=kw.pop("method", "POST"),
        path_and_query=kw.pop("target", "/v1/queries"),
        body=body,
        now=kw.pop("now", clock()),
        **kw,
    )
    return "Bearer " + token


def raw_token(
    private_pem: bytes, claims: dict[str, Any], header: dict[str, Any], alg: str = "EdDSA"
) -> str:
    return "Bearer " + jwt.encode(claims, private_pem, algorithm=alg, headers=header)


def claims(clock: FakeClock, **over: Any) -> dict[str, Any]:
    now = int(clock().timestamp())
    base = {
        "iss": "ent-a",
        "aud": AUD,
        "iat": now,
        "exp": now + 60,
        "jti": "n-1",
        "htm": "POST",
        "htu": "/v1/queries",
        "bh": body_hash(b'{"a":1}'),
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def refused(
    world: Any, clock: FakeClock, auth: str | None, code: str, reason: str, **kw: Any
) -> None:
    with pytest.raises(AuthError) as exc:
        check(world, clock, auth, **kw)
    assert (exc.value.code, exc.value.reason) == (code, reason)


def test_a_good_call_verifies(world: Any, clock: FakeClock, keys: Any) -> None:
    # Its nonce is claimed when the call commits (tests/sandbox/actions/test_call.py).
    auth = signed(keys, clock)
    call = check(world, clock, auth)
    assert call.principal.id == "ent-a" and call.kid == "ed1"


def test_es256_is_accepted(world: Any, clock: FakeClock, keys: Any) -> None:
    assert check(world, clock, signed(keys, clock, key="ec", kid="ec1")).kid == "ec1"


def test_missing_and_malformed_authorization(world: Any, clock: FakeClock) -> None:
    refused(world, clock, None, "unauthenticated", "missing_token")
    refused(world, clock, "Basic abc", "unauthenticated", "malformed_authorization")
    refused(world, clock, "Bearer not.a.jwt", "unauthenticated", "malformed_token")


def test_alg_none_is_refused(world: Any, clock: FakeClock) -> None:
    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    token = (
        b64({"alg": "none", "typ": "pds-call+jwt", "kid": "ed1"}) + "." + b64(claims(clock)) + "."
    )
    refused(world, clock, "Bearer " + token, "bad_signature", "alg_not_allowed")


def test_hs256_with_public_key_as_secret_is_refused(
    world: Any, clock: FakeClock, keys: Any
) -> None:
    # The classic key-confusion attack: HMAC keyed with the server's known public key.
    token = _hs256(keys["ed"][1], claims(clock))
    refused(world, clock, token, "bad_signature", "alg_not_allowed")


def _hs256(secret: bytes, payload: dict[str, Any]) -> str:
    import hmac as _hmac

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "pds-call+jwt", "kid": "ed1"}).encode())
    body = b64(json.dumps(payload).encode())
    sig = _hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"Bearer {head}.{body}.{b64(sig)}"


def test_wrong_typ(world: Any, clock: FakeClock, keys: Any) -> None:
    auth = raw_token(keys["ed"][0], claims(clock), {"kid": "ed1", "typ": "JWT"})
    refused(world, clock, auth, "bad_signature", "wrong_typ")


def test_alg_not_registered_for_key(world: Any, clock: FakeClock, keys: Any) -> None:
    # ES256 token naming the Ed25519 key's kid.
    auth = raw_token(
        keys["ec"][0], claims(clock), {"kid": "ed1", "typ": "pds-call+jwt"}, alg="ES256"
    )
    refused(world, clock, auth, "bad_signature", "alg_mismatch")


def test_wrong_audience(world: Any, clock: FakeClock, keys: Any) -> None:
    refused(
        world, clock, signed(keys, clock, aud="someone-else"), "bad_signature", "wrong_audience"
    )


def test_expired(world: Any, clock: FakeClock, keys: Any) -> None:
    auth = signed(keys, clock, now=clock() - timedelta(seconds=200), lifetime_s=60)
    refused(world, clock, auth, "token_expired", "expired")


def test_expiry_tolerates_skew(world: Any, clock: FakeClock, keys: Any) -> None:
    auth = signed(keys, clock, now=clock() - timedelta(seconds=90), lifetime_s=60)
    assert check(world, clock, auth).principal.id == "ent-a"


def test_lifetime_over_300s(world: Any, clock: FakeClock, keys: Any) -> None:
    refused(
        world, clock, signed(keys, clock, lifetime_s=301), "unauthenticated", "lifetime_too_long"
    )
    now = int(clock().timestamp())
    auth = raw_token(
        keys["ed"][0], claims(clock, exp=now + 115 * 86400), {"kid": "ed1", "typ": "pds-call+jwt"}
    )
    refused(world, clock, auth, "unauthenticated", "lifetime_too_long")


def test_future_iat_beyond_skew(world: Any, clock: FakeClock, keys: Any) -> None:
    refused(
        world,
        clock,
        signed(keys, clock, now=clock() + timedelta(seconds=120)),
        "unauthenticated",
        "iat_in_future",
    )
    assert check(world, clock, signed(keys, clock, now=clock() + timedelta(seconds=30)))


@pytest.mark.parametrize("claim", ["iss", "aud", "iat", "exp", "jti", "htm", "htu", "bh"])
def test_every_claim_is_required(world: Any, clock: FakeClock, keys: Any, claim: str) -> None:
    auth = raw_token(
        keys["ed"][0], claims(clock, **{claim: None}), {"kid": "ed1", "typ": "pds-call+jwt"}
    )
    with pytest.raises(AuthError) as exc:
        check(world, clock, auth)
    assert exc.value.code in ("unauthenticated", "bad_signature")
    assert exc.value.reason in ("missing_claim", "wrong_audience")


def test_tampered_body(world: Any, clock: FakeClock, keys: Any) -> None:
    refused(world, clock, signed(keys, clock), "bad_signature", "bh_mismatch", body=b'{"a":2}')


def test_htu_and_htm_mismatch(world: Any, clock: FakeClock, keys: Any) -> None:
    refused(
        world,
        clock,
        signed(keys, clock),
        "bad_signature",
        "htu_mismatch",
        target="/v1/queries/preview",
    )
    refused(
        world, clock, signed(keys, clock, target="/v1/queries?x=1"), "bad_signature", "htu_mismatch"
    )
    refused(world, clock, signed(keys, clock), "bad_signature", "htm_mismatch", method="PUT")


def test_tampered_signature(world: Any, clock: FakeClock, keys: Any) -> None:
    auth = signed(keys, clock)
    head, payload, sig = auth.removeprefix("Bearer ").split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["htu"] = "/v1/audit/export"
    new_payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    refused(
        world,
        clock,
        f"Bearer {head}.{new_payload}.{sig}",
        "bad_signature",
        "bad_signature",
        target="/v1/audit/export",
    )


def test_unknown_kid_and_key_of_another_principal(world: Any, clock: FakeClock, keys: Any) -> None:
    refused(world, clock, signed(keys, clock, kid="nope"), "unauthenticated", "unknown_kid")
    # ent-b's key named while claiming to be ent-a.
    refused(
        world, clock, signed(keys, clock, key="other", kid="b1"), "unauthenticated", "unknown_kid"
    )
    refused(world, clock, signed(keys, clock, iss="ghost"), "unauthenticated", "unknown_kid")


def test_disabled_key(world: Any, engine: Engine, clock: FakeClock, keys: Any) -> None:
    with engine.begin() as conn:
        assert PrincipalStore.disable_key(conn, "ent-a", "ed1", clock())
    world.forget()
    refused(world, clock, signed(keys, clock), "unauthenticated", "key_disabled")


def test_signature_by_another_key_under_own_kid(world: Any, clock: FakeClock) -> None:
    stranger = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    auth = raw_token(stranger, claims(clock), {"kid": "ed1", "typ": "pds-call+jwt"})
    refused(world, clock, auth, "bad_signature", "bad_signature")


def test_audience_may_be_an_array_containing_it(world: Any, clock: FakeClock, keys: Any) -> None:
    # RFC 7519 §4.1.3; golang-jwt sends an array by default.
    header = {"kid": "ed1", "typ": "pds-call+jwt"}
    ok = raw_token(keys["ed"][0], claims(clock, aud=["other", AUD]), header)
    assert check(world, clock, ok).principal.id == "ent-a"
    refused(
        world,
        clock,
        raw_token(keys["ed"][0], claims(clock, aud=["other", "more"]), header),
        "bad_signature",
        "wrong_audience",
    )


def test_fractional_numeric_dates_are_accepted(world: Any, clock: FakeClock, keys: Any) -> None:
    # RFC 7519 §2: a NumericDate may hold fractional seconds.
    now = clock().timestamp()
    header = {"kid": "ed1", "typ": "pds-call+jwt"}
    auth = raw_token(keys["ed"][0], claims(clock, iat=now + 0.25, exp=now + 60.5), header)
    assert check(world, clock, auth).expires_at.timestamp() == now + 60.5
    for bad in ("1", True, [1]):
        refused(
            world,
            clock,
            raw_token(keys["ed"][0], claims(clock, iat=bad) | {"iat": bad}, header),
            "unauthenticated",
            "invalid_claim",
        )
