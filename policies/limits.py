"""Per-scope rate limits and daily quotas, counted in the control-plane store.

Every call made under a scope counts, refused ones included (DESIGN §5), so the
counter is incremented first and the limit checked on the new value. The increment
is one atomic upsert, correct across processes and nodes sharing the store.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from policies.errors import QuotaExceeded, RateLimited
from policies.scopes import Scope
from policies.tables import rate_counters

MINUTE = 60
DAY = 86_400


class RateLimiter:
    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock
        self._calls = 0

    @staticmethod
    def _bump(conn: sa.Connection, scope_id: str, minute: int, day: int, n: int) -> dict[str, int]:
        """Add ``n`` to the minute and day counters in one statement; return both."""
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        ins = insert(rate_counters).values(
            [
                {"scope_id": scope_id, "window": "minute", "window_start": minute, "count": n},
                {"scope_id": scope_id, "window": "day", "window_start": day, "count": n},
            ]
        )
        stmt = ins.on_conflict_do_update(
            index_elements=["scope_id", "window", "window_start"],
            set_={"count": rate_counters.c.count + n},
        ).returning(rate_counters.c.window, rate_counters.c.count)
        return {str(w): int(c) for w, c in conn.execute(stmt).all()}

    def count(self, scope: Scope, n: int = 1) -> None:
        """Count ``n`` calls under ``scope`` now.

        Raises ``RateLimited`` or ``QuotaExceeded`` (with ``retry_after`` seconds)
        when the new count is over the scope's limits.
        """
        now = int(self._clock().timestamp())
        minute_start = now - now % MINUTE
        day_start = now - now % DAY
        with self._engine.begin() as conn:
            counts = self._bump(conn, scope.id, minute_start, day_start, n)
        per_minute, per_day = counts["minute"], counts["day"]
        self._calls += 1
        if self._calls % 1000 == 0:
            self.prune(now)
        if per_day > scope.daily_quota:
            raise QuotaExceeded(
                f"scope {scope.id!r} used its daily quota of {scope.daily_quota} calls",
                retry_after=day_start + DAY - now,
                details={"scope": scope.id, "daily_quota": scope.daily_quota},
            )
        if per_minute > scope.rate_per_minute:
            raise RateLimited(
                f"scope {scope.id!r} allows {scope.rate_per_minute} calls per minute",
                retry_after=max(minute_start + MINUTE - now, 1),
                details={"scope": scope.id, "rate_per_minute": scope.rate_per_minute},
            )

    def prune(self, now: int) -> None:
        """Forget windows that ended more than a day ago."""
        with self._engine.begin() as conn:
            conn.execute(rate_counters.delete().where(rate_counters.c.window_start < now - 2 * DAY))
