"""The isolation layer on its own: even SQL that bypassed the planner cannot read
files, load extensions, change settings or write; slow queries are interrupted; a
dead or hung worker is replaced and the next query works."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from sandbox.engine.isolation import (
    EngineLimits,
    UnsafeInProcessRunner,
    WorkerPool,
    connection_config,
    open_readonly,
    run_query,
)
from sandbox.errors import QueryFailed, QueryTimeout

BYPASS = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    "COPY pums TO '/tmp/sandbox-leak.csv'",
    "EXPORT DATABASE '/tmp/sandbox-leak'",
    "ATTACH '/tmp/sandbox-other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "LOAD '/tmp/evil.duckdb_extension'",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "SET memory_limit = '100GB'",
    "SET threads = 64",
    "RESET threads",
    "SET temp_directory = '/tmp'",
    "SET enable_progress_bar = true",
    "CREATE TABLE leak AS SELECT * FROM pums",
    "INSERT INTO pums SELECT * FROM pums",
    "DELETE FROM pums",
    "UPDATE pums SET income = 0",
    "DROP TABLE pums",
    "SELECT * FROM duckdb_extensions()",
]


@pytest.mark.parametrize("sql", BYPASS)
def test_connection_refuses_when_planner_is_bypassed(
    sql: str, pums_db: Path, limits: EngineLimits
) -> None:
    with pytest.raises(QueryFailed) as info:
        UnsafeInProcessRunner().run(pums_db, sql, limits)
    # DuckDB's own message may quote data or paths: only its kind is reported.
    assert "/etc" not in info.value.message and "/tmp" not in info.value.message


def test_settings_stay_locked_and_file_unchanged(pums_db: Path, limits: EngineLimits) -> None:
    before = pums_db.stat().st_mtime_ns, pums_db.stat().st_size
    con = open_readonly(pums_db, limits)
    try:
        for sql in BYPASS:
            with pytest.raises(QueryFailed):
                run_query(con, sql, limits.timeout_s)
        rows = run_query(
            con,
            "SELECT current_setting('enable_external_access'), "
            "current_setting('lock_configuration'), current_setting('access_mode'), "
            "current_setting('threads'), current_setting('autoload_known_extensions'), "
            "current_setting('allow_community_extensions'), "
            "current_setting('enable_progress_bar'), current_setting('enable_progress_bar_print')",
            limits.timeout_s,
        )
        # no progress bar: a worker must never print into the server's log
        assert rows == [(False, True, "read_only", limits.threads, False, False, False, False)]
        assert run_query(con, "SELECT count(*) FROM pums", limits.timeout_s)[0][0] > 0
    finally:
        con.close()
    assert (pums_db.stat().st_mtime_ns, pums_db.stat().st_size) == before


def test_config_is_the_documented_one() -> None:
    cfg = connection_config(EngineLimits(memory_limit="256MB", threads=3))
    assert cfg["enable_external_access"] is False
    assert cfg["autoinstall_known_extensions"] is False
    assert cfg["autoload_known_extensions"] is False
    assert cfg["allow_community_extensions"] is False
    assert cfg["allow_unsigned_extensions"] is False
    assert cfg["memory_limit"] == "256MB" and cfg["threads"] == 3
    assert "lock_configuration" not in cfg  # set last, after connecting


@pytest.mark.parametrize(
    "kwargs",
    [{"timeout_s": 0}, {"timeout_s": -1}, {"memory_limit": "lots"}, {"threads": 0}],
)
def test_limits_are_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        EngineLimits(**kwargs)  # type: ignore[arg-type]


SLOW = "SELECT count(*) FROM range(100000000000) a WHERE a.range % 7 = 3"


def test_timeout_interrupts_in_process(pums_db: Path) -> None:
    runner = UnsafeInProcessRunner()
    started = time.monotonic()
    with pytest.raises(QueryTimeout) as info:
        runner.run(pums_db, SLOW, EngineLimits(timeout_s=0.5, threads=1))
    assert time.monotonic() - started < 10
    # A time limit of the platform: 503 unavailable with Retry-After (DESIGN §5), not 413.
    assert info.value.code == "unavailable"
    assert info.value.details == {"rule": "timeout", "limit_s": 0.5, "retry_after": 1}
    assert "0.5 s" in info.value.message
    assert runner.run(pums_db, "SELECT count(*) FROM pums", EngineLimits())[0][0] > 0


def test_timeout_interrupts_in_worker_and_pool_recovers(pums_db: Path) -> None:
    pool = WorkerPool(size=1, grace_s=5.0)
    try:
        with pytest.raises(QueryTimeout) as info:
            pool.run(pums_db, SLOW, EngineLimits(timeout_s=0.5, threads=1))
        assert info.value.details["rule"] == "timeout" and info.value.code == "unavailable"
        rows = pool.run(pums_db, "SELECT count(*) FROM pums", EngineLimits(threads=1))
        assert rows[0][0] > 0
    finally:
        pool.close()


def test_memory_limit_stops_query(pums_db: Path) -> None:
    limits = EngineLimits(timeout_s=30, memory_limit="64MB", threads=1)
    with pytest.raises(QueryFailed) as info:
        UnsafeInProcessRunner().run(pums_db, "SELECT list(range) FROM range(200000000)", limits)
    assert info.value.details["rule"] in ("memory_limit", "engine_error")


def test_dead_worker_is_replaced(pums_db: Path) -> None:
    pool = WorkerPool(size=1, grace_s=5.0)
    try:
        pool.run(pums_db, "SELECT 1", EngineLimits(threads=1))
        [pid] = pool.worker_pids()
        killer = threading.Timer(0.5, os.kill, args=(pid, signal.SIGKILL))
        killer.start()
        with pytest.raises(QueryFailed) as info:
            pool.run(pums_db, SLOW, EngineLimits(timeout_s=20, threads=1))
        killer.join()
        assert info.value.details["rule"] == "worker_died"
        assert pool.run(pums_db, "SELECT count(*) FROM pums", EngineLimits(threads=1))[0][0] > 0
        assert pool.worker_pids() and pool.worker_pids() != [pid]
    finally:
        pool.close()


def test_hung_worker_is_killed_after_grace(pums_db: Path) -> None:
    pool = WorkerPool(size=1, grace_s=0.5)
    try:
        pool.run(pums_db, "SELECT 1", EngineLimits(threads=1))
        [pid] = pool.worker_pids()
        os.kill(pid, signal.SIGSTOP)  # a worker that never answers
        started = time.monotonic()
        with pytest.raises(QueryTimeout) as info:
            pool.run(pums_db, "SELECT 1", EngineLimits(timeout_s=0.5, threads=1))
        assert info.value.details["rule"] == "timeout"
        assert info.value.details["retry_after"] == 1
        assert time.monotonic() - started < 10
        assert pool.run(pums_db, "SELECT 2", EngineLimits(threads=1)) == [(2,)]
        assert pid not in pool.worker_pids()
    finally:
        pool.close()


def test_concurrent_queries_share_the_pool(pums_db: Path, pool: WorkerPool) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            results.append(pool.run(pums_db, "SELECT count(*) FROM pums", EngineLimits())[0][0])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 8 and len(set(results)) == 1


def test_missing_or_bad_file(tmp_path: Path, pool: WorkerPool) -> None:
    with pytest.raises(QueryFailed):
        pool.run(tmp_path / "absent.duckdb", "SELECT 1", EngineLimits())
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(QueryFailed):
        UnsafeInProcessRunner().run(junk, "SELECT 1", EngineLimits())


def test_closed_pool_refuses(pums_db: Path) -> None:
    pool = WorkerPool(size=1)
    pool.close()
    with pytest.raises(QueryFailed):
        pool.run(pums_db, "SELECT 1", EngineLimits())


def test_one_tenant_never_holds_every_worker(pums_db: Path) -> None:
    """Fair share: while tenant A's long query holds one of two workers, A's next query
    waits for it, and tenant B's query gets the other worker and answers first."""
    pool = WorkerPool(size=2)
    limits = EngineLimits(timeout_s=60, memory_limit="256MB", threads=1)
    slow = "SELECT count(*) FROM range(200000000) t(i) WHERE i % 7 = 3"
    finished: list[str] = []
    lock = threading.Lock()

    def run(name: str, sql: str, tenant: str) -> None:
        pool.run(pums_db, sql, limits, tenant=tenant)
        with lock:
            finished.append(name)

    try:
        pool.run(pums_db, "SELECT 1", limits)  # start the workers
        a1 = threading.Thread(target=run, args=("a1", slow, "A"))
        a1.start()
        while pool._tenants.get("A") != 1:
            time.sleep(0.01)
        a2 = threading.Thread(target=run, args=("a2", "SELECT 2", "A"))
        a2.start()
        run("b", "SELECT count(*) FROM pums", "B")
        with lock:
            assert finished == ["b"], "B must not wait behind A's queries"
        a1.join()
        a2.join()
        assert finished == ["b", "a1", "a2"]
        assert pool._tenants == {}
    finally:
        pool.close()
