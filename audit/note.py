"""C2SP signed notes, tlog checkpoints and witness cosignatures, with Ed25519 or SM2 keys.

Formats (DESIGN §7; c2sp.org/signed-note, /tlog-checkpoint, /tlog-cosignature v1):

* a note is a text ending in a newline, a blank line, then one or more signature lines
  ``— <key name> <base64(4-byte key ID || signature)>`` (U+2014 EM DASH, space);
* the key ID is ``SHA-256(name || 0x0A || type || public key)[:4]`` with type ``0x01``
  for Ed25519 note signatures and ``0x04`` for timestamped Ed25519 cosignatures;
* a checkpoint's text is the origin line, the decimal tree size, the base64 root hash and
  optional non-empty extension lines (here one: ``time <RFC 3339 UTC>``);
* a cosignature signs ``"cosignature/v1\\ntime <unix seconds>\\n" + checkpoint text`` and
  its signature bytes are ``uint64 big-endian timestamp || 64-byte signature``;
* a verifier key ("vkey") is ``name+<8 hex key ID>+base64(type || public key)``.

SM2 keys (DESIGN §13, the ``sm2-sm3`` suite) use the signed-note spec's escape for
types it does not assign, ``0xff`` followed by an identifier: ``0xff "pds/sm2-sm3"`` for
note signatures and ``0xff "pds/sm2-sm3-cosignature/v1"`` for timestamped cosignatures
(same message as tlog-cosignature v1). The public key is the 65-byte point
``04 || X || Y``, the signature ``r || s`` (64 bytes) over the message with the default
user id; key IDs stay SHA-256 as the spec defines them (an identifier, not a hash that
anything is verified against). docs/audit.md documents the choice.

Ed25519 is pycryptodome's (``Crypto.PublicKey.ECC`` and ``Crypto.Signature.eddsa``);
SM2 verification is :mod:`audit.sm2`'s. Signing goes through a :class:`RawSigner`, so a
hardware signing server (密码机) can hold the key: :class:`Ed25519RawSigner` is the
in-process one, the service provides its own for SM2.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self

from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa

from audit import sm2
from audit.errors import BadCheckpoint, BadSignature, UnsupportedAlgorithm

__all__ = [
    "COSIGNATURE_V1",
    "ED25519",
    "SM2_COSIGNATURE",
    "SM2_NOTE",
    "Checkpoint",
    "CosignatureSigner",
    "CosignatureVerifier",
    "Ed25519RawSigner",
    "Note",
    "NoteSigner",
    "NoteVerifier",
    "RawSigner",
    "SM2CosignatureVerifier",
    "SM2NoteVerifier",
    "Signature",
    "checkpoint_text",
    "cosignature_message",
    "cosignature_verifier",
    "cosignature_verifier_from_vkey",
    "jwk_thumbprint",
    "key_id",
    "note_verifier",
    "note_verifier_from_vkey",
    "open_checkpoint",
    "open_note",
    "parse_note",
    "public_key_bytes",
]

#: signed-note signature type bytes (c2sp.org/signed-note "Signature types").
ED25519 = 0x01
COSIGNATURE_V1 = 0x04
#: SM2 types: 0xff ("without an identifier byte assigned by this specification")
#: followed by an identifier (docs/audit.md, "SM2 keys in signed notes").
SM2_NOTE = b"\xffpds/sm2-sm3"
SM2_COSIGNATURE = b"\xffpds/sm2-sm3-cosignature/v1"

EM_DASH = "\u2014"
MAX_SIGNATURES = 64  # "MUST accept at least up to 16"; bounds work on hostile input
_SIZE = re.compile(r"0|[1-9][0-9]*")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_HEX8 = re.compile(r"[0-9a-f]{8}")


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 §4): alphabet, padding and canonical bits."""
    if not _B64.fullmatch(text) or len(text) % 4:
        raise BadCheckpoint(f"{what} is not standard base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise BadCheckpoint(f"{what} is not standard base64") from exc
    if base64.b64encode(raw).decode() != text:
        raise BadCheckpoint(f"{what} is not canonical base64")
    return raw


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_key_name(name: str) -> str:
    """Return ``name`` if it is a valid note key name; raises :class:`BadCheckpoint`.

    signed-note: non-empty, no Unicode spaces, no ``+``.
    """
    if not name or any(c.isspace() or c == "+" or ord(c) < 0x20 for c in name):
        raise BadCheckpoint(f"invalid key name {name!r}")
    return name


def _type_bytes(sig_type: int | bytes) -> bytes:
    return bytes([sig_type]) if isinstance(sig_type, int) else sig_type


def key_id(name: str, sig_type: int | bytes, public_key: bytes) -> bytes:
    """Return the 4-byte key ID ``SHA-256(name || 0x0A || type || key)[:4]``."""
    data = name.encode() + b"\n" + _type_bytes(sig_type) + public_key
    return hashlib.sha256(data).digest()[:4]


def _thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, no whitespace."""
    required = ("crv", "kty", "x") if jwk["kty"] == "OKP" else ("crv", "kty", "x", "y")
    text = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(text.encode()).digest())


def jwk_thumbprint(public_key: bytes) -> str:
    """Return the RFC 7638 thumbprint (base64url SHA-256) of an Ed25519 or SM2 key."""
    if len(public_key) == 65:
        return _thumbprint(sm2.jwk_of(public_key))
    return _thumbprint({"crv": "Ed25519", "kty": "OKP", "x": _b64url(public_key)})


def public_key_bytes(key: bytes | str | Mapping[str, Any]) -> bytes:
    """Return the raw 32-byte Ed25519 public key from raw bytes, SPKI PEM or a JWK.

    Raises :class:`BadCheckpoint` if the input is none of those or not an Ed25519 key.
    """
    if isinstance(key, Mapping):
        if key.get("kty") != "OKP" or key.get("crv") != "Ed25519" or "x" not in key:
            raise BadCheckpoint("JWK is not an Ed25519 OKP key")
        try:
            raw = _b64url_decode(str(key["x"]))
        except (ValueError, binascii.Error) as exc:
            raise BadCheckpoint("JWK 'x' is not base64url") from exc
    elif isinstance(key, bytes) and len(key) == 32:
        raw = key
    else:
        try:
            ecc = ECC.import_key(key)
        except (ValueError, IndexError, TypeError) as exc:
            raise BadCheckpoint("not an Ed25519 public key (SPKI PEM)") from exc
        if ecc.curve != "Ed25519":
            raise BadCheckpoint(f"key is {ecc.curve}, not Ed25519")
        raw = bytes(ecc.public_key().export_key(format="raw"))
    if len(raw) != 32:
        raise BadCheckpoint("Ed25519 public keys are 32 bytes")
    try:
        eddsa.import_public_key(raw)
    except ValueError as exc:
        raise BadCheckpoint("not a valid Ed25519 point") from exc
    return raw


def _vkey(name: str, sig_type: int | bytes, public_key: bytes) -> str:
    kid = key_id(name, sig_type, public_key).hex()
    return f"{name}+{kid}+{base64.b64encode(_type_bytes(sig_type) + public_key).decode()}"


def _parse_vkey(vkey: str, sig_type: int | bytes) -> tuple[str, bytes]:
    """Return ``(name, public key bytes)`` of a vkey of ``sig_type``."""
    parts = vkey.strip().split("+", 2)  # the base64 key may itself contain "+"
    if len(parts) != 3 or not _HEX8.fullmatch(parts[1]):
        raise BadCheckpoint("a vkey is name+hexkeyid+base64key")
    name = check_key_name(parts[0])
    raw = _b64decode(parts[2], "vkey key")
    prefix = _type_bytes(sig_type)
    if not raw.startswith(prefix) or len(raw) - len(prefix) not in (32, 65):
        raise BadCheckpoint(f"vkey is not of signature type {prefix!r}")
    key = raw[len(prefix) :]
    if key_id(name, sig_type, key).hex() != parts[1]:
        raise BadCheckpoint("vkey key ID does not match its name and key")
    return name, key


@dataclass(frozen=True)
class Signature:
    """One signature line: key name, 4-byte key ID and the signature bytes after it."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        """Return the line ``— name base64(keyid || sig)`` with its final newline."""
        sig = base64.b64encode(self.key_id + self.signature).decode()
        return f"{EM_DASH} {self.name} {sig}\n"


@dataclass(frozen=True)
class Note:
    """A parsed (not yet verified) signed note: ``text`` ends with a newline."""

    text: str
    signatures: tuple[Signature, ...]

    def __str__(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)

    def with_signatures(self, more: Iterable[Signature]) -> Note:
        """Return a note with ``more`` appended, skipping exact duplicates."""
        sigs = list(self.signatures)
        for s in more:
            if s not in sigs:
                sigs.append(s)
        return Note(self.text, tuple(sigs))


def _check_text(data: str) -> None:
    if any(ord(c) < 0x20 and c != "\n" for c in data):
        raise BadCheckpoint("notes may not contain control characters other than newline")


def parse_note(data: str | bytes) -> Note:
    """Parse signed-note text; returns :class:`Note`, raises :class:`BadCheckpoint`."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadCheckpoint("note is not UTF-8") from exc
    _check_text(data)
    if not data.endswith("\n"):
        raise BadCheckpoint("note does not end with a newline")
    split = data.rfind("\n\n")
    if split < 0:
        raise BadCheckpoint("note has no blank line before its signatures")
    text, block = data[: split + 1], data[split + 2 :]
    lines = block.split("\n")[:-1]
    if not lines:
        raise BadCheckpoint("note has no signatures")
    if len(lines) > MAX_SIGNATURES:
        raise BadCheckpoint("note has too many signatures")
    sigs = []
    for line in lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != EM_DASH:
            raise BadCheckpoint(f"malformed signature line {line[:80]!r}")
        raw = _b64decode(parts[2], "signature")
        if len(raw) < 5:
            raise BadCheckpoint("signature too short")
        sigs.append(Signature(check_key_name(parts[1]), raw[:4], raw[4:]))
    return Note(text, tuple(sigs))


class NoteVerifier:
    """Verifies Ed25519 note signatures (type 0x01) of one named key.

    :class:`SM2NoteVerifier` is the SM2 one and :class:`CosignatureVerifier` checks
    cosignatures; :func:`note_verifier` and :func:`note_verifier_from_vkey` pick the
    class from a JWK or vkey.
    """

    sig_type: int | bytes = ED25519
    key_type = "Ed25519"
    sig_size = 64

    def __init__(self, name: str, public_key: bytes) -> None:
        self.name = check_key_name(name)
        self.public_key = self._public_key_bytes(public_key)
        self.key_id = key_id(name, self.sig_type, self.public_key)
        self._setup()

    @staticmethod
    def _public_key_bytes(key: bytes | str | Mapping[str, Any]) -> bytes:
        return public_key_bytes(key)

    def _setup(self) -> None:
        self._eddsa = eddsa.new(eddsa.import_public_key(self.public_key), "rfc8032")

    def _jwk(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(self.public_key)}

    @classmethod
    def from_key(cls, name: str, key: bytes | str | Mapping[str, Any]) -> Self:
        """Build from raw bytes, SPKI PEM or JWK (see :func:`public_key_bytes`)."""
        return cls(name, cls._public_key_bytes(key))

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any], name: str | None = None) -> Self:
        """Build from a JWK of this key type; ``name`` defaults to the JWK's ``name``."""
        chosen = name if name is not None else jwk.get("name")
        if not isinstance(chosen, str):
            raise BadCheckpoint("JWK has no signed-note key name ('name')")
        return cls(chosen, cls._public_key_bytes(jwk))

    @classmethod
    def from_vkey(cls, vkey: str) -> Self:
        """Build from a verifier key string ``name+hexid+base64(type||key)``."""
        name, raw = _parse_vkey(vkey, cls.sig_type)
        return cls(name, raw)

    def vkey(self) -> str:
        """Return this key as a vkey string."""
        return _vkey(self.name, self.sig_type, self.public_key)

    def public_jwk(self, kid: str | None = None) -> dict[str, Any]:
        """Return the public JWK with ``kid`` (default: its RFC 7638 thumbprint) and
        ``name`` (the signed-note key name)."""
        jwk: dict[str, Any] = self._jwk()
        jwk["kid"] = kid if kid is not None else _thumbprint(jwk)
        jwk["name"] = self.name
        return jwk

    def matches(self, sig: Signature) -> bool:
        """True if ``sig`` claims this key (both name and key ID equal)."""
        return sig.name == self.name and sig.key_id == self.key_id

    def _check(self, message: bytes, signature: bytes) -> bool:
        try:
            self._eddsa.verify(message, signature)
        except ValueError:
            return False
        return True

    def verify(self, text: str, sig: Signature) -> None:
        """Check ``sig`` over note ``text``; returns ``None``, raises :class:`BadSignature`."""
        if not self.matches(sig) or len(sig.signature) != self.sig_size:
            raise BadSignature(f"signature is not from key {self.name}")
        if not self._check(text.encode(), sig.signature):
            raise BadSignature(f"signature by {self.name} does not verify")


