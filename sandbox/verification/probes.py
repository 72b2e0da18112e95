"""Recording verification probes and reading a scope's window (SQLite and PostgreSQL).

Every verified item (found or not, as a keyed hash) is recorded in the transaction of
its call's audit entry; the platform's scheduled review (``sandbox/actions/review.py``)
asks ``enumeration.assess`` about each window. Upserts add to the counters atomically
(``ON CONFLICT DO UPDATE``), so several processes or nodes may record for one scope at
once; rows are written in key order so that concurrent batches lock them in the same
order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from sandbox.verification.enumeration import EnumerationPolicy, WindowStats
from sandbox.verification.tables import verification_probes as probes_table


@dataclass(frozen=True)
class Probe:
    """One looked-up subject: its keyed hash and whether it matched a record."""

    key_hash: str
    found: bool


def _bucket(now: datetime, policy: EnumerationPolicy) -> int:
    if now.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return int(now.timestamp()) // policy.bucket_s


def record_probes(
    conn: Connection,
    scope_id: str,
    now: datetime,
    probes: Iterable[Probe],
    policy: EnumerationPolicy,
) -> None:
    """Add ``probes`` to the scope's counters of the bucket containing ``now``, on
    ``conn`` (the transaction of the calls' audit entry)."""
    counts: dict[str, list[int]] = {}
    for p in probes:
        c = counts.setdefault(p.key_hash, [0, 0])
        c[0 if p.found else 1] += 1
    if not counts:
        return
    bucket = _bucket(now, policy)
    rows = [
        {"scope_id": scope_id, "bucket": bucket, "key_hash": h, "hits": c[0], "misses": c[1]}
        for h, c in sorted(counts.items())
    ]
    conn.execute(_UPSERTS[conn.dialect.name], rows)


def _upsert(insert: Any) -> sa.Executable:
    # Built once per dialect: every call reuses the compiled statement.
    probes = insert(probes_table)
    return probes.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=["scope_id", "bucket", "key_hash"],
        set_={
            "hits": probes_table.c.hits + probes.excluded.hits,
            "misses": probes_table.c.misses + probes.excluded.misses,
        },
    )


_UPSERTS = {"postgresql": _upsert(postgresql.insert), "sqlite": _upsert(sqlite.insert)}


def scopes_to_review(conn: Connection, now: datetime, policy: EnumerationPolicy) -> list[str]:
    """Return the scopes whose window ending at ``now`` missed enough lookups that a
    flag is possible (each missed distinct key is at least one missed lookup): the
    others need no look at their keys."""
    last = _bucket(now, policy)
    first = last - policy.window_s // policy.bucket_s + 1
    floor = min(policy.unknown_keys, int(policy.miss_ratio * policy.min_keys))
    t = probes_table
    rows = conn.execute(
        sa.select(t.c.scope_id)
        .where(t.c.bucket >= first, t.c.bucket <= last)
        .group_by(t.c.scope_id)
        .having(sa.func.sum(t.c.misses) >= floor)
        .order_by(t.c.scope_id)
    ).scalars()
    return [str(r) for r in rows]


def window_stats(
    conn: Connection, scope_id: str, now: datetime, policy: EnumerationPolicy
) -> WindowStats:
    """Return what the scope probed in the window ending at ``now``."""
    last = _bucket(now, policy)
    first = last - policy.window_s // policy.bucket_s + 1
    t = probes_table
    per_key = (
        sa.select(
            t.c.key_hash,
            sa.func.sum(t.c.hits).label("hits"),
            sa.func.sum(t.c.misses).label("misses"),
        )
        .where(t.c.scope_id == scope_id, t.c.bucket >= first, t.c.bucket <= last)
        .group_by(t.c.key_hash)
        .subquery()
    )
    row = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((per_key.c.hits == 0, 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(per_key.c.hits + per_key.c.misses), 0),
        )
    ).one()
    return WindowStats(distinct_keys=int(row[0]), missed_keys=int(row[1]), lookups=int(row[2]))


def purge_expired(conn: Connection, now: datetime, policy: EnumerationPolicy) -> int:
    """Delete buckets that left every window ending at or after ``now``; return the count."""
    first = _bucket(now, policy) - policy.window_s // policy.bucket_s + 1
    result = conn.execute(sa.delete(probes_table).where(probes_table.c.bucket < first))
    return int(result.rowcount or 0)
