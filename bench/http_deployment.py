"""A real deployment for the benchmarks of the signed HTTP call (DESIGN §10).

Used by ``bench/dp_query.py --http`` and ``bench/scale.py --http``; parameterised by
the product's manifest (a dict, as parsed from YAML), the Parquet source of its rows
and the columns the scope grants ``aggregate`` on.

- ``deploy`` sets up (idempotently) a deployment in a data directory through the
  project's actions, as ``sandbox init``, ``principals add``, ``products register
  --data`` and ``scopes grant`` would, each call audited: SQLite control plane, an
  operator and an enterprise with Ed25519 keys, the product registered and its rows
  loaded from the Parquet file by the upload action (so the server reads the loader's
  file), and a fresh scope (epsilon 10,000, rate and quota far above a run's);
- ``serving`` runs ``gunicorn -w 1 -k gthread --threads 4`` on
  ``sandbox.app:create_app()`` with the same settings (engine threads, memory limit,
  ``QUERY_WORKERS`` isolated query workers) and yields its base URL;
- ``SignedQueries`` makes signed ``POST /v1/queries`` calls with ``sandbox.client``,
  each asking for a distinct epsilon (an identical request would be answered from its
  stored release without running the engine, DESIGN §8), and checks that every answer
  was charged and carries a verified receipt.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from sandbox.client import Client, Response
    from sandbox.settings import Settings

REPO = Path(__file__).resolve().parents[1]

OPERATOR = "op-bench"
ENTERPRISE = "ent-bench"
SERVER_THREADS = 4  # gunicorn gthread threads of the one worker
QUERY_WORKERS = 2  # the server's isolated query workers (Settings default)
ENGINE_MEMORY = "8GB"  # default DuckDB memory limit of a query (and of the load)
ENGINE_TIMEOUT_S = 600.0


def http_settings(data_dir: Path, threads: int, memory_limit: str = ENGINE_MEMORY) -> Settings:
    """The deployment's settings; the server gets the same through ``http_env``."""
    from sandbox.settings import Settings

    return Settings(
        data_dir=data_dir,
        suite="ed25519-sha256",
        query_threads=threads,
        query_memory_limit=memory_limit,
        query_timeout_s=ENGINE_TIMEOUT_S,
        query_workers=QUERY_WORKERS,
    )


def http_env(data_dir: Path, threads: int, memory_limit: str = ENGINE_MEMORY) -> dict[str, str]:
    return {
        "SANDBOX_DATA_DIR": str(data_dir),
        "SANDBOX_SUITE": "ed25519-sha256",
        "SANDBOX_QUERY_THREADS": str(threads),
        "SANDBOX_QUERY_MEMORY_LIMIT": memory_limit,
        "SANDBOX_QUERY_TIMEOUT_S": str(ENGINE_TIMEOUT_S),
        "SANDBOX_QUERY_WORKERS": str(QUERY_WORKERS),
    }


class Deployed(NamedTuple):
    product_file: Path  # the product's current data file (the loader's)
    scope: str  # the fresh scope's id
    key: bytes  # the enterprise's private key (PEM)
    load_s: float  # the upload action's time; 0 when the product was already loaded


