"""Replay guard: each (issuer, jti) is accepted once within its lifetime.

The guard is a primary key in the control-plane store, so it holds across threads,
processes and nodes sharing the store: the second insert of the same pair fails
inside the database, whichever process tries it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from policies.tables import nonces

PRUNE_EVERY = 1000
PRUNE_MARGIN = timedelta(seconds=120)


def _claim_statement(insert: Any) -> sa.Executable:
    # One statement claims any number of nonces: the rows it returns are the ones it
    # inserted, so a nonce already recorded (a replay) is simply not returned.
    stmt = insert(nonces).on_conflict_do_nothing(index_elements=["issuer", "jti"])
    return stmt.returning(nonces.c.issuer, nonces.c.jti)  # type: ignore[no-any-return]


_CLAIM = {
    "postgresql": _claim_statement(postgresql.insert),
    "sqlite": _claim_statement(sqlite.insert),
}


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

    @staticmethod
    def claim_in(conn: Connection, claims: Sequence[tuple[str, str, datetime]]) -> list[bool]:
        """Record ``(issuer, jti, expires_at)`` claims inside the caller's transaction.

        Returns, per claim, whether it is fresh: False for a nonce already recorded or
        claimed earlier in ``claims``. One statement for any number.
        """
        fresh: dict[tuple[str, str], datetime] = {}
        first = []
        for issuer, jti, expires_at in claims:
            key = (issuer, jti)
            first.append(key not in fresh)
            fresh.setdefault(key, expires_at)
        if not fresh:
            return []
        rows = [{"issuer": i, "jti": j, "expires_at": e} for (i, j), e in fresh.items()]
        result = conn.execute(_CLAIM[conn.dialect.name], rows)
        inserted = {(str(i), str(j)) for i, j in result}
        return [
            is_first and (issuer, jti) in inserted
            for is_first, (issuer, jti, _) in zip(first, claims, strict=True)
        ]

    def prune(self) -> int:
        """Delete nonces whose tokens can no longer be accepted. Returns rows removed.

        Keeps them ``PRUNE_MARGIN`` longer than their window: a call admitted at commit
        (``claim_in``) is refused once its window has ended by that process's clock,
        and the margin covers clocks of other processes and nodes that run behind.
        """
        with self._engine.begin() as conn:
            cutoff = self._clock() - PRUNE_MARGIN
            return int(conn.execute(nonces.delete().where(nonces.c.expires_at < cutoff)).rowcount)
