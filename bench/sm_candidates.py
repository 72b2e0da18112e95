"""Compare the SM2/SM3 packages of the registry (docs/suites.md): vectors, interop, speed.

Not a project dependency set: run it in a scratch virtualenv with the candidates
installed (pip install tongsuopy gmssl-pyx gmssl-fast smcryptopy snowland-smx
sm-py-bc sm-crypto gmssl cryptography), as ``python bench/sm_candidates.py``. Prints
JSON: per package, the GB/T 32905 / GB/T 32918.5 Annex A checks, the interop matrix
(signer -> verifier) and single-thread rates. The pure-Python ``gmssl`` package is
only ever asked to verify, or to sign with the annex's fixed nonce (DESIGN §13).
"""

# ruff: noqa
import hashlib, json, os, secrets, sys, time, traceback

# GB/T 32905-2016 Appendix A (A.1, A.2)
SM3_VECTORS = [
    (b"abc", "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"),
    (b"abcd" * 16, "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"),
]
# GB/T 32918.5-2017 / GM/T 0003.5-2012 Annex A (recommended curve), as in OpenSSL test/sm2_internal_test.c
D = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8".lower()
PX = "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020".lower()
PY = "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13".lower()
MSG = b"message digest"
K = "59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21".lower()
RS = bytes.fromhex(
    "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
    "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"
)
ID = b"1234567812345678"


