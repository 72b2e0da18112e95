"""Durable audit appends per second with N concurrent writer threads (DESIGN §10).

    PYTHONPATH=. python bench/audit_append.py [--threads 64] [--seconds 10] [--pg URL]

Each append returns only after its transaction committed (group commit). SQLite runs
in WAL with synchronous NORMAL and FULL; PostgreSQL with its server settings.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
import uuid

import sqlalchemy as sa

from audit.entry import Entry
from audit.log import AuditLog, create_tables
from audit.note import NoteSigner


def fields(i: int) -> dict[str, object]:
    return {
        "actor": f"ent-{i % 50}",
        "role": "enterprise",
        "action": "verify",
        "target": {"product": "enterprise_registry", "scope": f"sc-{i % 20}"},
        "request_hash": f"{i:064x}",
        "decision": "allow",
        "reason": None,
        "epsilon": "0",
        "result_hash": f"{i + 1:064x}",
        "jti": str(uuid.uuid4()),
        "client": "10.0.0.7",
    }


def run(log: AuditLog, threads: int, seconds: float) -> tuple[float, int]:
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def work(t: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            log.append(Entry.from_fields(fields(t * 1_000_000 + i)))
            i += 1
        counts[t] = i

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    return sum(counts) / elapsed, sum(counts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--pg", default=os.environ.get("SANDBOX_TEST_DATABASE_URL"))
    args = ap.parse_args()
    print(f"# {platform.node()} {os.cpu_count()} cpus, python {platform.python_version()}")
    signer = NoteSigner.generate("bench/audit")
    with tempfile.TemporaryDirectory() as d:
        for sync in ("NORMAL", "FULL"):
            engine = sa.create_engine(f"sqlite:///{d}/{sync}.db")
            create_tables(engine)
            log = AuditLog(engine, signer=signer, sqlite_synchronous=sync)
            rate, n = run(log, args.threads, args.seconds)
            print(
                f"sqlite WAL synchronous={sync}: {rate:,.0f} appends/s "
                f"({n} in {args.seconds}s, {args.threads} threads)"
            )
            log.close()
            engine.dispose()
    if args.pg:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.pg)
        with admin.begin() as c:
            c.exec_driver_sql(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in args.pg else "?"
        engine = sa.create_engine(f"{args.pg}{sep}options=-csearch_path%3D{schema}", pool_size=4)
        try:
            create_tables(engine)
            with engine.connect() as c:
                sc = c.exec_driver_sql("SHOW synchronous_commit").scalar()
                fs = c.exec_driver_sql("SHOW fsync").scalar()
            log = AuditLog(engine, signer=signer)
            rate, n = run(log, args.threads, args.seconds)
            print(
                f"postgresql (fsync={fs}, synchronous_commit={sc}): {rate:,.0f} appends/s "
                f"({n} in {args.seconds}s, {args.threads} threads)"
            )
        finally:
            engine.dispose()
            with admin.begin() as c:
                c.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
            admin.dispose()


if __name__ == "__main__":
    main()
