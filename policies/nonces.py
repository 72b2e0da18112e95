"""Replay guard: each (issuer, jti) is accepted once within its lifetime.

The guard is a primary key in the control-plane store, so it holds across threads,
processes and nodes sharing the store: the second insert of the same pair fails
inside the database, whichever process tries it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from policies.tables import nonces

PRUNE_EVERY = 1000


class NonceStore:
    """Records seen nonces; prunes expired ones now and then."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock
        self._since_prune = 0

    def claim(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        """Record the nonce. Returns False if it was already recorded (a replay)."""
        try:
            with self._engine.begin() as conn:
                conn.execute(nonces.insert().values(issuer=issuer, jti=jti, expires_at=expires_at))
        except IntegrityError:
            return False
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self._since_prune = 0
            self.prune()
        return True

    def prune(self) -> int:
        """Delete nonces whose tokens can no longer be accepted. Returns rows removed."""
        with self._engine.begin() as conn:
            return int(
                conn.execute(nonces.delete().where(nonces.c.expires_at < self._clock())).rowcount
            )
