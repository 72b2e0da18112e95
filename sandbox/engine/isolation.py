"""Isolated, read-only execution of planner SQL (DESIGN §2 invariant 2).

This module holds the only ``duckdb.connect`` used for reads. Every connection is
read-only and configured before it runs anything: external access (files, URLs,
``ATTACH``, ``COPY``), extension installing and (auto)loading, community and unsigned
extensions and persistent secrets are off; memory and threads are limited; and
``lock_configuration`` is set last, so no statement can undo any of it. A timer
interrupts a query that outlives ``timeout_s``.

Queries run in a small pool of worker processes (``WorkerPool``, spawn context): a
query that crashes DuckDB or exhausts memory outside DuckDB's own accounting kills
one worker, which is replaced, and the caller gets ``QueryFailed`` — the server lives
on. ``run_and_finish`` also runs a picklable ``finish(rows, deadline)`` step in the
worker (the engine's release: noise and post-processing), so the exact rows never
leave it and one time limit covers the SQL and the release. A worker that does not
answer within ``timeout_s`` plus a grace period is killed; running out of time is
``QueryTimeout`` (503 ``unavailable``, with ``retry_after``).
Workers keep their (locked, read-only) connections open between queries so that
DuckDB's buffer cache stays warm; a connection is keyed by the file's identity and the
limits, so a new product version opens a new one. ``UnsafeInProcessRunner`` runs in the
calling process with the same connection settings but without crash containment (for
tests and comparisons); see docs/engine.md for the measured cost of each.
"""

from __future__ import annotations

import atexit
import math
import multiprocessing
import multiprocessing.connection
import os
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import duckdb

from products.errors import DomainError
from products.loader import parse_size
from sandbox.errors import QueryFailed, QueryTimeout, Unavailable

_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)\s*\Z", re.IGNORECASE)
Row = tuple[Any, ...]
_T = TypeVar("_T")
BUSY_RETRY_AFTER_S = 5  # Retry-After of a refusal because every worker is busy
MEMORY_CHECK_S = 0.1  # how often a running job's worker memory is read
# Beyond DuckDB's memory_limit, what a worker may hold: the interpreter, DuckDB's code
# and the release step's own objects (measured: ~0.3 GB with OpenDP and mbi imported).
MEMORY_HEADROOM_BYTES = 1 << 30
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class StoredColumnsSQL:
    """Planner SQL in two forms: ``sql`` reads columns the loader stores (layout 2,
    ``products.layout``) and runs when ``table`` has every one of ``columns``;
    ``fallback`` computes the same values from the raw columns and runs otherwise
    (product files written before layout 2)."""

    table: str
    columns: tuple[str, ...]
    sql: str
    fallback: str


Statement = str | StoredColumnsSQL


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> frozenset[str]:
    """Return the column names of ``table`` in the open product file."""
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [table]
    ).fetchall()
    return frozenset(str(r[0]) for r in rows)


def choose_sql(statement: Statement, columns: frozenset[str]) -> str:
    """Return the SQL of ``statement`` that the file with ``columns`` can run."""
    if isinstance(statement, str):
        return statement
    if all(c in columns for c in statement.columns):
        return statement.sql
    return statement.fallback


@dataclass(frozen=True)
class EngineLimits:
    """Per-query resource limits of the isolated engine."""

    timeout_s: float = 30.0
    memory_limit: str = "1GB"
    threads: int = 2

    def __post_init__(self) -> None:
        if not (isinstance(self.timeout_s, int | float) and 0 < self.timeout_s <= 3600):
            raise ValueError("timeout_s must be in (0, 3600]")
        if not _MEMORY.match(self.memory_limit):
            raise ValueError("memory_limit must look like '512MB' or '2GB'")
        if not (isinstance(self.threads, int) and 1 <= self.threads <= 256):
            raise ValueError("threads must be an integer in [1, 256]")


def timed_out(limit_s: float, step: str = "the query") -> QueryTimeout:
    """The refusal of a query stopped at the time limit: 503 ``unavailable`` (DESIGN §5:
    a time limit of the platform; nothing was released), with ``retry_after``."""
    return QueryTimeout(
        f"{step} ran longer than the limit of {limit_s:g} s and was stopped; nothing was "
        "released or charged; try again later, or narrow the query (WHERE, fewer groups or "
        "aggregates)",
        {"rule": "timeout", "limit_s": limit_s, "retry_after": max(1, math.ceil(limit_s))},
    )