def der_to_rs(der):
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def rs_to_der(rs):
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    return encode_dss_signature(int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big"))


C = {}  # name -> dict(sm3=, keygen=, sign=, verify=, pub_of=)


def reg(name):
    def deco(f):
        try:
            C[name] = f()
        except Exception as exc:
            C[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return f

    return deco


@reg("hashlib (OpenSSL 3)")
def _():
    return {"sm3": lambda m: hashlib.new("sm3", m).digest()}


@reg("cryptography")
def _():
    from cryptography.hazmat.primitives import hashes

    def sm3(m):
        h = hashes.Hash(hashes.SM3())
        h.update(m)
        return h.finalize()

    return {"sm3": sm3}


@reg("tongsuopy")
def _():
    from tongsuopy.crypto import hashes, serialization
    from tongsuopy.crypto.asymciphers import ec

    def sm3(m):
        h = hashes.Hash(hashes.SM3())
        h.update(m)
        return h.finalize()

    def keygen():
        k = ec.generate_private_key(ec.SM2())
        return format(k.private_numbers().private_value, "064x"), k

    def priv(d):
        return ec.derive_private_key(int(d, 16), ec.SM2())

    def pub(x, y):
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SM2(), bytes.fromhex("04" + x + y))

    def pubxy(key):
        n = key.public_key().public_numbers()
        return format(n.x, "064x"), format(n.y, "064x")

    def sign(key, m):
        return der_to_rs(key.sign(m, ec.ECDSA(hashes.SM3())))

    def verify(pk, m, rs):
        try:
            pk.verify(rs_to_der(rs), m, ec.ECDSA(hashes.SM3()))
            return True
        except Exception:
            return False

    return dict(sm3=sm3, keygen=keygen, priv=priv, pub=pub, pubxy=pubxy, sign=sign, verify=verify)


@reg("gmssl-fast")
def _():
    import gmssl_fast as g

    def keygen():
        k = g.SM2.generate()
        return k.private_key_hex, k

    def priv(d):
        return g.SM2(private_key=d, public_key=None)

    def pub(x, y):
        return g.SM2(public_key="04" + x + y)

    def pubxy(k):
        p = k.public_key_hex
        return p[2:66], p[66:]

    return dict(
        sm3=lambda m: g.sm3(m),
        keygen=keygen,
        priv=priv,
        pub=pub,
        pubxy=pubxy,
        sign=lambda k, m: k.sign(m),
        verify=lambda pk, m, rs: bool(pk.verify(m, rs)),
    )


@reg("gmssl-pyx")
def _():
    import gmssl_pyx as g

    def keygen():
        pub, prv = g.sm2_key_generate()
        return prv.hex(), (prv, pub)

    def pub(x, y):
        return bytes.fromhex(x + y)

    def pubxy(k):
        return k[1][:32].hex(), k[1][32:].hex()

    def sign(k, m):
        return der_to_rs(g.sm2_sign(k[0], k[1], m, ID))

    def verify(pk, m, rs):
        try:
            return bool(g.sm2_verify(pk, m, rs_to_der(rs), ID))
        except Exception:
            return False

    return dict(sm3=g.sm3_hash, keygen=keygen, pub=pub, pubxy=pubxy, sign=sign, verify=verify)


@reg("smcryptopy")
def _():
    from smcryptopy import sm2, sm3 as s3

    def keygen():
        sk, pk = sm2.gen_keypair()
        return sk, (sk, pk)

    def priv(d):
        return (d, sm2.pk_from_sk(d))

    def pub(x, y):
        return x + y

    def pubxy(k):
        p = k[1]
        p = p[2:] if len(p) == 130 else p
        return p[:64], p[64:]

    def sign(k, m):
        sig = sm2.sign(ID, m, k[0])
        return sig if len(sig) == 64 else der_to_rs(sig)

    def verify(pk, m, rs):
        try:
            return bool(sm2.verify(ID, m, rs_to_der(rs), pk))
        except Exception:
            return False

    def sm3(m):
        out = s3.sm3_hash(m)
        return bytes.fromhex(out) if isinstance(out, str) else out

    return dict(sm3=sm3, keygen=keygen, priv=priv, pub=pub, pubxy=pubxy, sign=sign, verify=verify)


@reg("snowland-smx (pysmx)")
def _():
    from pysmx.SM2 import Sign, Verify, generate_keypair, kG, sm2_G
    from pysmx.SM3 import digest as sm3d

    def keygen():
        kp = generate_keypair()
        return kp.privateKey.hex(), (kp.privateKey, kp.publicKey)

    def priv(d):
        return (bytes.fromhex(d), bytes.fromhex(kG(int(d, 16), sm2_G, 64)))

    def pub(x, y):
        return bytes.fromhex(x + y)

    def pubxy(k):
        return k[1][:32].hex(), k[1][32:].hex()

    def sign(k, m, kk=None):
        kk = kk or format(secrets.randbelow(2**256 - 2) + 1, "064x")
        return Sign(m, k[0], kk, 64, uid=ID)

    def verify(pk, m, rs):
        return bool(Verify(rs, m, pk, 64, uid=ID))

    return dict(
        sm3=lambda m: bytes(sm3d(m)) if not isinstance(sm3d(m), str) else bytes.fromhex(sm3d(m)),
        keygen=keygen,
        priv=priv,
        pub=pub,
        pubxy=pubxy,
        sign=sign,
        verify=verify,
        sign_k=lambda k, m, kk: Sign(m, k[0], kk, 64, uid=ID),
    )


@reg("sm-py-bc")
def _():
    from sm_bc.crypto.SM2 import SM2
    from sm_bc.crypto.signers.sm2_signer import SM2Signer
    from sm_bc.crypto.params.ec_private_key_parameters import ECPrivateKeyParameters
    from sm_bc.crypto.params.ec_public_key_parameters import ECPublicKeyParameters
    from sm_bc.crypto.params.parameters_with_id import ParametersWithID
    from sm_bc.crypto.digests.sm3_digest import SM3Digest

    dom = SM2.get_parameters()
    G = SM2.get_G()

    def sm3(m):
        d = SM3Digest()
        d.update_bytes(m, 0, len(m))
        out = bytearray(32)
        d.do_final(out, 0)
        return bytes(out)

    def priv(d):
        dd = int(d, 16)
        return (ECPrivateKeyParameters(dd, dom), G.multiply(dd).normalize())

    def keygen():
        d = format(secrets.randbelow(SM2.get_n() - 2) + 1, "064x")
        return d, priv(d)

    def pub(x, y):
        return ECPublicKeyParameters(SM2.get_curve().create_point(int(x, 16), int(y, 16)), dom)

    def pubxy(k):
        e = k[1].get_encoded(False).hex()
        return e[2:66], e[66:]

    def sign(k, m):
        s = SM2Signer()
        s.init(True, ParametersWithID(k[0], ID))
        s.update_bytes(m, 0, len(m))
        sig = bytes(s.generate_signature())
        return der_to_rs(sig)

    def verify(pk, m, rs):
        s = SM2Signer()
        s.init(False, ParametersWithID(pk, ID))
        s.update_bytes(m, 0, len(m))
        try:
            return bool(s.verify_signature(rs_to_der(rs)))
        except Exception:
            return False

    return dict(sm3=sm3, keygen=keygen, priv=priv, pub=pub, pubxy=pubxy, sign=sign, verify=verify)


@reg("sm-crypto")
def _():
    import sm_crypto.sm3 as s3
    from sm_crypto import sm2

    fn = getattr(s3, "sm3_hash", None) or getattr(s3, "hash", None)
    return {
        "sm3": lambda m: bytes.fromhex(fn(m)) if isinstance(fn(m), str) else fn(m),
        "_api": dir(sm2)[:0],
    }


@reg("gmssl (pure Python)")
def _():
    from gmssl import sm2, sm3, func

    def sm3h(m):
        return bytes.fromhex(sm3.sm3_hash(func.bytes_to_list(m)))

    def pub(x, y):
        return sm2.CryptSM2(private_key=None, public_key=x + y)

    def verify(pk, m, rs):
        return bool(pk.verify_with_sm3(rs.hex(), m))

    def priv(d):
        c = sm2.CryptSM2(private_key=d, public_key="00" * 64)
        c.public_key = c._kg(int(d, 16), c.ecc_table["g"])
        return c

    def sign_k(c, m, kk):  # fixed k only: never with the module's own random k
        return bytes.fromhex(c.sign_with_sm3(m, kk))

    def pubxy(c):
        return c.public_key[:64], c.public_key[64:]

    return dict(sm3=sm3h, pub=pub, verify=verify, priv=priv, sign_k=sign_k, pubxy=pubxy)


results = {}
for name, c in C.items():
    r = results[name] = {}
    if "error" in c:
        r["error"] = c["error"]
        continue
    if "sm3" in c:
        try:
            r["sm3_vectors"] = all(c["sm3"](m).hex() == h for m, h in SM3_VECTORS)
        except Exception as e:
            r["sm3_vectors"] = f"error {e}"
    if "verify" in c:
        try:
            pk = c["pub"](PX, PY)
            r["sm2_annex_verify"] = c["verify"](pk, MSG, RS)
            r["sm2_annex_reject_tampered"] = not c["verify"](pk, MSG + b"!", RS) and not c[
                "verify"
            ](pk, MSG, RS[:-1] + bytes([RS[-1] ^ 1]))
        except Exception as e:
            r["sm2_annex_verify"] = f"error {type(e).__name__} {e}"
    if "priv" in c:
        try:
            k = c["priv"](D)
            r["sm2_annex_pubkey"] = c["pubxy"](k) == (PX, PY)
        except Exception as e:
            r["sm2_annex_pubkey"] = f"error {type(e).__name__} {e}"
    if "sign_k" in c:
        try:
            r["sm2_annex_sign_fixed_k"] = c["sign_k"](c["priv"](D), MSG, K) == RS
        except Exception as e:
            r["sm2_annex_sign_fixed_k"] = f"error {e}"

# interop: each signer (keygen+sign) signs; each verifier verifies
signers = [n for n, c in C.items() if "sign" in c and "keygen" in c]
verifiers = [n for n, c in C.items() if "verify" in c]
msg = os.urandom(300)
interop = {}
for s in signers:
    try:
        _, key = C[s]["keygen"]()
        x, y = C[s]["pubxy"](key)
        sig = C[s]["sign"](key, msg)
    except Exception as e:
        interop[s] = f"sign error {type(e).__name__}: {e}"
        traceback.print_exc()
        continue
    row = {}
    for v in verifiers:
        try:
            pk = C[v]["pub"](x, y)
            row[v] = C[v]["verify"](pk, msg, sig) and not C[v]["verify"](pk, msg + b"x", sig)
        except Exception as e:
            row[v] = f"error {type(e).__name__}"
    interop[s] = row


def rate(fn, seconds=1.0):
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        t = time.perf_counter() - t0
        if t >= seconds:
            return n / t


speed = {}
leaf = os.urandom(400)
for name, c in C.items():
    if "error" in c:
        continue
    sp = speed[name] = {}
    if "sm3" in c:
        sp["sm3_400B_per_s"] = round(rate(lambda: c["sm3"](leaf), 0.5))
    if "sign" in c and "keygen" in c:
        _, key = c["keygen"]()
        x, y = c["pubxy"](key)
        sp["sign_per_s"] = round(rate(lambda: c["sign"](key, msg), 1.0), 1)
    if "verify" in c:
        pk = C[name]["pub"](PX, PY)
        sp["verify_per_s"] = round(rate(lambda: c["verify"](pk, MSG, RS), 1.0), 1)
sp = speed["sha256 (hashlib)"] = {
    "sm3_400B_per_s": round(rate(lambda: hashlib.sha256(leaf).digest(), 0.5))
}
from cryptography.hazmat.primitives.asymmetric import ed25519

ek = ed25519.Ed25519PrivateKey.generate()
esig = ek.sign(msg)
epk = ek.public_key()
speed["ed25519 (cryptography)"] = {
    "sign_per_s": round(rate(lambda: ek.sign(msg), 1.0), 1),
    "verify_per_s": round(rate(lambda: epk.verify(esig, msg), 1.0), 1),
}
print(json.dumps({"vectors": results, "interop": interop, "speed": speed}, indent=1))