def deploy(
    data_dir: Path,
    manifest: Mapping[str, Any],
    src: Path,
    threads: int,
    columns: Sequence[str],
    *,
    memory_limit: str = ENGINE_MEMORY,
    caller: str = "bench/http_deployment.py",
    purpose: str = "benchmark of the signed HTTP call",
    scope_prefix: str = "sc-bench-",
) -> Deployed:
    """Set up (idempotently) a deployment serving ``manifest``'s product, its rows
    loaded from the Parquet file ``src``, and grant a fresh scope with ``aggregate`` on
    ``columns``. ``caller`` names the local caller in the audit entries."""
    from policies.principals import PrincipalSchema, Role, generate_keypair
    from policies.scopes import GrantSchema
    from products.errors import NotFound
    from products.loader import DataFormat
    from products.manifest import NewManifestSchema
    from products.parsing import parse
    from sandbox.actions import principals, products, scopes
    from sandbox.actions.call import Caller, Outcome, Pending, commit
    from sandbox.runtime import Runtime

    rt = Runtime.open(http_settings(data_dir, threads, memory_limit), create=True)
    try:
        local = Caller.local(caller, rt.suite.digest)

        def call(pending: Pending) -> Outcome:
            outcome = commit(rt, local, pending)
            if outcome.error is not None:
                raise outcome.error
            return outcome

        keys: dict[str, bytes] = {}
        for pid, role in ((OPERATOR, Role.OPERATOR), (ENTERPRISE, Role.ENTERPRISE)):
            key_file = data_dir / "bench-keys" / f"{pid}.key"
            if not key_file.exists():
                private, public = generate_keypair("ed25519")
                key_file.parent.mkdir(parents=True, exist_ok=True)
                (data_dir / "bench-keys" / f"{pid}.pub").write_bytes(public)
                key_file.write_bytes(private)
                key_file.chmod(0o600)
            keys[pid] = key_file.read_bytes()
            if rt.principals.find(pid) is None:
                public_pem = (data_dir / "bench-keys" / f"{pid}.pub").read_text()
                data = {
                    "id": pid,
                    "role": role.value,
                    "name": pid,
                    "keys": [{"public_key": public_pem}],
                }
                request = parse(PrincipalSchema, data, "principal")
                call(principals.register(rt, request, None, roles=tuple(Role)))
        pid = str(manifest["id"])
        try:
            record = rt.catalogue.get(pid)
        except NotFound:
            new = parse(NewManifestSchema, dict(manifest), "product manifest")
            call(products.register(rt, new, OPERATOR))
            record = rt.catalogue.get(pid)
        t_load = 0.0
        if record.current is None:
            started = time.perf_counter()
            up = products.upload(rt, OPERATOR, pid, src, DataFormat.PARQUET)
            try:
                call(up.pending)
            except BaseException:
                up.discard()
                raise
            t_load = time.perf_counter() - started
            record = rt.catalogue.get(pid)
        now = rt.clock()
        grant = {
            "id": f"{scope_prefix}{secrets.token_hex(4)}",
            "enterprise": ENTERPRISE,
            "product": pid,
            "purpose": purpose,
            "operations": {"aggregate": {"columns": list(columns)}},
            "epsilon": 10_000,
            "max_epsilon_per_query": 1,
            "rate_per_minute": 1_000_000,
            "daily_quota": 1_000_000_000,
            "valid_from": (now - timedelta(days=1)).isoformat(),
            "valid_until": (now + timedelta(days=1)).isoformat(),
        }
        outcome = call(scopes.grant(rt, parse(GrantSchema, grant, "scope"), OPERATOR))
        assert outcome.body is not None
        return Deployed(
            rt.catalogue.data_path(record), str(outcome.body["id"]), keys[ENTERPRISE], t_load
        )
    finally:
        rt.close()


@contextmanager
def serving(
    data_dir: Path,
    threads: int,
    *,
    memory_limit: str = ENGINE_MEMORY,
    log_name: str = "gunicorn-bench.log",
) -> Iterator[str]:
    """Run ``gunicorn -w 1 -k gthread`` on the app factory; yield its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, **http_env(data_dir, threads, memory_limit)}
    log = data_dir / log_name
    command = [
        sys.executable, "-m", "gunicorn", "-w", "1", "-k", "gthread",
        "--threads", str(SERVER_THREADS), "--timeout", str(int(ENGINE_TIMEOUT_S) + 60),
        "--keep-alive", "600", "--log-level", "warning", "-b", f"127.0.0.1:{port}",
        "sandbox.app:create_app()",
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/v1/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not become healthy") from None
                time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


class SignedQueries:
    """Signed ``POST /v1/queries`` calls on one scope: ``Client.query`` plus
    ``verify_receipt``, the client's wall time to a verified answer.

    Each call asks for a distinct epsilon (0.5 + i * 1e-6), since an identical request
    is answered from its stored release without running the engine (DESIGN §8); every
    answer must have been charged (not reused) and carry a receipt of its audit entry.
    """

    def __init__(self, client: Client, scope: str) -> None:
        self.client = client
        self.scope = scope
        self.calls = 0

    def __call__(self, sql: str, expected_rows: int) -> Response:
        epsilon = Decimal("0.5") + self.calls * Decimal("0.000001")
        self.calls += 1
        answer = self.client.query(self.scope, sql, str(epsilon))
        claims = self.client.verify_receipt(answer)
        if Decimal(str(answer["epsilon_spent"])) != epsilon:
            raise RuntimeError(f"answer reused or not charged: {answer['epsilon_spent']}")
        if len(answer["rows"]) != expected_rows or claims["audit_index"] != answer.audit_index:
            raise RuntimeError("unexpected answer or receipt")
        return answer
