"""Replay guard: each (issuer, jti) is accepted once within its lifetime.

The guard is a primary key in the control-plane store, so it holds across threads,
processes and nodes sharing the store: the second insert of the same pair fails
inside the database, whichever process tries it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from policies.tables import nonces

PRUNE_MARGIN = timedelta(seconds=120)


def _claim_statement(insert: Any) -> sa.Executable:
    # The row it returns is the one it inserted: a nonce already recorded (a replay)
    # returns nothing, and the transaction goes on.
    stmt = insert(nonces).on_conflict_do_nothing(index_elements=["issuer", "jti"])
    return stmt.returning(nonces.c.issuer, nonces.c.jti)  # type: ignore[no-any-return]


_CLAIM = {
    "postgresql": _claim_statement(postgresql.insert),
    "sqlite": _claim_statement(sqlite.insert),
}


_PRUNE = nonces.delete().where(nonces.c.expires_at < sa.bindparam("cutoff"))


class NonceStore:
    """Records seen nonces; prunes expired ones now and then."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    @staticmethod
    def claim(conn: Connection, issuer: str, jti: str, expires_at: datetime) -> bool:
        """Record ``(issuer, jti)`` on ``conn`` (inside the call's transaction).

        Returns False, writing nothing, for a nonce already recorded (a replay).
        """
        row = conn.execute(
            _CLAIM[conn.dialect.name], {"issuer": issuer, "jti": jti, "expires_at": expires_at}
        ).first()
        return row is not None

    def seen(self, issuer: str, jti: str) -> bool:
        """Whether the nonce is recorded already: an early, advisory check before
        expensive work; the binding check is ``claim`` at commit."""
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(nonces.c.jti).where(nonces.c.issuer == issuer, nonces.c.jti == jti)
            ).first()
        return row is not None

    def prune(self) -> int:
        """Delete nonces whose tokens can no longer be accepted. Returns rows removed.

        Keeps them ``PRUNE_MARGIN`` longer than their window: a call is refused once its
        window has ended by that process's clock when it commits, and the margin covers
        clocks of other processes and nodes that run behind.
        """
        with self._engine.begin() as conn:
            cutoff = self._clock() - PRUNE_MARGIN
            return int(conn.execute(_PRUNE, {"cutoff": cutoff}).rowcount)
