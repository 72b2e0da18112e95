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
The deployment, the server and the signed calls are ``bench/http_deployment.py``
(shared with ``bench/scale.py --http``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.http_deployment import (  # noqa: E402
    ENGINE_MEMORY,
    ENGINE_TIMEOUT_S,
    ENTERPRISE,
    QUERY_WORKERS,
    SERVER_THREADS,
    SignedQueries,
    deploy,
    serving,
)
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
# The deployment, its server and the signed calls: bench/http_deployment.py.


def person_http(args: argparse.Namespace, rows: int) -> None:
    """Each person-level query as a signed ``POST /v1/queries`` to a real server,
    interleaved with the raw aggregate and with the engine alone (same product file)."""
    from sandbox.client import Client

    src = person_source(args.dir, rows, args.threads)
    raw_file, t_ctas = person_raw(args.dir, src, rows, args.threads)
    data_dir = args.dir / f"http_{rows}"
    columns = [c["name"] for c in PERSON_MANIFEST["columns"] if c["name"] != "person_id"]
    product_file, scope, key, t_load = deploy(
        data_dir, PERSON_MANIFEST, src, args.threads, columns,
        caller="bench/dp_query.py --http",
        purpose="DP query benchmark (bench/dp_query.py --http)",
        scope_prefix="sc-dpq-",
    )  # fmt: skip
    product = parse_manifest(PERSON_MANIFEST)
    print(
        f"\n{rows:,} person-level rows through the signed HTTP call (deployment load "
        f"{t_load:.1f} s, CTAS {t_ctas:.1f} s; 0 = cached)\n"
        f"  server: gunicorn -w 1 -k gthread --threads {SERVER_THREADS}, "
        f"{QUERY_WORKERS} query workers, engine threads {args.threads}; scope {scope}",
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
        with (
            serving(data_dir, args.threads, log_name="gunicorn-dp-query.log") as url,
            Client(url, ENTERPRISE, key) as client,
        ):
            client.jwks()  # the platform's keys, fetched once as a client would cache them
            signed = SignedQueries(client, scope)

            def http(sql: str) -> object:
                return signed(sql, GROUPS)

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
                for _ in range(QUERY_WORKERS):  # each server worker opens the file once
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
            calls = signed.calls
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