@dataclass(frozen=True)
class Deadline:
    """When a query's whole engine work (SQL and release) must be done, on this
    process's monotonic clock: ``timeout_s`` after the job started."""

    at: float
    limit_s: float

    @classmethod
    def start(cls, limits: EngineLimits) -> Deadline:
        return cls(time.monotonic() + limits.timeout_s, limits.timeout_s)

    def check(self) -> None:
        """Raise ``QueryTimeout`` if the deadline has passed."""
        if time.monotonic() > self.at:
            raise timed_out(self.limit_s, "the query's release (noise)")


Finish = Callable[[list[Row], Deadline], _T]


def connection_config(limits: EngineLimits) -> dict[str, Any]:
    """Return the DuckDB settings applied at connect time (lock_configuration is set
    afterwards, last)."""
    return {
        "access_mode": "READ_ONLY",
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "allow_unsigned_extensions": False,
        "allow_persistent_secrets": False,
        "memory_limit": limits.memory_limit,
        "threads": limits.threads,
        # No spilling to disk: the memory limit is a hard limit.
        "temp_directory": "",
    }


# Set after connecting (DuckDB refuses them as connect-time options), before the lock:
# a worker must never print DuckDB's progress bar into the server's log.
_SESSION_SETTINGS = ("SET enable_progress_bar = false", "SET enable_progress_bar_print = false")


def open_readonly(db_path: Path, limits: EngineLimits) -> duckdb.DuckDBPyConnection:
    """Open ``db_path`` read-only with the sandbox settings, configuration locked.

    Raises ``QueryFailed`` if the file cannot be opened as a DuckDB database.
    """
    if not Path(db_path).is_file():
        raise QueryFailed("the product's data is not available", {"rule": "data_missing"})
    try:
        con = duckdb.connect(str(db_path), read_only=True, config=connection_config(limits))
    except duckdb.Error as exc:
        raise QueryFailed(
            f"the product's data could not be opened ({type(exc).__name__})",
            {"rule": "data_unreadable"},
        ) from None
    for setting in _SESSION_SETTINGS:
        con.execute(setting)
    # Last: from here on no statement can change any setting above.
    con.execute("SET lock_configuration = true")
    return con


def run_query(con: duckdb.DuckDBPyConnection, sql: str, timeout_s: float) -> list[Row]:
    """Run ``sql`` on ``con`` and return all rows; a timer interrupts it after
    ``timeout_s``. Raises ``QueryTimeout`` (503, the time limit) and ``QueryFailed``
    (413: memory limit, any DuckDB error — reported by kind only, since a DuckDB
    message may quote data)."""
    timer = threading.Timer(timeout_s, con.interrupt)
    timer.daemon = True
    timer.start()
    try:
        return list(con.execute(sql).fetchall())
    except duckdb.InterruptException:
        raise timed_out(timeout_s) from None
    except duckdb.OutOfMemoryException:
        raise QueryFailed(
            "the query needed more memory than the sandbox allows and was stopped; "
            "narrow it (WHERE, fewer groups or aggregates)",
            {"rule": "memory_limit"},
        ) from None
    except duckdb.Error as exc:
        raise QueryFailed(
            f"the engine could not run the query ({type(exc).__name__})",
            {"rule": "engine_error", "kind": type(exc).__name__},
        ) from None
    finally:
        timer.cancel()


class QueryRunner(Protocol):
    """Runs planner SQL against a product file in isolation."""

    def run(self, db_path: Path, sql: Statement, limits: EngineLimits) -> list[Row]: ...

    def run_and_finish(
        self,
        db_path: Path,
        sql: Statement,
        limits: EngineLimits,
        finish: Finish[_T],
        *,
        tenant: str | None = None,
    ) -> _T:
        """Run ``sql``, then ``finish(rows, deadline)`` where the query ran, within one
        time limit: ``limits.timeout_s`` for both, the deadline passed to ``finish``
        (which checks it between steps) and, in a worker, a hard stop after the grace
        period. Returns what ``finish`` returns; the rows never leave the runner.
        ``tenant`` (the calling enterprise) keeps one caller within its fair share of a
        pool's workers; a runner without a pool ignores it."""
        ...

    def close(self) -> None: ...


