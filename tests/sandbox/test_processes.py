"""Invariants that only real server processes can show: replay across processes sharing
PostgreSQL, and audit durability when the server is killed with SIGKILL under load."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from audit.verify import verify_bundle
from policies.calls import sign_call
from policies.principals import Role, generate_keypair
from sandbox.client import ApiError, Client
from sandbox.runtime import Runtime
from sandbox.settings import Settings
from tests.sandbox.conftest import add_principal, local
from tests.sandbox.servers import running, start_server


def bootstrap(settings: Settings) -> tuple[bytes, str]:
    """Create the stores and an enterprise principal; return its private key and kid."""
    rt = Runtime.open(settings)
    private, public = generate_keypair()
    kid = add_principal(rt, "ent-acme", Role.ENTERPRISE, public)
    rt.close()
    return private, kid


def test_a_call_replayed_to_a_second_process_is_refused(tmp_path: Path, pg_url: str) -> None:
    settings = Settings(data_dir=tmp_path / "var", database_url=pg_url)
    private, kid = bootstrap(settings)
    token = sign_call(
        private,
        issuer="ent-acme",
        kid=kid,
        audience=settings.audience,
        method="GET",
        path_and_query="/v1/products",
    )
    with (
        running(settings.data_dir, pg_url, workers=1) as a,
        running(settings.data_dir, pg_url, workers=1) as b,
    ):
        import urllib.error
        import urllib.request

        def send(url: str) -> int:
            req = urllib.request.Request(
                url + "/v1/products", headers={"Authorization": f"Bearer {token}"}
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return int(r.status)
            except urllib.error.HTTPError as e:
                assert b'"replayed"' in e.read()
                return int(e.code)

        assert send(a.url) == 200
        assert send(b.url) == 401


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_acknowledged_entries_survive_kill_9_under_load(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if store == "postgresql" else None
    settings = Settings(data_dir=tmp_path / "var", database_url=url)
    private, kid = bootstrap(settings)
    server = start_server(settings.data_dir, url, workers=2, threads=8)
    seen: list[int] = []
    lock = threading.Lock()
    enough = threading.Event()

    def load() -> None:
        client = Client(server.url, "ent-acme", private, kid, timeout=5)
        while True:
            try:
                answer = client.get("/v1/products")
                index = answer.audit_index
            except ApiError as exc:
                index = exc.audit_index
            except OSError:
                client.close()
                return  # the server is gone
            assert index is not None
            with lock:
                seen.append(index)
                if len(seen) >= 300:
                    enough.set()

    threads = [threading.Thread(target=load) for _ in range(12)]
    for t in threads:
        t.start()
    try:
        assert enough.wait(60), "the server did not answer enough calls"
    finally:
        server.kill9()
        for t in threads:
            t.join(timeout=30)

    rt = Runtime.open(settings)
    try:
        size = rt.audit.size()
        assert len(set(seen)) == len(seen), "an index was given to two calls"
        assert max(seen) < size, "an acknowledged entry was lost"
        for index in seen:
            entry = rt.audit.entries(cursor=index, limit=1).entries[0].entry
            assert entry["index"] == index and entry["actor"] in ("ent-acme", "platform")
        rt.audit.checkpoint()
        bundle = tmp_path / "after-crash.jsonl"
        with bundle.open("wb") as f:
            rt.audit.export(f, keys=[dict(k) for k in rt.keys.jwks()["keys"]])
    finally:
        rt.close()
    report = verify_bundle(bundle)
    assert report.ok and report.entries == size, report.summary()


def test_parallel_queries_through_two_servers_never_overdraw(tmp_path: Path, pg_url: str) -> None:
    """N parallel distinct queries, split over two server processes sharing PostgreSQL,
    against a budget for K < N: exactly K are answered, N - K get budget_exhausted."""
    from tests.sandbox.conftest import REGISTRY_MANIFEST, REGISTRY_ROWS

    n, k = 12, 5
    settings = Settings(data_dir=tmp_path / "var", database_url=pg_url)
    private, kid = bootstrap(settings)
    rt = Runtime.open(settings)
    try:
        from policies.scopes import GrantSchema
        from products.loader import DataFormat
        from products.manifest import parse_manifest
        from products.parsing import parse
        from sandbox.actions import products, scopes

        local(rt, products.register(rt, parse_manifest(REGISTRY_MANIFEST), "op"))
        rows = tmp_path / "rows.csv"
        rows.write_text(REGISTRY_ROWS)
        local(rt, products.upload(rt, "op", "enterprise_registry", rows, DataFormat.CSV).pending)
        grant = {
            "id": "sc",
            "enterprise": "ent-acme",
            "product": "enterprise_registry",
            "purpose": "concurrency test",
            "operations": {"aggregate": {"columns": ["registered_capital"]}},
            "epsilon": k,
            "max_epsilon_per_query": 1,
            "rate_per_minute": 1000,
            "daily_quota": 1000,
            "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": "2099-01-01T00:00:00Z",
        }
        local(rt, scopes.grant(rt, parse(GrantSchema, grant, "scope"), "op"))
    finally:
        rt.close()
    outcomes: list[str] = []
    lock = threading.Lock()
    with (
        running(settings.data_dir, pg_url, workers=1) as a,
        running(settings.data_dir, pg_url, workers=1) as b,
    ):
        barrier = threading.Barrier(n)

        def one(i: int) -> None:
            client = Client((a, b)[i % 2].url, "ent-acme", private, kid)
            sql = f"SELECT COUNT(*) FROM enterprise_registry WHERE registered_capital > {i}"
            barrier.wait()
            try:
                client.query("sc", sql, 1)
                result = "ok"
            except ApiError as exc:
                result = exc.code
            finally:
                client.close()
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert sorted(outcomes) == sorted(["ok"] * k + ["budget_exhausted"] * (n - k)), outcomes
    rt = Runtime.open(settings)
    try:
        assert rt.scopes.get("sc").budget.spent == k
        assert len(rt.ledger.charges("sc")) == k
    finally:
        rt.close()


def test_a_frozen_node_does_not_stop_the_others(tmp_path: Path, pg_url: str) -> None:
    """DESIGN §2.9: a node frozen (SIGSTOP) for 10 s inside a write transaction (so
    holding the audit log's head lock) does not stop another node sharing PostgreSQL:
    its idle transaction is ended after ``store_idle_transaction_timeout_s`` and the
    other node keeps at least half of its throughput through the freeze."""
    import os
    import signal
    import time

    import sqlalchemy as sa

    settings = Settings(data_dir=tmp_path / "var", database_url=pg_url)
    private, kid = bootstrap(settings)
    answered: dict[str, list[float]] = {"a": [], "b": []}
    stop = threading.Event()
    lock = threading.Lock()

    def load(name: str, url: str) -> None:
        client = Client(url, "ent-acme", private, kid, timeout=3)
        while not stop.is_set():
            try:
                client.get("/v1/products")
            except (ApiError, OSError):
                time.sleep(0.05)
                client.close()
                client = Client(url, "ent-acme", private, kid, timeout=3)
                continue
            with lock:
                answered[name].append(time.monotonic())
        client.close()

    def rate(name: str, start: float, end: float) -> float:
        with lock:
            return sum(start <= t < end for t in answered[name]) / (end - start)

    def writing(conn: sa.Connection) -> bool:
        # Node a's connection sits inside a transaction that has locked or written rows
        # (an xid): the audit append, whose first statement locks the head row.
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'node-a' "
                    "AND state = 'idle in transaction' AND backend_xid IS NOT NULL"
                )
            ).scalar()
        )

    watcher = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with (
        running(settings.data_dir, pg_url + "&application_name=node-a", workers=1, threads=4) as a,
        running(settings.data_dir, pg_url, workers=1, threads=4) as b,
        watcher.connect() as conn,
    ):
        threads = [
            threading.Thread(target=load, args=(name, server.url))
            for name, server in (("a", a), ("b", b))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)  # warm up
            t0 = time.monotonic()
            time.sleep(4.0)
            # Stop node a until it is caught inside its audit append.
            for _ in range(2000):
                os.killpg(a.proc.pid, signal.SIGSTOP)
                if writing(conn):
                    break
                os.killpg(a.proc.pid, signal.SIGCONT)
                time.sleep(0.001)
            else:
                pytest.fail("node a was never caught inside a write transaction")
            t1 = time.monotonic()
            try:
                time.sleep(10.0)
            finally:
                t2 = time.monotonic()
                os.killpg(a.proc.pid, signal.SIGCONT)
            before, during = rate("b", t0, t1), rate("b", t1, t2)
            frozen = rate("a", t1 + 1, t2)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
    watcher.dispose()
    assert before > 5, f"node b answered {before:.1f}/s before the freeze"
    assert frozen == 0, "node a kept answering while stopped"
    assert during >= 0.5 * before, f"node b: {before:.1f}/s before, {during:.1f}/s during"
