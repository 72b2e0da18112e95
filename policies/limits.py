"""Per-scope rate limits and daily quotas, counted in the control-plane store.

Every call made under a scope counts, refused ones included (DESIGN §5), so the
counter is incremented first and the limit checked on the new value. The increment
is one atomic upsert in the call's own transaction (``sandbox/actions/call.py``),
correct across processes and nodes sharing the store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from policies.errors import QuotaExceeded, RateLimited
from policies.scopes import Scope, ScopeStatus
from policies.tables import rate_counters
from products.errors import DomainError

MINUTE = 60
DAY = 86_400


# Both counters in one upsert. Written as text because SQLAlchemy does not cache a
# multi-row VALUES construct: built from Core it was compiled anew on every call
# (about a quarter of a millisecond each). The SQL is the common subset of SQLite
# (>= 3.35, for RETURNING) and PostgreSQL; "window" is quoted, a keyword in both.
# The same statement reads the scope's status as stored now, so that admitting a call
# costs one round trip (a missing scope reads as revoked).
_BUMP = sa.text(
    'INSERT INTO rate_counters (scope_id, "window", window_start, count) '
    "VALUES (:scope_id, 'minute', :minute, :n), (:scope_id, 'day', :day, :n) "
    'ON CONFLICT (scope_id, "window", window_start) '
    "DO UPDATE SET count = rate_counters.count + excluded.count "
    'RETURNING "window", count, '
    "(SELECT status FROM scopes WHERE id = :scope_id), "
    "(SELECT status_reason FROM scopes WHERE id = :scope_id)"
).columns(
    sa.column("window", sa.String),
    sa.column("count", sa.BigInteger),
    sa.column("status", sa.String),
    sa.column("status_reason", sa.String),
)


class RateLimiter:
    """Rate and quota counters of scopes (DESIGN §5)."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    @staticmethod
    def admit(conn: sa.Connection, scope: Scope, calls: int, now: datetime) -> DomainError | None:
        """Count ``calls`` under ``scope`` at ``now`` on ``conn`` (inside the call's
        transaction), refused ones included; return the refusal if the new counts are
        over the scope's limits (``RateLimited``/``QuotaExceeded`` with ``retry_after``
        seconds) or its status as stored now or its validity forbids the call
        (``ScopeRevoked``/``ScopeSuspended``/``ScopeExpired``), else None."""
        t = int(now.timestamp())
        params = {"scope_id": scope.id, "minute": t - t % MINUTE, "day": t - t % DAY, "n": calls}
        rows = conn.execute(_BUMP, params).all()
        counts = {str(r[0]): int(r[1]) for r in rows}
        over = _refusal(scope, counts["minute"], counts["day"], t)
        if over is not None:
            return over
        status = ScopeStatus(rows[0].status) if rows[0].status else ScopeStatus.REVOKED
        current = dataclasses.replace(scope, status=status, status_reason=rows[0].status_reason)
        try:
            current.check_usable(now)
        except DomainError as exc:
            return exc
        return None

    def prune(self) -> int:
        """Forget windows that ended more than a day ago; return how many."""
        t = int(self._clock().timestamp())
        with self._engine.begin() as conn:
            result = conn.execute(
                rate_counters.delete().where(rate_counters.c.window_start < t - 2 * DAY)
            )
        return int(result.rowcount or 0)


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