class _SM2Key:
    """The SM2 parts of a verifier (GB/T 32918, DESIGN §13): the key, its JWK and the
    check of an ``r || s`` signature made with the default user id."""

    key_type = "SM2"
    sig_size = 64
    public_key: bytes

    @staticmethod
    def _public_key_bytes(key: bytes | str | Mapping[str, Any]) -> bytes:
        try:
            return sm2.public_key_bytes(key)
        except UnsupportedAlgorithm as exc:
            raise BadCheckpoint(exc.message) from exc

    def _setup(self) -> None:
        pass

    def _jwk(self) -> dict[str, str]:
        return sm2.jwk_of(self.public_key)

    def _check(self, message: bytes, signature: bytes) -> bool:
        return sm2.verify(self.public_key, message, signature)


class SM2NoteVerifier(_SM2Key, NoteVerifier):
    """Verifies SM2 note signatures (type ``0xff "pds/sm2-sm3"``)."""

    sig_type = SM2_NOTE


class RawSigner(Protocol):
    """Whatever holds a private key and signs bytes: an in-process key, or a hardware
    signing server (密码机) behind the same three members.

    ``key_type`` is ``"Ed25519"`` (RFC 8032 signature, 64 bytes) or ``"SM2"``
    (``r || s`` over the message with the default user id, GB/T 32918);
    ``public_key`` is the raw key (32 bytes, or the 65-byte SM2 point).
    """

    @property
    def key_type(self) -> str: ...

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


