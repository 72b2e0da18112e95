"""Per-scope rate limits and daily quotas, counted in the control-plane store.

Every call made under a scope counts, refused ones included (DESIGN §5), so the
counter is incremented first and the limit checked on the new value. The increment
is one atomic upsert, correct across processes and nodes sharing the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from policies.errors import QuotaExceeded, RateLimited
from policies.scopes import Scope
from policies.tables import rate_counters

MINUTE = 60
DAY = 86_400


# Both counters in one upsert. Written as text because SQLAlchemy does not cache a
# multi-row VALUES construct: built from Core it was compiled anew on every call
# (about a quarter of a millisecond each). The SQL is the common subset of SQLite
# (>= 3.35, for RETURNING) and PostgreSQL; "window" is quoted, a keyword in both.
_BUMP = sa.text(
    'INSERT INTO rate_counters (scope_id, "window", window_start, count) '
    "VALUES (:scope_id, 'minute', :minute, :n), (:scope_id, 'day', :day, :n) "
    'ON CONFLICT (scope_id, "window", window_start) '
    "DO UPDATE SET count = rate_counters.count + excluded.count "
    'RETURNING "window", count'
).columns(sa.column("window", sa.String), sa.column("count", sa.BigInteger))


class RateLimiter:
    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock
        self._calls = 0

    @staticmethod
    def _bump(conn: sa.Connection, scope_id: str, minute: int, day: int, n: int) -> dict[str, int]:
        """Add ``n`` to the minute and day counters in one statement; return both."""
        params = {"scope_id": scope_id, "minute": minute, "day": day, "n": n}
        return {str(w): int(c) for w, c in conn.execute(_BUMP, params).all()}

    def count_in(
        self, conn: sa.Connection, scope: Scope, calls: Sequence[int]
    ) -> list[RateLimited | QuotaExceeded | None]:
        """Count several calls under ``scope`` inside the caller's transaction, in order.

        One statement adds them all; each call is then judged on the count it reached
        (its own calls included), as ``count`` would have judged it alone. Returns, per
        call, the refusal (``RateLimited``/``QuotaExceeded``) or ``None``.
        """
        now = int(self._clock().timestamp())
        minute_start = now - now % MINUTE
        day_start = now - now % DAY
        total = sum(calls)
        counts = self._bump(conn, scope.id, minute_start, day_start, total)
        per_minute, per_day = counts["minute"] - total, counts["day"] - total
        out: list[RateLimited | QuotaExceeded | None] = []
        for n in calls:
            per_minute += n
            per_day += n
            out.append(self._refusal(scope, per_minute, per_day, now))
        self._calls += 1
        if self._calls % 1000 == 0:
            conn.execute(rate_counters.delete().where(rate_counters.c.window_start < now - 2 * DAY))
        return out

    @staticmethod
    def _refusal(
        scope: Scope, per_minute: int, per_day: int, now: int
    ) -> RateLimited | QuotaExceeded | None:
        day_start = now - now % DAY
        minute_start = now - now % MINUTE
        if per_day > scope.daily_quota:
            return QuotaExceeded(
                f"scope {scope.id!r} used its daily quota of {scope.daily_quota} calls",
                retry_after=day_start + DAY - now,
                details={"scope": scope.id, "daily_quota": scope.daily_quota},
            )
        if per_minute > scope.rate_per_minute:
            return RateLimited(
                f"scope {scope.id!r} allows {scope.rate_per_minute} calls per minute",
                retry_after=max(minute_start + MINUTE - now, 1),
                details={"scope": scope.id, "rate_per_minute": scope.rate_per_minute},
            )
        return None

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
        refusal = self._refusal(scope, per_minute, per_day, now)
        if refusal is not None:
            raise refusal

    def prune(self, now: int) -> None:
        """Forget windows that ended more than a day ago."""
        with self._engine.begin() as conn:
            conn.execute(rate_counters.delete().where(rate_counters.c.window_start < now - 2 * DAY))
