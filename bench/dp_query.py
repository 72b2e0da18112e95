"""DP GROUP BY through the engine vs the same raw aggregate in DuckDB, side by side.

    python bench/dp_query.py [--rows 1000000 10000000] [--runs 7] [--threads 2]
                             [--dir /tmp/dp-bench] [--smartnoise-python PATH] [--http]

For each size it builds (once, cached in --dir) a product file following the
data-plane contract — units with 2 or 3 rows, ``max_rows_per_unit = 2``, a random
``_unit_rank`` — then alternates, after one warm-up each:

- raw:  ``SELECT g, COUNT(*), SUM(x) FROM bench GROUP BY g`` on a warm read-only DuckDB
        connection with the same thread count;
- dp:   ``execute()`` of the prepared query (contribution bounding, clipping,
        public-key restriction, OpenDP noise) through a worker pool; also timed with
        ``prepare()`` (parse and plan) included, and the rewritten SQL alone.

It reports medians and the ratio dp / raw (DESIGN §10 target: <= 1.3 at 10M rows).

``--layout person`` (the default) is the realistic case: person-level rows with
repeating string ids ('P0000012345', 1-4 rows each, k = 2, so about a fifth of the
rows are dropped by bounding), an integer and a float sensitive column (some float
values beyond the bounds, clipped), loaded by the project's loader
(``products.loader.load_file``) from Parquet; raw is a plain CTAS of the same
Parquet. Queries: integer SUM and AVG, float SUM and AVG, and a WHERE, each
``prepare``+``execute`` through the worker pool against the same SQL in raw DuckDB.
With
``--smartnoise-python`` (a Python with smartnoise-sql installed; it pins an older
OpenDP, so it needs its own virtualenv) the same query also runs through SmartNoise
SQL's pandas reader (bench/dp_smartnoise.py) on the same data.

``--http`` (person layout) measures what DESIGN §10 states the target for: the whole
signed call. It sets up a deployment in ``DIR/http_ROWS`` through the project's actions,
as ``sandbox init``, ``principals add``, ``products register --data`` and ``scopes
grant`` would (SQLite control plane; an operator and an enterprise with Ed25519 keys;
the person-level manifest, its rows loaded from the same Parquet by the upload action,
so the server reads the loader's file; a fresh scope granting ``aggregate`` on g, s, x
and f with epsilon 10,000 and rate and quota far above the run's), starts ``gunicorn
-w 1 -k gthread --threads 4`` on ``sandbox.app:create_app()`` (engine threads =
``--threads``, 2 query workers, 8GB memory limit), and for each query alternates,
after a warm-up of each (two HTTP calls: one per query worker):

- raw:     the aggregate on a warm read-only connection to the plain CTAS, as above;
- HTTP:    ``Client.query`` (``sandbox/client.py``: sign, ``POST /v1/queries``, read)
           plus ``verify_receipt`` — client wall time to a verified answer. Each call
           asks for a distinct epsilon (0.5 + i * 1e-6), since an identical request
           is answered from its stored release without running the engine; the
           script checks every answer was charged (not reused) and carries a receipt;
- engine:  ``prepare`` + ``execute`` through a worker pool in this process, on the
           deployment's own product file (the engine-only figure of the same run);
- preview: a signed ``POST /v1/queries/preview`` of the query (signature, nonce, scope,
           parse and plan, rate counter, audit entry; no engine, charge or receipt).

It reports medians and the ratios HTTP / raw and engine / raw; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from products.manifest import DataProduct, parse_manifest  # noqa: E402
from sandbox.engine import EngineLimits, WorkerPool, execute, prepare  # noqa: E402

GROUPS = 50
MANIFEST: dict[str, Any] = {
    "id": "bench",
    "title": "benchmark",
    "privacy_unit": "unit",
    "max_rows_per_unit": 2,
    "columns": [
        {"name": "unit", "type": "integer", "classification": "identifier"},
        {"name": "g", "type": "string", "classification": "attribute",
         "public_values": [f"d{i:02d}" for i in range(GROUPS)], "nullable": False},
        {"name": "x", "type": "integer", "classification": "sensitive", "bounds": [0, 1000],
         "nullable": False},
    ],
}  # fmt: skip
DP_SQL = "SELECT g, COUNT(*) AS n, SUM(x) AS s FROM bench GROUP BY g"
RAW_SQL = "SELECT g, COUNT(*) AS n, SUM(x) AS s FROM bench GROUP BY g"


def build(path: Path, rows: int, layout: str) -> Path:
    """Write the product file (once): unit = floor(i / 2.5), so units hold 2 or 3 rows.

    ``layout`` "window" stores rows in the order DuckDB's window operator emits them
    (what products/loader.py wrote before it sorted); "rank" stores them ORDER BY
    _unit_rank, so that ``_unit_rank <= k`` selects a prefix and DuckDB's zone maps skip
    the rest; "loader" stores them ORDER BY _unit_rank, unit, as products/loader.py
    writes product files now.
    """
    if path.exists():
        return path
    order = {"window": "", "rank": "ORDER BY _unit_rank", "loader": "ORDER BY _unit_rank, unit"}[
        layout
    ]
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        con.execute(
            f"""
            CREATE TABLE bench AS
            SELECT unit, g, x,
                   (row_number() OVER (PARTITION BY unit ORDER BY hash(i, 42)))::INTEGER
                       AS _unit_rank
            FROM (
                SELECT range AS i,
                       (range * 2 // 5)::BIGINT AS unit,
                       'd' || lpad((hash(range * 3) % {GROUPS})::VARCHAR, 2, '0') AS g,
                       (hash(range) % 1001)::BIGINT AS x
                FROM range({rows})
            )
            {order}
            """
        )
        con.execute("CHECKPOINT")
    finally:
        con.close()
    tmp.rename(path)
    return path


PERSON_MANIFEST: dict[str, Any] = {
    "id": "bench",
    "title": "person-level benchmark",
    "privacy_unit": "person_id",
    "max_rows_per_unit": 2,
    "columns": [
        {"name": "person_id", "type": "string", "classification": "identifier",
         "nullable": False},
        {"name": "g", "type": "string", "classification": "attribute",
         "public_values": [f"d{i:02d}" for i in range(GROUPS)], "nullable": False},
        {"name": "s", "type": "string", "classification": "attribute",
         "public_values": ["a", "b", "c"], "nullable": False},
        {"name": "x", "type": "integer", "classification": "sensitive", "bounds": [0, 1000],
         "nullable": False},
        {"name": "f", "type": "float", "classification": "sensitive", "bounds": [0, 50000],
         "nullable": False},
    ],
}  # fmt: skip
PERSON_QUERIES = {
    "int SUM/AVG": "SELECT g, COUNT(*) AS n, SUM(x) AS s, AVG(x) AS a FROM bench GROUP BY g",
    "float SUM/AVG": "SELECT g, COUNT(*) AS n, SUM(f) AS s, AVG(f) AS a FROM bench GROUP BY g",
    "WHERE": (
        "SELECT g, SUM(f) AS s, AVG(x) AS a FROM bench "
        "WHERE s IN ('a', 'b') AND x >= 100 GROUP BY g"
    ),
}


def build_person(workdir: Path, rows: int, threads: int) -> tuple[Path, Path, float, float]:
    """Write the Parquet source, the loader's product file and a plain CTAS (once)."""
    from products.loader import DataFormat, LoadLimits, load_file

    src = person_source(workdir, rows, threads)
    product = workdir / f"person_{rows}" / "v1.duckdb"
    t_load = 0.0
    if not product.exists():
        started = time.perf_counter()
        load_file(
            parse_manifest(PERSON_MANIFEST), src, DataFormat.PARQUET, product,
            limits=LoadLimits(memory_limit="2GB", threads=threads),
        )  # fmt: skip
        t_load = time.perf_counter() - started
    raw, t_ctas = person_raw(workdir, src, rows, threads)
    return product, raw, t_load, t_ctas


def person_source(workdir: Path, rows: int, threads: int) -> Path:
    """Write the person-level Parquet source (once)."""
    src = workdir / f"person_{rows}.parquet"
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    if not src.exists():
        # person p has 1-4 rows (mean 2.5): rows i map to p = i * 2 // 5 ... plus jitter
        con.execute(
            f"""COPY (SELECT 'P' || lpad(((range * 2 + hash(range, 7) % 2) // 5)::VARCHAR,
                              10, '0') AS person_id,
                   'd' || lpad((hash(range, 1) % {GROUPS})::VARCHAR, 2, '0') AS g,
                   ['a', 'b', 'c'][(hash(range, 2) % 3)::INTEGER + 1] AS s,
                   (hash(range, 3) % 1200)::BIGINT AS x,
                   round((hash(range, 4) % 5500000) / 100.0, 2)::DOUBLE AS f
            FROM range({rows})) TO '{src}' (FORMAT parquet)"""
        )
    con.close()
    return src


def person_raw(workdir: Path, src: Path, rows: int, threads: int) -> tuple[Path, float]:
    """Write the plain CTAS of the Parquet source (once); return it and its time (0: cached)."""
    raw = workdir / f"person_{rows}_raw.duckdb"
    t_ctas = 0.0
    if not raw.exists():
        started = time.perf_counter()
        con = duckdb.connect(str(raw))
        con.execute(f"SET threads = {threads}")
        con.execute("SET memory_limit = '2GB'")
        con.execute(f"CREATE TABLE bench AS SELECT * FROM read_parquet('{src}')")
        con.execute("CHECKPOINT")
        con.close()
        t_ctas = time.perf_counter() - started
    return raw, t_ctas


def person_level(args: argparse.Namespace, rows: int) -> None:
    product_file, raw_file, t_load, t_ctas = build_person(args.dir, rows, args.threads)
    product = parse_manifest(PERSON_MANIFEST)
    print(f"\n{rows:,} person-level rows (load {t_load:.1f} s, CTAS {t_ctas:.1f} s; 0 = cached)")
    raw_con = duckdb.connect(str(raw_file), read_only=True, config={"threads": args.threads})
    pool = WorkerPool(size=1)
    limits = EngineLimits(timeout_s=600, memory_limit="8GB", threads=args.threads)
    allowed = frozenset({"g", "s", "x", "f"})
    try:
        for name, sql in PERSON_QUERIES.items():

            def raw(sql: str = sql) -> object:
                return raw_con.execute(sql).fetchall()

            def dp(sql: str = sql) -> object:
                q = prepare(product, sql, allowed_columns=allowed, delta=0, epsilon=Decimal(1))
                return execute(q, product_file, limits, runner=pool)

            raw()
            dp()
            t_raw, t_dp = [], []
            for _ in range(args.runs):
                t_raw.append(timed(raw))
                t_dp.append(timed(dp))
            r, d = statistics.median(t_raw), statistics.median(t_dp)
            print(
                f"  {name:14s} raw {r * 1000:8.1f} ms   DP prepare+execute {d * 1000:8.1f} ms"
                f"   ratio {d / r:.2f}",
                flush=True,
            )
    finally:
        raw_con.close()
        pool.close()


# --- --http: the same queries through the signed HTTP call of a real deployment -------

HTTP_OPERATOR = "op-bench"
HTTP_ENTERPRISE = "ent-bench"
HTTP_SERVER_THREADS = 4  # gunicorn gthread threads of the one worker
HTTP_QUERY_WORKERS = 2  # the server's isolated query workers (Settings default)
ENGINE_MEMORY = "8GB"  # DuckDB memory limit of a query, here and in the server
ENGINE_TIMEOUT_S = 600.0


def http_settings(data_dir: Path, threads: int) -> Any:
    """The deployment's settings; the server gets the same through ``http_env``."""
    from sandbox.settings import Settings

    return Settings(
        data_dir=data_dir,
        suite="ed25519-sha256",
        query_threads=threads,
        query_memory_limit=ENGINE_MEMORY,
        query_timeout_s=ENGINE_TIMEOUT_S,
        query_workers=HTTP_QUERY_WORKERS,
    )


def http_env(data_dir: Path, threads: int) -> dict[str, str]:
    return {
        "SANDBOX_DATA_DIR": str(data_dir),
        "SANDBOX_SUITE": "ed25519-sha256",
        "SANDBOX_QUERY_THREADS": str(threads),
        "SANDBOX_QUERY_MEMORY_LIMIT": ENGINE_MEMORY,
        "SANDBOX_QUERY_TIMEOUT_S": str(ENGINE_TIMEOUT_S),
        "SANDBOX_QUERY_WORKERS": str(HTTP_QUERY_WORKERS),
    }


def deploy(data_dir: Path, src: Path, threads: int) -> tuple[Path, str, bytes, float]:
    """Set up (idempotently) a deployment serving the person-level product, through the
    project's actions as ``sandbox init``, ``principals add``, ``products register
    --data`` and ``scopes grant`` do, each call audited; grant a fresh scope.

    Returns the product's current data file, the scope id, the enterprise's private key
    and the load time (0 when the product was already loaded).
    """
    from policies.principals import PrincipalSchema, Role, generate_keypair
    from policies.scopes import GrantSchema
    from products.errors import NotFound
    from products.loader import DataFormat
    from products.manifest import NewManifestSchema
    from products.parsing import parse
    from sandbox.actions import principals, products, scopes
    from sandbox.actions.call import Caller, Outcome, Pending, commit
    from sandbox.runtime import Runtime

    rt = Runtime.open(http_settings(data_dir, threads), create=True)
    try:
        caller = Caller.local("bench/dp_query.py --http", rt.suite.digest)

        def call(pending: Pending) -> Outcome:
            outcome = commit(rt, caller, pending)
            if outcome.error is not None:
                raise outcome.error
            return outcome

        keys: dict[str, bytes] = {}
        for pid, role in ((HTTP_OPERATOR, Role.OPERATOR), (HTTP_ENTERPRISE, Role.ENTERPRISE)):
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
        pid = str(PERSON_MANIFEST["id"])
        try:
            record = rt.catalogue.get(pid)
        except NotFound:
            manifest = parse(NewManifestSchema, PERSON_MANIFEST, "product manifest")
            call(products.register(rt, manifest, HTTP_OPERATOR))
            record = rt.catalogue.get(pid)
        t_load = 0.0
        if record.current is None:
            started = time.perf_counter()
            up = products.upload(rt, HTTP_OPERATOR, pid, src, DataFormat.PARQUET)
            try:
                call(up.pending)
            except BaseException:
                up.discard()
                raise
            t_load = time.perf_counter() - started
            record = rt.catalogue.get(pid)
        now = rt.clock()
        columns = [c["name"] for c in PERSON_MANIFEST["columns"] if c["name"] != "person_id"]
        grant = {
            "id": f"sc-dpq-{secrets.token_hex(4)}",
            "enterprise": HTTP_ENTERPRISE,
            "product": pid,
            "purpose": "DP query benchmark (bench/dp_query.py --http)",
            "operations": {"aggregate": {"columns": columns}},
            "epsilon": 10_000,
            "max_epsilon_per_query": 1,
            "rate_per_minute": 1_000_000,
            "daily_quota": 1_000_000_000,
            "valid_from": (now - timedelta(days=1)).isoformat(),
            "valid_until": (now + timedelta(days=1)).isoformat(),
        }
        outcome = call(scopes.grant(rt, parse(GrantSchema, grant, "scope"), HTTP_OPERATOR))
        assert outcome.body is not None
        return (
            rt.catalogue.data_path(record),
            str(outcome.body["id"]),
            keys[HTTP_ENTERPRISE],
            t_load,
        )
    finally:
        rt.close()


@contextmanager
def serving(data_dir: Path, threads: int) -> Iterator[str]:
    """Run ``gunicorn -w 1 -k gthread`` on the app factory; yield its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, **http_env(data_dir, threads)}
    log = data_dir / "gunicorn-dp-query.log"
    command = [
        sys.executable, "-m", "gunicorn", "-w", "1", "-k", "gthread",
        "--threads", str(HTTP_SERVER_THREADS), "--timeout", str(int(ENGINE_TIMEOUT_S) + 60),
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


def person_http(args: argparse.Namespace, rows: int) -> None:
    """Each person-level query as a signed ``POST /v1/queries`` to a real server,
    interleaved with the raw aggregate and with the engine alone (same product file)."""
    from sandbox.client import Client

    src = person_source(args.dir, rows, args.threads)
    raw_file, t_ctas = person_raw(args.dir, src, rows, args.threads)
    data_dir = args.dir / f"http_{rows}"
    product_file, scope, key, t_load = deploy(data_dir, src, args.threads)
    product = parse_manifest(PERSON_MANIFEST)
    print(
        f"\n{rows:,} person-level rows through the signed HTTP call (deployment load "
        f"{t_load:.1f} s, CTAS {t_ctas:.1f} s; 0 = cached)\n"
        f"  server: gunicorn -w 1 -k gthread --threads {HTTP_SERVER_THREADS}, "
        f"{HTTP_QUERY_WORKERS} query workers, engine threads {args.threads}; scope {scope}",
        flush=True,
    )
    raw_con = duckdb.connect(str(raw_file), read_only=True, config={"threads": args.threads})
    pool = WorkerPool(size=1)
    limits = EngineLimits(
        timeout_s=ENGINE_TIMEOUT_S, memory_limit=ENGINE_MEMORY, threads=args.threads
    )
    allowed = frozenset({"g", "s", "x", "f"})
    calls = 0
    records: list[dict[str, Any]] = []
    try:
        with serving(data_dir, args.threads) as url, Client(url, HTTP_ENTERPRISE, key) as client:
            client.jwks()  # the platform's keys, fetched once as a client would cache them

            def http(sql: str) -> object:
                nonlocal calls
                # A distinct epsilon per call: an identical request would be answered
                # from its stored release without running the engine (DESIGN §8).
                epsilon = Decimal("0.5") + calls * Decimal("0.000001")
                calls += 1
                answer = client.query(scope, sql, str(epsilon))
                claims = client.verify_receipt(answer)
                if Decimal(str(answer["epsilon_spent"])) != epsilon:
                    raise RuntimeError(f"answer reused or not charged: {answer['epsilon_spent']}")
                if len(answer["rows"]) != GROUPS or claims["audit_index"] != answer.audit_index:
                    raise RuntimeError("unexpected answer or receipt")
                return answer

            def preview(sql: str) -> object:
                return client.preview(scope, sql, "0.5")

            for name, sql in PERSON_QUERIES.items():

                def raw(sql: str = sql) -> object:
                    return raw_con.execute(sql).fetchall()

                def engine(sql: str = sql) -> object:
                    q = prepare(
                        product, sql, allowed_columns=allowed, delta=0, epsilon=Decimal("0.5")
                    )
                    return execute(q, product_file, limits, runner=pool)

                raw()
                engine()
                for _ in range(HTTP_QUERY_WORKERS):  # each server worker opens the file once
                    http(sql)
                preview(sql)
                samples: dict[str, list[float]] = {
                    "raw": [],
                    "http": [],
                    "engine": [],
                    "preview": [],
                }
                for _ in range(args.runs):
                    samples["raw"].append(timed(raw))
                    samples["http"].append(timed(lambda sql=sql: http(sql)))
                    samples["engine"].append(timed(engine))
                    samples["preview"].append(timed(lambda sql=sql: preview(sql)))
                m = {k: statistics.median(v) for k, v in samples.items()}
                r = m["raw"]
                print(
                    f"  {name:14s} raw {r * 1000:8.1f} ms   HTTP {m['http'] * 1000:8.1f} ms"
                    f" ratio {m['http'] / r:.2f}   engine {m['engine'] * 1000:8.1f} ms"
                    f" ratio {m['engine'] / r:.2f}   signed preview {m['preview'] * 1000:6.1f} ms",
                    flush=True,
                )
                records.append(
                    {
                        "query": name,
                        **{k: round(v * 1000, 2) for k, v in m.items()},
                        "http_ratio": round(m["http"] / r, 3),
                        "engine_ratio": round(m["engine"] / r, 3),
                        "http_samples_ms": [round(t * 1000, 1) for t in samples["http"]],
                        "raw_samples_ms": [round(t * 1000, 1) for t in samples["raw"]],
                    }
                )
    finally:
        raw_con.close()
        pool.close()
    print("  " + json.dumps({"rows": rows, "http": records, "released": calls}), flush=True)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(path: Path, product: DataProduct, runs: int, threads: int) -> dict[str, float]:
    raw_con = duckdb.connect(str(path), read_only=True, config={"threads": threads})
    pool = WorkerPool(size=1)
    limits = EngineLimits(timeout_s=600, memory_limit="8GB", threads=threads)
    allowed = frozenset({"g", "x"})

    def raw() -> object:
        return raw_con.execute(RAW_SQL).fetchall()

    rewritten = prepare(product, DP_SQL, allowed_columns=allowed, delta=0, epsilon=Decimal(1))

    def dp() -> object:
        return execute(rewritten, path, limits, runner=pool)

    def dp_full() -> object:
        q = prepare(product, DP_SQL, allowed_columns=allowed, delta=0, epsilon=Decimal(1))
        return execute(q, path, limits, runner=pool)

    def dp_sql_only() -> object:
        return raw_con.execute(rewritten.rewritten_sql).fetchall()

    try:
        for fn in (raw, dp, dp_full, dp_sql_only):
            fn()  # warm-up: page cache, DuckDB buffers, worker start
        samples: dict[str, list[float]] = {"raw": [], "dp": [], "dp_full": [], "dp_sql": []}
        for _ in range(runs):
            samples["raw"].append(timed(raw))
            samples["dp"].append(timed(dp))
            samples["dp_full"].append(timed(dp_full))
            samples["dp_sql"].append(timed(dp_sql_only))
    finally:
        raw_con.close()
        pool.close()
    return {name: statistics.median(values) for name, values in samples.items()}


def smartnoise(python: str, path: Path, runs: int) -> dict[str, Any] | None:
    script = REPO / "bench" / "dp_smartnoise.py"
    done = subprocess.run(
        [python, str(script), str(path), str(runs)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        print(f"  smartnoise failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/dp-bench"))
    parser.add_argument("--smartnoise-python", default=None)
    parser.add_argument("--smartnoise-max-rows", type=int, default=1_000_000)
    parser.add_argument(
        "--layout",
        nargs="+",
        choices=["window", "rank", "loader", "person"],
        default=["person"],
    )
    parser.add_argument(
        "--http",
        action="store_true",
        help="person layout: time the queries as signed HTTP calls to a real deployment",
    )
    args = parser.parse_args()
    if args.http and args.layout != ["person"]:
        parser.error("--http measures the person layout only")
    args.dir.mkdir(parents=True, exist_ok=True)
    product = parse_manifest(MANIFEST)
    for rows in args.rows:
        for layout in args.layout:
            if layout == "person" and args.http:
                person_http(args, rows)
                continue
            if layout == "person":
                person_level(args, rows)
                continue
            print(f"query: {DP_SQL}  (epsilon 1, k = 2, {GROUPS} public keys)")
            report(args, product, rows, layout)


def report(args: argparse.Namespace, product: DataProduct, rows: int, layout: str) -> None:
    started = time.perf_counter()
    path = build(args.dir / f"bench_{rows}_{layout}.duckdb", rows, layout)
    ready = time.perf_counter() - started
    print(f"\n{rows:,} rows, layout {layout} ({path}, ready in {ready:.1f} s)")
    m = measure(path, product, args.runs, args.threads)
    print(f"  raw DuckDB          {m['raw'] * 1000:9.1f} ms")
    print(f"  DP execute()        {m['dp'] * 1000:9.1f} ms   ratio {m['dp'] / m['raw']:.2f}")
    full = m["dp_full"] / m["raw"]
    print(f"  DP prepare+execute  {m['dp_full'] * 1000:9.1f} ms   ratio {full:.2f}")
    sql_ratio = m["dp_sql"] / m["raw"]
    print(f"  DP SQL in-process   {m['dp_sql'] * 1000:9.1f} ms   ratio {sql_ratio:.2f}")
    record: dict[str, Any] = {"rows": rows, "layout": layout, **m, "ratio": m["dp"] / m["raw"]}
    if args.smartnoise_python and rows <= args.smartnoise_max_rows:
        sn = smartnoise(args.smartnoise_python, path, max(3, args.runs // 2))
        if sn is not None:
            record["smartnoise"] = sn["median"]
            print(
                f"  SmartNoise (pandas) {sn['median'] * 1000:9.1f} ms   "
                f"engine is {sn['median'] / m['dp']:.0f}x faster"
            )
    print("  " + json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
