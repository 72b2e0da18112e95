"""Recording verification probes and reading a scope's window (SQLite and PostgreSQL).

The API records every verified item (found or not, as a keyed hash) in the same
store as the rest of the control plane, then asks ``enumeration.assess`` about the
scope's window. Upserts add to the counters atomically (``ON CONFLICT DO UPDATE``),
so several processes or nodes may record for one scope at once; rows are written in
key order so that concurrent batches lock them in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from sandbox.verification.enumeration import EnumerationPolicy, Verdict, WindowStats, assess
from sandbox.verification.tables import verification_probe_totals as totals_table
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
) -> int | None:
    """Add ``probes`` to the scope's counters of the bucket containing ``now``.

    Returns the missed lookups of the scope's window ending at ``now`` (as
    ``window_misses``), read by the same statement that adds to the counters, or None
    when there was nothing to record.
    """
    counts: dict[str, list[int]] = {}
    for p in probes:
        c = counts.setdefault(p.key_hash, [0, 0])
        c[0 if p.found else 1] += 1
    if not counts:
        return None
    bucket = _bucket(now, policy)
    rows = [
        {"scope_id": scope_id, "bucket": bucket, "key_hash": h, "hits": c[0], "misses": c[1]}
        for h, c in sorted(counts.items())
    ]
    dialect = conn.dialect.name
    if dialect not in _UPSERTS:  # pragma: no cover - the control plane is SQLite or PostgreSQL
        raise ValueError(f"unsupported control-plane dialect {dialect!r}")
    add_probes, add_totals = _UPSERTS[dialect]
    current, earlier = conn.execute(
        add_totals,
        {
            "scope_id": scope_id,
            "bucket": bucket,
            "first": bucket - policy.window_s // policy.bucket_s + 1,
            "lookups": sum(sum(c) for c in counts.values()),
            "misses": sum(c[1] for c in counts.values()),
        },
    ).one()
    conn.execute(add_probes, rows)
    return int(current) + int(earlier)


def _upserts(insert: Any) -> tuple[sa.Executable, sa.Executable]:
    # Built once per dialect: every call reuses the compiled statements.
    probes = insert(probes_table)
    totals = insert(totals_table).values(
        scope_id=sa.bindparam("scope_id"),
        bucket=sa.bindparam("bucket"),
        lookups=sa.bindparam("lookups"),
        misses=sa.bindparam("misses"),
    )
    return (
        probes.on_conflict_do_update(
            index_elements=["scope_id", "bucket", "key_hash"],
            set_={
                "hits": probes_table.c.hits + probes.excluded.hits,
                "misses": probes_table.c.misses + probes.excluded.misses,
            },
        ),
        # The upsert also returns the window's missed lookups: its own bucket's total
        # after the update, plus the earlier buckets' (which it does not touch, so every
        # store reads them alike), saving a statement per commit batch.
        totals.on_conflict_do_update(
            index_elements=["scope_id", "bucket"],
            set_={
                "lookups": totals_table.c.lookups + totals.excluded.lookups,
                "misses": totals_table.c.misses + totals.excluded.misses,
            },
        ).returning(totals_table.c.misses, _earlier_misses()),
    )


def _earlier_misses() -> sa.ScalarSelect[Any]:
    w = totals_table.alias("earlier")
    return (
        sa.select(sa.func.coalesce(sa.func.sum(w.c.misses), 0))
        .where(
            w.c.scope_id == sa.bindparam("scope_id"),
            w.c.bucket >= sa.bindparam("first"),
            w.c.bucket < sa.bindparam("bucket"),
        )
        .scalar_subquery()
    )


_UPSERTS = {"postgresql": _upserts(postgresql.insert), "sqlite": _upserts(sqlite.insert)}
_WINDOW_MISSES = sa.select(sa.func.coalesce(sa.func.sum(totals_table.c.misses), 0)).where(
    totals_table.c.scope_id == sa.bindparam("scope_id"),
    totals_table.c.bucket >= sa.bindparam("first"),
    totals_table.c.bucket <= sa.bindparam("last"),
)


def window_misses(conn: Connection, scope_id: str, now: datetime, policy: EnumerationPolicy) -> int:
    """Return the missed lookups (not distinct keys) of the scope's window: an upper
    bound of its missed distinct keys, read from one row per bucket."""
    last = _bucket(now, policy)
    first = last - policy.window_s // policy.bucket_s + 1
    total = conn.execute(
        _WINDOW_MISSES, {"scope_id": scope_id, "first": first, "last": last}
    ).scalar_one()
    return int(total)


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


def record_and_assess(
    engine: Engine,
    scope_id: str,
    now: datetime,
    probes: Iterable[Probe],
    policy: EnumerationPolicy,
) -> Verdict:
    """Record ``probes`` and return the verdict on the scope's window, in one transaction.

    A flag needs at least ``miss_ratio × min_keys`` distinct missed keys, and each of
    them is at least one missed lookup: while the window's missed lookups stay below
    that, the verdict is "no flag" without reading the window's keys (the common case
    of an honest caller, and O(buckets) instead of O(keys))."""
    with engine.begin() as conn:
        return record_and_assess_in(conn, scope_id, now, probes, policy)


def record_and_assess_in(
    conn: Connection,
    scope_id: str,
    now: datetime,
    probes: Iterable[Probe],
    policy: EnumerationPolicy,
) -> Verdict:
    """``record_and_assess`` inside the caller's transaction."""
    misses = record_probes(conn, scope_id, now, probes, policy)
    if misses is None:
        misses = window_misses(conn, scope_id, now, policy)
    if misses < policy.miss_ratio * policy.min_keys:
        return Verdict(False, False)
    return assess(window_stats(conn, scope_id, now, policy), policy)


def purge_expired(conn: Connection, now: datetime, policy: EnumerationPolicy) -> int:
    """Delete buckets that left every window ending at or after ``now``; return the count."""
    first = _bucket(now, policy) - policy.window_s // policy.bucket_s + 1
    conn.execute(sa.delete(totals_table).where(totals_table.c.bucket < first))
    result = conn.execute(sa.delete(probes_table).where(probes_table.c.bucket < first))
    return int(result.rowcount or 0)
