"""Invariants that only real server processes can show: replay across processes sharing
PostgreSQL, and audit durability when the server is killed with SIGKILL under load."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from audit.verify import verify_bundle
from policies.calls import sign_call
from policies.principals import Role, generate_keypair, parse_key
from sandbox.client import ApiError, Client
from sandbox.runtime import Runtime
from sandbox.settings import Settings
from tests.sandbox.servers import running, start_server


def bootstrap(settings: Settings) -> tuple[bytes, str]:
    """Create the stores and an enterprise principal; return its private key and kid."""
    rt = Runtime.open(settings)
    private, public = generate_keypair()
    key = parse_key({"public_key": public.decode()})
    rt.principals.add("ent-acme", Role.ENTERPRISE, "ACME", [key], created_by=None)
    rt.close()
    return private, key.kid


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
            assert entry["index"] == index and entry["actor"] == "ent-acme"
        bundle = tmp_path / "after-crash.jsonl"
        with bundle.open("wb") as f:
            rt.audit.export(f, keys=[dict(k) for k in rt.keys.jwks()["keys"]])
    finally:
        rt.close()
    report = verify_bundle(bundle)
    assert report.ok and report.entries == size, report.summary()