class UnsafeInProcessRunner:
    """Runs queries in the calling process: same DuckDB settings, a fresh connection per
    query, but a DuckDB crash would take the process down, and ``finish`` runs in the
    calling thread (its deadline is only checked between steps). Tests and comparisons
    only."""

    def run(self, db_path: Path, sql: Statement, limits: EngineLimits) -> list[Row]:
        con = open_readonly(db_path, limits)
        try:
            if isinstance(sql, StoredColumnsSQL):
                sql = choose_sql(sql, table_columns(con, sql.table))
            return run_query(con, sql, limits.timeout_s)
        finally:
            con.close()

    def run_and_finish(
        self,
        db_path: Path,
        sql: Statement,
        limits: EngineLimits,
        finish: Finish[_T],
        *,
        tenant: str | None = None,
    ) -> _T:
        deadline = Deadline.start(limits)
        return finish(self.run(db_path, sql, limits), deadline)

    def close(self) -> None:
        return None


# --- worker processes --------------------------------------------------------------


class _Connections:
    """A worker's small LRU of open, locked, read-only connections."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.items: OrderedDict[tuple[Any, ...], duckdb.DuckDBPyConnection] = OrderedDict()
        self.columns: dict[tuple[int, str], frozenset[str]] = {}

    def get(self, db_path: Path, limits: EngineLimits) -> duckdb.DuckDBPyConnection:
        try:
            st = os.stat(db_path)
        except OSError:
            raise QueryFailed(
                "the product's data is not available", {"rule": "data_missing"}
            ) from None
        # The timeout is not a connection setting; memory and threads are. DuckDB refuses
        # a second connection to one file with different settings in one process, so a
        # change of limits (or of file) closes the old connection first.
        key = (
            str(db_path),
            st.st_dev,
            st.st_ino,
            st.st_mtime_ns,
            st.st_size,
            limits.memory_limit,
            limits.threads,
        )
        con = self.items.pop(key, None)
        if con is None:
            self.drop(db_path)
            con = open_readonly(db_path, limits)
        self.items[key] = con
        while len(self.items) > self.size:
            _, old = self.items.popitem(last=False)
            self._close(old)
        return con

    def columns_of(self, con: duckdb.DuckDBPyConnection, table: str) -> frozenset[str]:
        key = (id(con), table)
        found = self.columns.get(key)
        if found is None:
            found = self.columns[key] = table_columns(con, table)
        return found

    def _close(self, con: duckdb.DuckDBPyConnection) -> None:
        for key in [k for k in self.columns if k[0] == id(con)]:
            del self.columns[key]
        con.close()

    def close(self) -> None:
        while self.items:
            self._close(self.items.popitem()[1])

    def drop(self, db_path: Path) -> None:
        for key in [k for k in self.items if k[0] == str(db_path)]:
            self._close(self.items.pop(key))


def _worker_main(conn: multiprocessing.connection.Connection) -> None:
    """Worker loop: receive (db_path, sql, limits, finish or None), answer ("ok", rows
    or what ``finish`` returned) or ("error", a DomainError); exit on None or a closed
    pipe.

    ``finish`` (e.g. the release step: noise and post-processing) arrives pickled by
    reference, so the worker imports its module on first use; until then a worker
    imports only DuckDB.
    """
    connections = _Connections()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        except Exception:  # a job that cannot be unpickled here
            reply: tuple[Any, ...] = (
                "error",
                QueryFailed("the engine could not read the job", {"rule": "engine"}),
            )
        else:
            if job is None:
                connections.close()
                return
            reply = _work(connections, *job)
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return


def _work(
    connections: _Connections,
    db_path: str,
    sql: Statement,
    limits: EngineLimits,
    finish: Finish[Any] | None,
) -> tuple[Any, ...]:
    deadline = Deadline.start(limits)
    try:
        con = connections.get(Path(db_path), limits)
        if isinstance(sql, StoredColumnsSQL):
            sql = choose_sql(sql, connections.columns_of(con, sql.table))
        try:
            rows = run_query(con, sql, limits.timeout_s)
        except DomainError:
            connections.drop(Path(db_path))  # never reuse an interrupted connection
            raise
        return ("ok", rows if finish is None else finish(rows, deadline))
    except DomainError as exc:
        return ("error", exc)
    except Exception as exc:  # report, never die on a Python-level error
        failed = QueryFailed(f"the engine failed ({type(exc).__name__})", {"rule": "engine"})
        return ("error", failed)


class _Worker:
    def __init__(self, ctx: Any) -> None:
        parent, child = ctx.Pipe(duplex=True)
        self.conn: multiprocessing.connection.Connection = parent
        self.process = ctx.Process(
            target=_worker_main, args=(child,), name="sandbox-engine-worker", daemon=True
        )
        self.process.start()
        child.close()

    @property
    def pid(self) -> int | None:
        return int(self.process.pid) if self.process.pid is not None else None

    def alive(self) -> bool:
        return bool(self.process.is_alive())

    def resident_bytes(self) -> int:
        """The worker's resident memory (Linux /proc; 0 where it cannot be read)."""
        try:
            with open(f"/proc/{self.process.pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * _PAGE_SIZE
        except (OSError, ValueError, IndexError):
            return 0

    def stop(self, *, kill: bool) -> None:
        try:
            if kill:
                self.process.kill()
            else:
                try:
                    self.conn.send(None)
                except (OSError, ValueError):
                    self.process.kill()
            self.process.join(timeout=5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(timeout=5)
        finally:
            self.conn.close()


class WorkerPool:
    """A fixed number of spawned worker processes, started on first use, each running
    one query at a time; a worker that dies or hangs is killed and replaced.

    Thread-safe: concurrent ``run`` calls wait for a free worker (at most
    ``wait_s``). After a fork (e.g. gunicorn), the child builds its own workers.

    Fair share: a ``run`` that names its ``tenant`` (e.g. the enterprise) waits while
    that tenant already holds ``size - 1`` workers, so one caller's long queries can
    never occupy every worker and another caller's query always finds one (CPU is
    then shared between the running workers by the OS scheduler).
    """

    def __init__(
        self,
        size: int = 2,
        *,
        grace_s: float = 5.0,
        wait_s: float = 60.0,
        memory_headroom: int = MEMORY_HEADROOM_BYTES,
    ) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.size = size
        self.grace_s = grace_s
        self.wait_s = wait_s
        self.memory_headroom = memory_headroom
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._tenant_changed = threading.Condition(self._lock)
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._slots: queue.Queue[_Worker | None] = queue.Queue()
        self._all: list[_Worker] = []
        self._closed = False
        self._tenants: dict[str, int] = {}
        for _ in range(self.size):
            self._slots.put(None)

    def _acquire(self) -> _Worker:
        with self._lock:
            if self._pid != os.getpid():
                self._reset()  # forked: the parent's workers are not ours
            if self._closed:
                raise QueryFailed("the engine is shut down", {"rule": "closed"})
        try:
            worker = self._slots.get(timeout=self.wait_s)
        except queue.Empty:
            raise Unavailable(
                "the engine is busy; try again shortly",
                {"rule": "busy", "retry_after": BUSY_RETRY_AFTER_S},
            ) from None
        if worker is not None and worker.alive():
            return worker
        if worker is not None:
            self._forget(worker, kill=True)
        try:
            fresh = _Worker(self._ctx)
        except Exception:
            self._slots.put(None)
            raise QueryFailed("the engine could not start a worker", {"rule": "engine"}) from None
        with self._lock:
            self._all.append(fresh)
        return fresh

    def _forget(self, worker: _Worker, *, kill: bool) -> None:
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
        worker.stop(kill=kill)

    def _admit(self, tenant: str | None) -> None:
        if tenant is None or self.size < 2:
            return
        deadline = time.monotonic() + self.wait_s
        with self._tenant_changed:
            while self._tenants.get(tenant, 0) >= self.size - 1:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable(
                        "the engine is busy with this caller's other queries; try again shortly",
                        {"rule": "busy", "retry_after": BUSY_RETRY_AFTER_S},
                    )
                self._tenant_changed.wait(left)
            self._tenants[tenant] = self._tenants.get(tenant, 0) + 1

    def _leave(self, tenant: str | None) -> None:
        if tenant is None or self.size < 2:
            return
        with self._tenant_changed:
            left = self._tenants.get(tenant, 0) - 1
            if left > 0:
                self._tenants[tenant] = left
            else:
                self._tenants.pop(tenant, None)
            self._tenant_changed.notify_all()

    def run(
        self, db_path: Path, sql: Statement, limits: EngineLimits, *, tenant: str | None = None
    ) -> list[Row]:
        """Run ``sql`` in a worker and return its rows; with ``tenant``, within that
        tenant's share of the workers (see the class). Raises ``QueryTimeout`` (503) at
        the time limit, ``QueryFailed`` (413) on memory limit, engine error or a worker
        that died, and ``Unavailable`` (503) when no worker frees up within ``wait_s``."""
        rows: list[Row] = list(self._job(db_path, sql, limits, None, tenant))
        return rows

    def run_and_finish(
        self,
        db_path: Path,
        sql: Statement,
        limits: EngineLimits,
        finish: Finish[_T],
        *,
        tenant: str | None = None,
    ) -> _T:
        """Run ``sql`` and then ``finish(rows, deadline)`` in a worker (``finish`` must
        pickle: a module-level function or a ``functools.partial`` of one); the worker
        is killed if both together outlive ``timeout_s`` plus the grace period. Raises
        what ``finish`` raises (domain errors), and what ``run`` raises."""
        result: _T = self._job(db_path, sql, limits, finish, tenant)
        return result

    def _job(
        self,
        db_path: Path,
        sql: Statement,
        limits: EngineLimits,
        finish: Finish[Any] | None,
        tenant: str | None,
    ) -> Any:
        self._admit(tenant)
        try:
            return self._send(db_path, sql, limits, finish)
        finally:
            self._leave(tenant)

    def _send(
        self, db_path: Path, sql: Statement, limits: EngineLimits, finish: Finish[Any] | None
    ) -> Any:
        worker = self._acquire()
        healthy = False
        try:
            try:
                # The job is held to what it adds: a worker keeps the connections (and
                # DuckDB buffer pools) of files it read for earlier jobs, which are not
                # this job's to pay for.
                before = worker.resident_bytes()
                worker.conn.send((str(db_path), sql, limits, finish))
                reply = self._await_reply(worker, limits, before)
            except (EOFError, OSError, ValueError):
                raise QueryFailed(
                    "the engine stopped while running the query (it was restarted); "
                    "narrow the query or try again",
                    {"rule": "worker_died"},
                ) from None
            healthy = True
        finally:
            if healthy:
                self._slots.put(worker)
            else:
                self._forget(worker, kill=True)
                self._slots.put(None)
        if reply[0] == "ok":
            return reply[1]
        error = reply[1]
        if not isinstance(error, DomainError):  # pragma: no cover - a worker bug
            raise QueryFailed("the engine failed", {"rule": "engine"})
        raise error

    def _await_reply(self, worker: _Worker, limits: EngineLimits, before: int) -> Any:
        """The worker's reply, watching the job's time and the worker's memory: DuckDB
        keeps to ``memory_limit`` by itself, but a release step's Python objects (noise,
        a synthetic-data fit) do not, so the job may grow the process by at most the
        limit plus ``memory_headroom`` over its resident memory ``before`` the job, and
        is killed beyond it (DESIGN invariant 9)."""
        deadline = time.monotonic() + limits.timeout_s + self.grace_s
        cap = before + parse_size(limits.memory_limit) + self.memory_headroom
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise timed_out(limits.timeout_s)
            if worker.conn.poll(min(left, MEMORY_CHECK_S)):
                return worker.conn.recv()
            if worker.resident_bytes() > cap:
                raise QueryFailed(
                    "the query needed more memory than the sandbox allows and was stopped; "
                    "narrow it (fewer rows, columns, groups or aggregates)",
                    {"rule": "memory_limit"},
                )

    def worker_pids(self) -> list[int]:
        """Return the process ids of the live workers (for monitoring and tests)."""
        with self._lock:
            return [w.pid for w in self._all if w.pid is not None and w.alive()]

    def close(self) -> None:
        """Stop every worker; later ``run`` calls fail with ``QueryFailed``."""
        with self._lock:
            if self._pid != os.getpid():
                return
            self._closed = True
            workers, self._all = self._all, []
        for worker in workers:
            worker.stop(kill=False)


_default: WorkerPool | None = None
_default_lock = threading.Lock()


def default_runner() -> WorkerPool:
    """Return the process-wide worker pool (created on first use, stopped at exit)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = WorkerPool()
            atexit.register(_default.close)
        return _default
