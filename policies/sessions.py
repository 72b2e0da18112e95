"""Web console sign-in (DESIGN §12): one-time challenges and short-lived sessions.

A *challenge* is issued without writing anything: ``nonce . expiry . MAC`` with an
HMAC-SHA-256 under the deployment's console secret, so that only this platform could
have issued it and its expiry cannot be moved. The principal signs it with its key
(as a DESIGN §6 signed call over ``POST /console/sign-in`` whose body is the
challenge); the sign-in claims the challenge's nonce in the transaction of its own
audit entry (``NonceStore.claim``), so each challenge opens at most one session, and
issuing challenges costs the store nothing.

A *session* is a random secret in an HttpOnly cookie; the store keeps only its
SHA-256, the principal, its expiry and when it was ended (sign-out). The public id
recorded in audit entries is a prefix of that hash, from which the secret cannot be
recovered. CSRF tokens are MACs of the session id: nothing more to store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from policies.errors import BadSignature, TokenExpired
from policies.nonces import NonceStore
from policies.tables import console_sessions

CHALLENGE_ISSUER = "console:challenge"  # the nonce namespace of sign-in challenges
CHALLENGE_PATH = "/console/sign-in"  # the request a sign-in token is a signed call of
PUBLIC_ID_CHARS = 16
Clock = Callable[[], datetime]


def console_secret(deployment_secret: bytes) -> bytes:
    """The console's MAC key, derived from the deployment's secret (one label per use,
    so that a MAC made for one purpose is never valid for another)."""
    return hmac.new(deployment_secret, b"pds console v1", hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, label: str, data: bytes) -> bytes:
    return hmac.new(secret, label.encode() + b"\x00" + data, hashlib.sha256).digest()


@dataclass(frozen=True)
class Challenge:
    """A parsed, authentic challenge: its nonce (hex) and expiry."""

    nonce: str
    expires_at: datetime


def issue_challenge(secret: bytes, now: datetime, lifetime_s: int) -> str:
    """Return a fresh challenge valid for ``lifetime_s`` seconds."""
    body = secrets.token_bytes(16) + struct.pack(">Q", int(now.timestamp()) + lifetime_s)
    return f"{_b64(body)}.{_b64(_mac(secret, 'challenge', body))}"


def open_challenge(secret: bytes, text: str, now: datetime) -> Challenge:
    """Check a challenge's MAC and expiry. Raises ``BadSignature`` for one this platform
    did not issue (or altered), ``TokenExpired`` for one past its expiry."""
    try:
        body_text, mac_text = text.strip().split(".")
        body, mac = _unb64(body_text), _unb64(mac_text)
    except (ValueError, UnicodeError):
        raise BadSignature("not a sign-in challenge of this platform", "bad_signature") from None
    if len(body) != 24 or not hmac.compare_digest(mac, _mac(secret, "challenge", body)):
        raise BadSignature("not a sign-in challenge of this platform", "bad_signature")
    expires = datetime.fromtimestamp(struct.unpack(">Q", body[16:])[0], UTC)
    if expires <= now:
        raise TokenExpired("the sign-in challenge has expired; ask for a new one", "expired")
    return Challenge(body[:16].hex(), expires)


def claim_challenge(conn: Connection, challenge: Challenge) -> bool:
    """Claim ``challenge`` in the sign-in's transaction; False if it was used before."""
    return NonceStore.claim(conn, CHALLENGE_ISSUER, challenge.nonce, challenge.expires_at)


def csrf_token(secret: bytes, binding: str) -> str:
    """The CSRF token of the forms shown to ``binding`` (a session id, or a pre-session
    cookie on the sign-in page)."""
    return _b64(_mac(secret, "csrf", binding.encode()))


def csrf_ok(secret: bytes, binding: str, token: str | None) -> bool:
    """Whether ``token`` is the CSRF token of ``binding`` (constant time)."""
    return token is not None and hmac.compare_digest(token, csrf_token(secret, binding))


def session_id(secret_token: str) -> str:
    """The stored id of a session: SHA-256 (hex) of its cookie's secret."""
    return hashlib.sha256(secret_token.encode()).hexdigest()


def new_session_token() -> str:
    """A fresh session secret (256 bits) for the cookie."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ConsoleSession:
    id: str
    principal: str
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None

    @property
    def public_id(self) -> str:
        """What audit entries record (a prefix of the id; the secret stays secret)."""
        return self.id[:PUBLIC_ID_CHARS]

    def live(self, now: datetime) -> bool:
        return self.ended_at is None and now < self.expires_at


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


_FIND = sa.select(console_sessions).where(console_sessions.c.id == sa.bindparam("id"))


class SessionStore:
    """Console sessions in the control plane; opened and ended only in the transaction
    of the call's audit entry (``open`` and ``end`` take its connection)."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    @staticmethod
    def open(
        conn: Connection,
        secret_token: str,
        principal: str,
        now: datetime,
        lifetime_s: int,
        audit_index: int,
    ) -> ConsoleSession:
        """Record a new session for ``principal`` expiring ``lifetime_s`` from ``now``."""
        sid = session_id(secret_token)
        expires = now + timedelta(seconds=lifetime_s)
        conn.execute(
            console_sessions.insert().values(
                id=sid,
                principal=principal,
                created_at=now,
                expires_at=expires,
                audit_index=audit_index,
            )
        )
        return ConsoleSession(sid, principal, now, expires, None)

    @staticmethod
    def end(conn: Connection, sid: str, now: datetime) -> bool:
        """End the session (sign-out); False if it had ended already."""
        result = conn.execute(
            console_sessions.update()
            .where(console_sessions.c.id == sid, console_sessions.c.ended_at.is_(None))
            .values(ended_at=now)
        )
        return bool(result.rowcount)

    def find(self, secret_token: str) -> ConsoleSession | None:
        """The session of a cookie's secret, live or not (None if unknown)."""
        with self._engine.connect() as conn:
            row = conn.execute(_FIND, {"id": session_id(secret_token)}).first()
        if row is None:
            return None
        return ConsoleSession(
            row.id,
            row.principal,
            _aware(row.created_at),
            _aware(row.expires_at),
            _aware(row.ended_at) if row.ended_at is not None else None,
        )

    def prune(self, keep: timedelta = timedelta(days=1)) -> int:
        """Delete sessions expired more than ``keep`` ago (their entries stay)."""
        with self._engine.begin() as conn:
            cutoff = self._clock() - keep
            return int(
                conn.execute(
                    console_sessions.delete().where(console_sessions.c.expires_at < cutoff)
                ).rowcount
            )