class Ed25519RawSigner:
    """An in-process Ed25519 :class:`RawSigner` (pycryptodome)."""

    key_type = "Ed25519"

    def __init__(self, key: ECC.EccKey) -> None:
        if key.curve != "Ed25519" or not key.has_private():
            raise BadCheckpoint("a note signer needs an Ed25519 private key")
        self.key = key
        self._eddsa = eddsa.new(key, "rfc8032")
        self.public_key = bytes(key.public_key().export_key(format="raw"))

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        return bytes(self._eddsa.sign(message))


class NoteSigner:
    """Signs notes under a key name: Ed25519 (type 0x01) or SM2 (``0xff "pds/sm2-sm3"``).

    ``key`` is a pycryptodome Ed25519 key or any :class:`RawSigner`.
    """

    cosigning = False

    def __init__(self, key: ECC.EccKey | RawSigner, name: str) -> None:
        raw: RawSigner = Ed25519RawSigner(key) if isinstance(key, ECC.EccKey) else key
        self._verifier_class = _verifier_class(raw.key_type, cosignature=self.cosigning)
        self.name = check_key_name(name)
        self._raw = raw
        self.public_key = bytes(raw.public_key)
        self.sig_type = self._verifier_class.sig_type
        self.key_id = key_id(name, self.sig_type, self.public_key)

    @classmethod
    def from_pem(cls, pem: str | bytes, name: str) -> Self:
        """Load a PKCS#8 PEM Ed25519 private key; raises :class:`BadCheckpoint`."""
        try:
            key = ECC.import_key(pem)
        except (ValueError, IndexError, TypeError) as exc:
            raise BadCheckpoint("not a PKCS#8 Ed25519 private key") from exc
        return cls(key, name)

    @classmethod
    def generate(cls, name: str) -> Self:
        """Return a signer with a fresh random Ed25519 key."""
        return cls(ECC.generate(curve="Ed25519"), name)

    def _ecc(self) -> ECC.EccKey:
        if not isinstance(self._raw, Ed25519RawSigner):
            raise BadCheckpoint("this signer's private key is not held in this process")
        return self._raw.key

    def private_pem(self) -> str:
        """Return the Ed25519 private key as PKCS#8 PEM (in-process keys only)."""
        return str(self._ecc().export_key(format="PEM"))

    def public_pem(self) -> str:
        """Return the public key as SPKI PEM."""
        if len(self.public_key) == 65:
            return sm2.spki_pem(self.public_key)
        return str(self._ecc().public_key().export_key(format="PEM"))

    def verifier(self) -> NoteVerifier:
        """Return the matching verifier."""
        return self._verifier_class(self.name, self.public_key)

    def public_jwk(self, kid: str | None = None) -> dict[str, Any]:
        """Return the public JWK with ``kid`` and ``name`` (see :class:`NoteVerifier`)."""
        return self.verifier().public_jwk(kid)

    def vkey(self) -> str:
        """Return the public key as a vkey string."""
        return _vkey(self.name, self.sig_type, self.public_key)

    def sign(self, text: str) -> Signature:
        """Return this key's signature over note ``text`` (which must end in newline)."""
        if not text.endswith("\n"):
            raise BadCheckpoint("note text must end with a newline")
        _check_text(text)
        return Signature(self.name, self.key_id, self._raw.sign(text.encode()))

    def sign_note(self, text: str) -> str:
        """Return the complete signed note for ``text``."""
        return str(Note(text, (self.sign(text),)))


