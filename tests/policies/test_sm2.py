"""SM2 on the call path (DESIGN §13): the standard's vectors, interoperability with the
regulator's independent implementation, and SM2SM3 signed calls with their attacks.

Vectors:

* GB/T 32918.5-2017 (= GM/T 0003.5-2012) Annex A, the signature example on the
  recommended curve: private key ``d``, public key ``(x, y)``, message
  ``"message digest"``, the default user id ``1234567812345678``, ``Z_A``, ``e``, the
  nonce ``k`` and the signature ``(r, s)``. The same values are in OpenSSL's
  ``test/sm2_internal_test.c`` (``sm2_sig_test``), where this copy was checked.
* GB/T 32905-2016 Appendix A, examples 1 and 2 (SM3 of ``"abc"`` and of ``"abcd"`` × 16).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt
import pytest
from sqlalchemy.engine import Engine

from audit import sm2 as audit_sm2
from audit.hashes import sm3
from policies.calls import SM2SM3Algorithm, sign_call, verify_call
from policies.errors import AuthError
from policies.principals import (
    KeyAlg,
    PrincipalStore,
    Role,
    generate_keypair,
    jwk_thumbprint,
    load_public_key,
    parse_key,
    public_jwk,
    public_pem_of,
)
from policies.sm2 import SM2PrivateKey, SM2PublicKey, is_sm2_pem
from products.errors import InvalidRequest
from tests.policies.conftest import FakeClock, add_principal
from tests.policies.test_calls import AUD, POLICY, claims

# GB/T 32918.5-2017 Annex A (recommended curve, default user id).
D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
PX = "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
PY = "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
MESSAGE = b"message digest"
ZA = "B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3"
E = "F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640"
R = "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
S = "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"
POINT = bytes.fromhex("04" + PX + PY)
SIGNATURE = bytes.fromhex(R + S)
# GB/T 32918.5 recommended curve parameters (for Z_A).
A = "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC"
B = "28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93"
GX = "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7"
GY = "BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0"


def test_sm3_gbt32905_appendix_a() -> None:
    assert sm3(b"abc").hex() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    assert sm3(b"abcd" * 16).hex() == (
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    )


def test_annex_a_z_and_e_with_sm3() -> None:
    user_id = b"1234567812345678"
    z_input = len(user_id * 8).to_bytes(2, "big") + user_id
    z_input += bytes.fromhex(A + B + GX + GY + PX + PY)
    z = sm3(z_input)
    assert z.hex().upper() == ZA
    assert sm3(z + MESSAGE).hex().upper() == E


def test_annex_a_key_and_signature_in_both_implementations() -> None:
    key = SM2PrivateKey.from_scalar(D)
    assert key.public_key == POINT  # d·G is the annex's public key
    # Tongsuo (the call path) and GmSSL (the regulator's audit.sm2) accept the annex's
    # signature, and refuse it for another message or with one bit changed.
    assert SM2PublicKey.from_point(POINT).verify(MESSAGE, SIGNATURE)
    assert audit_sm2.verify(POINT, MESSAGE, SIGNATURE)
    flipped = SIGNATURE[:-1] + bytes([SIGNATURE[-1] ^ 1])
    for verify in (
        SM2PublicKey.from_point(POINT).verify,
        lambda m, s: audit_sm2.verify(POINT, m, s),
    ):
        assert not verify(MESSAGE + b"!", SIGNATURE)
        assert not verify(MESSAGE, flipped)


def test_interoperability_both_ways() -> None:
    message = b"pds interop " * 20
    tongsuo = SM2PrivateKey.generate()
    # Signed by Tongsuo, verified by GmSSL.
    assert audit_sm2.verify(tongsuo.public_key, message, tongsuo.sign(message))
    # Signed by GmSSL (gmssl-pyx, tests only), verified by Tongsuo.
    import gmssl_pyx
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    public, private = gmssl_pyx.sm2_key_generate()
    der = gmssl_pyx.sm2_sign(private, public, message, b"1234567812345678")
    r, s = decode_dss_signature(der)
    rs = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert SM2PublicKey.from_point(b"\x04" + public).verify(message, rs)
    # Every signature differs (a fresh nonce each time) and every one verifies.
    sigs = {tongsuo.sign(message) for _ in range(5)}
    assert len(sigs) == 5 and all(tongsuo.public.verify(message, x) for x in sigs)


@pytest.mark.parametrize(
    "signature",
    [
        b"",
        b"\x00" * 64,
        SIGNATURE[:32] + b"\x00" * 32,
        SIGNATURE[:32]
        + bytes.fromhex("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123"),
        b"\xff" * 64,
        SIGNATURE + b"\x00",
    ],
)
def test_hostile_signatures_are_false_never_errors(signature: bytes) -> None:
    assert SM2PublicKey.from_point(POINT).verify(MESSAGE, signature) is False
    assert audit_sm2.verify(POINT, MESSAGE, signature) is False


def test_keys_pem_jwk_and_thumbprint() -> None:
    private_pem, public_pem = generate_keypair("sm2")
    assert is_sm2_pem(private_pem) and is_sm2_pem(public_pem)
    assert not is_sm2_pem(generate_keypair("ed25519")[1])
    assert public_pem_of(private_pem) == public_pem
    key, alg = load_public_key(public_pem)
    assert alg is KeyAlg.SM2SM3 and isinstance(key, SM2PublicKey)
    jwk = public_jwk(public_pem)
    assert (jwk["kty"], jwk["crv"]) == ("EC", "SM2")
    members = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    thumb = base64.urlsafe_b64encode(hashlib.sha256(members.encode()).digest()).rstrip(b"=")
    assert jwk_thumbprint(public_pem) == thumb.decode()
    # The regulator's package reads the same key from PEM and JWK.
    assert audit_sm2.public_key_bytes(public_pem) == audit_sm2.public_key_bytes(jwk)
    assert audit_sm2.spki_pem(key.public_key).encode() == public_pem
    assert SM2SM3Algorithm.from_jwk(SM2SM3Algorithm.to_jwk(key, as_dict=True)).public_key == (
        key.public_key
    )


def test_bad_sm2_keys_are_refused() -> None:
    off_curve = POINT[:-1] + bytes([POINT[-1] ^ 1])
    with pytest.raises(InvalidRequest):
        SM2PublicKey.from_point(off_curve)
    with pytest.raises(audit_sm2.UnsupportedAlgorithm):
        audit_sm2.public_key_bytes(off_curve)
    with pytest.raises(audit_sm2.UnsupportedAlgorithm):
        audit_sm2.public_key_bytes({"kty": "EC", "crv": "SM2", "x": "AA", "y": "AA"})
    with pytest.raises(InvalidRequest):
        SM2PrivateKey.from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    p384 = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(InvalidRequest, match="SM2"):
        load_public_key(p384)


@pytest.fixture
def sm2_world(engine: Engine, clock: FakeClock) -> Any:
    keys = {"sm2": generate_keypair("sm2"), "ed": generate_keypair("ed25519")}
    add_principal(
        engine,
        clock,
        "ent-gm",
        Role.ENTERPRISE,
        [
            parse_key({"kid": "gm1", "public_key": keys["sm2"][1].decode()}),
            parse_key({"kid": "ed1", "public_key": keys["ed"][1].decode()}),
        ],
    )
    return PrincipalStore(engine, clock), keys


def _check(world: Any, clock: FakeClock, token: str, body: bytes = b'{"a":1}') -> Any:
    store, _ = world
    return verify_call(
        "Bearer " + token,
        method="POST",
        path_and_query="/v1/queries",
        body_sha256=hashlib.sha256(body).digest(),
        policy=POLICY,
        principals=store.find,
        now=clock(),
    )


def _sign(world: Any, clock: FakeClock, key: str = "sm2", kid: str = "gm1", **kw: Any) -> str:
    return sign_call(
        world[1][key][0],
        issuer="ent-gm",
        kid=kid,
        audience=AUD,
        method="POST",
        path_and_query="/v1/queries",
        body=kw.pop("body", b'{"a":1}'),
        now=clock(),
    )


def test_sm2sm3_signed_call_verifies(sm2_world: Any, clock: FakeClock) -> None:
    token = _sign(sm2_world, clock)
    assert jwt.get_unverified_header(token)["alg"] == "SM2SM3"
    assert _check(sm2_world, clock, token).kid == "gm1"
    # The JWS signature is r || s over the signing input, checked by the regulator's
    # independent implementation too.
    head, body, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    point = audit_sm2.public_key_bytes(sm2_world[1]["sm2"][1])
    assert len(raw) == 64 and audit_sm2.verify(point, f"{head}.{body}".encode(), raw)


def _refused(world: Any, clock: FakeClock, token: str, reason: str, **kw: Any) -> None:
    with pytest.raises(AuthError) as exc:
        _check(world, clock, token, **kw)
    assert exc.value.reason == reason


def test_sm2sm3_attacks(sm2_world: Any, clock: FakeClock) -> None:
    # Algorithm pinned per key: an SM2 key's kid with an EdDSA token, and the reverse.
    ed_as_gm = _sign(sm2_world, clock, key="ed", kid="gm1")
    _refused(sm2_world, clock, ed_as_gm, "alg_mismatch")
    sm2_as_ed = _sign(sm2_world, clock, key="sm2", kid="ed1")
    _refused(sm2_world, clock, sm2_as_ed, "alg_mismatch")
    # Another SM2 key's signature; a tampered body; a flipped signature bit.
    stranger = SM2PrivateKey.generate()
    forged = jwt.encode(
        claims(clock, iss="ent-gm"),
        stranger,
        algorithm="SM2SM3",
        headers={"kid": "gm1", "typ": "pds-call+jwt"},
    )
    _refused(sm2_world, clock, forged, "bad_signature")
    _refused(sm2_world, clock, _sign(sm2_world, clock), "bh_mismatch", body=b'{"a":2}')
    good = _sign(sm2_world, clock)
    head, payload, sig = good.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[5] ^= 1
    flipped = f"{head}.{payload}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"
    _refused(sm2_world, clock, flipped, "bad_signature")
    # A signature that is not 64 bytes (say, DER) is refused, not an error.
    der_sig = base64.urlsafe_b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").rstrip(b"=")
    _refused(sm2_world, clock, f"{head}.{payload}.{der_sig.decode()}", "bad_signature")