def open_note(note: str | bytes | Note, verifiers: Sequence[NoteVerifier]) -> Note:
    """Verify a note against trusted ``verifiers`` per signed-note rules; return it.

    Signatures from unknown keys are ignored; a known key whose signature fails makes
    the whole note bad (:class:`BadSignature`); if no known key signed it,
    :class:`BadCheckpoint` is raised.
    """
    parsed = note if isinstance(note, Note) else parse_note(note)
    verified = 0
    for sig in parsed.signatures:
        for v in verifiers:
            if v.matches(sig):
                v.verify(parsed.text, sig)
                verified += 1
    if not verified:
        raise BadCheckpoint("note is not signed by any trusted key")
    return parsed


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint note text: origin, tree size, root hash, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    @property
    def time(self) -> str | None:
        """The value of the ``time`` extension line, if any."""
        for line in self.extensions:
            if line.startswith("time "):
                return line[5:]
        return None

    def text(self) -> str:
        """Return the note text (ending in newline) that is signed."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text; raises :class:`BadCheckpoint`."""
        if not text.endswith("\n"):
            raise BadCheckpoint("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise BadCheckpoint("checkpoint needs origin, size and root lines, none empty")
        if not _SIZE.fullmatch(lines[1]):
            raise BadCheckpoint(f"bad tree size line {lines[1][:40]!r}")
        root = _b64decode(lines[2], "root hash")
        if len(root) != 32:
            raise BadCheckpoint("root hash is not 32 bytes")
        return cls(lines[0], int(lines[1]), root, tuple(lines[3:]))


def checkpoint_text(origin: str, size: int, root: bytes, time: str | None) -> str:
    """Return the checkpoint note text, with a ``time`` extension line if given."""
    return Checkpoint(origin, size, root, (f"time {time}",) if time else ()).text()


def open_checkpoint(
    note: str | bytes | Note, verifiers: Sequence[NoteVerifier], origin: str | None = None
) -> tuple[Checkpoint, Note]:
    """Verify a signed checkpoint; return it parsed with its note.

    Raises :class:`BadCheckpoint` (bad format, wrong ``origin``, no trusted signature) or
    :class:`BadSignature`.
    """
    parsed = open_note(note, verifiers)
    cp = Checkpoint.parse(parsed.text)
    if origin is not None and cp.origin != origin:
        raise BadCheckpoint(f"checkpoint origin {cp.origin!r} is not {origin!r}")
    return cp, parsed


def cosignature_message(text: str, timestamp: int) -> bytes:
    """Return what a cosignature/v1 signs: header, time line, whole checkpoint text."""
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


class CosignatureVerifier(NoteVerifier):
    """Verifies c2sp.org/tlog-cosignature v1 (Ed25519, type 0x04) lines of one witness."""

    sig_type: int | bytes = COSIGNATURE_V1

    def verify(self, text: str, sig: Signature) -> None:
        """Check a cosignature over checkpoint ``text``; raises :class:`BadSignature`."""
        self.timestamp(text, sig)

    def timestamp(self, text: str, sig: Signature) -> int:
        """Verify and return the cosignature's POSIX timestamp; raises :class:`BadSignature`."""
        if not self.matches(sig) or len(sig.signature) != 8 + self.sig_size:
            raise BadSignature(f"cosignature is not from witness {self.name}")
        ts = int.from_bytes(sig.signature[:8], "big")
        if ts >= 1 << 63:
            raise BadSignature("cosignature timestamp exceeds 2**63 - 1")
        if not self._check(cosignature_message(text, ts), sig.signature[8:]):
            raise BadSignature(f"cosignature by {self.name} does not verify")
        return ts


class SM2CosignatureVerifier(_SM2Key, CosignatureVerifier):
    """Verifies timestamped SM2 cosignatures (``0xff "pds/sm2-sm3-cosignature/v1"``):
    the tlog-cosignature v1 message and layout with an SM2 ``r || s`` signature."""

    sig_type = SM2_COSIGNATURE


class CosignatureSigner(NoteSigner):
    """A witness key producing cosignature lines: tlog-cosignature v1 with Ed25519
    (type 0x04), or its SM2 counterpart (``0xff "pds/sm2-sm3-cosignature/v1"``)."""

    cosigning = True

    def verifier(self) -> CosignatureVerifier:
        """Return the matching cosignature verifier."""
        verifier = self._verifier_class(self.name, self.public_key)
        assert isinstance(verifier, CosignatureVerifier)
        return verifier

    def sign(self, text: str, timestamp: int | None = None) -> Signature:
        """Cosign checkpoint ``text`` at POSIX ``timestamp`` (required)."""
        if timestamp is None or not 0 <= timestamp < 1 << 63:
            raise BadCheckpoint("a cosignature needs a timestamp in [0, 2**63)")
        _check_text(text)
        sig = self._raw.sign(cosignature_message(text, timestamp))
        return Signature(self.name, self.key_id, timestamp.to_bytes(8, "big") + sig)


_VERIFIERS: dict[tuple[str, bool], type[NoteVerifier]] = {
    ("Ed25519", False): NoteVerifier,
    ("SM2", False): SM2NoteVerifier,
    ("Ed25519", True): CosignatureVerifier,
    ("SM2", True): SM2CosignatureVerifier,
}


def _verifier_class(key_type: str, *, cosignature: bool) -> type[NoteVerifier]:
    try:
        return _VERIFIERS[(key_type, cosignature)]
    except KeyError:
        raise BadCheckpoint(f"unsupported key type {key_type!r}: Ed25519 or SM2") from None


def _jwk_key_type(jwk: Mapping[str, Any]) -> str:
    if jwk.get("kty") == "EC" and jwk.get("crv") == "SM2":
        return "SM2"
    if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
        return "Ed25519"
    raise BadCheckpoint(f"JWK is neither an Ed25519 nor an SM2 key ({jwk.get('crv')!r})")


def note_verifier(jwk: Mapping[str, Any], name: str | None = None) -> NoteVerifier:
    """Return the note verifier of an Ed25519 or SM2 JWK (``name`` defaults to the
    JWK's ``name``). Raises :class:`BadCheckpoint`."""
    return _verifier_class(_jwk_key_type(jwk), cosignature=False).from_jwk(jwk, name)


def cosignature_verifier(jwk: Mapping[str, Any], name: str | None = None) -> CosignatureVerifier:
    """Return the cosignature verifier of an Ed25519 or SM2 witness JWK. Raises
    :class:`BadCheckpoint`."""
    verifier = _verifier_class(_jwk_key_type(jwk), cosignature=True).from_jwk(jwk, name)
    assert isinstance(verifier, CosignatureVerifier)
    return verifier


def _vkey_class(vkey: str, candidates: Sequence[type[NoteVerifier]]) -> type[NoteVerifier]:
    parts = vkey.strip().split("+", 2)
    raw = _b64decode(parts[2], "vkey key") if len(parts) == 3 else b""
    for cls in candidates:
        prefix = _type_bytes(cls.sig_type)
        if raw.startswith(prefix) and len(raw) - len(prefix) == (
            65 if cls.key_type == "SM2" else 32
        ):
            return cls
    return candidates[0]  # its parser names the problem


def note_verifier_from_vkey(vkey: str) -> NoteVerifier:
    """Return the note verifier of an Ed25519 or SM2 vkey. Raises :class:`BadCheckpoint`."""
    return _vkey_class(vkey, (NoteVerifier, SM2NoteVerifier)).from_vkey(vkey)


def cosignature_verifier_from_vkey(vkey: str) -> CosignatureVerifier:
    """Return the cosignature verifier of an Ed25519 or SM2 witness vkey. Raises
    :class:`BadCheckpoint`."""
    cls = _vkey_class(vkey, (CosignatureVerifier, SM2CosignatureVerifier))
    verifier = cls.from_vkey(vkey)
    assert isinstance(verifier, CosignatureVerifier)
    return verifier
