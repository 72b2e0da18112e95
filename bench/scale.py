"""Registry-shaped data at national scale: load and query, side by side with DuckDB.

    python bench/scale.py [--rows 10000000 100000000] [--with-300m] [--threads 2]
                          [--memory-limit 2GB] [--dir /work/scale-bench] [--runs 5]
                          [--keep] [--skip-ctas-above N] [--http]

For each size, in one run:

1. generate the rows as Parquet with DuckDB SQL (bench/registry_data.py; cached in
   --dir, not timed against anything; 300M rows are three copies of the 100M file
   with re-coded, still valid and unique credit codes, when that file exists);
2. load them twice, each in its own child process with the same threads and memory
   limit: a plain DuckDB ``CREATE TABLE AS SELECT * FROM read_parquet(...)`` and the
   project's loader (``products.loader.load_file``) on the demo manifest; report wall
   time, peak RSS of the child, peak temporary disk (the loader's temp directory,
   DuckDB's spill directory for the CTAS, sampled every 0.2 s) and file sizes;
3. query: DP ``prepare`` + ``execute`` through a worker pool (same threads and memory
   limit) against raw DuckDB on a warm read-only connection, for

   - ``SELECT district, COUNT(*), SUM(registered_capital), AVG(registered_capital)
      FROM enterprise_registry GROUP BY district``
   - the same grouped by district and industry ``WHERE status = 'active' AND
      founded_on >= DATE '2015-01-01'``

   raw runs on the plain CTAS table (and, when the CTAS was skipped, on the
   loader's file, the same table without its hidden columns). Medians of --runs
   interleaved runs after one warm-up.
4. with ``--http``, after the queries of each size, the same two queries end to end
   through the signed HTTP call (DESIGN §10): a deployment in ``DIR/http_ROWS`` set up
   through the project's actions (``bench/http_deployment.py``: SQLite control plane,
   an operator and an enterprise with Ed25519 keys, the demo manifest registered and
   its rows loaded from the same Parquet by the upload action, with the same threads
   and memory limit; a scope granting ``aggregate`` on the non-identifier columns),
   served by ``gunicorn -w 1 -k gthread --threads 4`` (2 query workers, engine threads
   and memory limit as above). Each query is a signed ``POST /v1/queries``
   (``sandbox.client.Client``: sign, post, read, verify the receipt; a distinct
   epsilon per call, so none is answered from a stored release; every answer checked
   charged and receipted), interleaved with raw DuckDB on the CTAS file as in 3;
   medians of --runs after a warm-up (one raw call, one HTTP call per query worker),
   and HTTP / raw. The deployment is removed afterwards unless --keep (with --keep an
   existing one is reused, its product not reloaded).
5. fairness: with two sizes, the smallest product's GROUP BY latency alone and while
   the largest product's GROUP BY runs in a loop on the same pool (two workers).

Results are printed as JSON lines and a table. Figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MANIFEST = REPO / "sandbox" / "demo" / "manifests" / "enterprise_registry.yaml"
QUERIES = {
    "group_by": (
        "SELECT district, COUNT(*) AS n, SUM(registered_capital) AS s, "
        "AVG(registered_capital) AS a FROM enterprise_registry GROUP BY district"
    ),
    "where": (
        "SELECT district, industry, COUNT(*) AS n, SUM(registered_capital) AS s, "
        "AVG(registered_capital) AS a FROM enterprise_registry "
        "WHERE status = 'active' AND founded_on >= DATE '2015-01-01' "
        "GROUP BY district, industry"
    ),
}


def dir_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


# --- children: one load each, measured from inside ---------------------------------


def child(mode: str, src: Path, out: Path, threads: int, memory: str) -> None:
    import duckdb

    t0 = time.monotonic()
    info: dict[str, Any] = {"mode": mode}
    if mode in ("ctas", "ctas_unordered"):
        spill = out.with_name(out.name + ".spill")
        peak = [0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(0.2):
                peak[0] = max(peak[0], dir_bytes(spill))

        w = threading.Thread(target=watch, daemon=True)
        w.start()
        con = duckdb.connect(str(out))
        con.execute(f"SET threads = {threads}")
        con.execute(f"SET memory_limit = '{memory}'")
        con.execute(f"SET temp_directory = '{spill}'")
        con.execute("SET enable_progress_bar_print = false")
        if mode == "ctas_unordered":  # what the loader sets too
            con.execute("SET preserve_insertion_order = false")
        con.execute(f"CREATE TABLE enterprise_registry AS SELECT * FROM read_parquet('{src}')")
        con.execute("CHECKPOINT")
        con.close()
        stop.set()
        w.join()
        shutil.rmtree(spill, ignore_errors=True)
        info["peak_temp_bytes"] = peak[0]
    else:
        from products.loader import DataFormat, LoadLimits, load_file
        from products.manifest import parse_manifest
        from products.yamlfile import load_yaml

        manifest = parse_manifest(load_yaml(MANIFEST.read_text(encoding="utf-8")))
        result = load_file(
            manifest,
            src,
            DataFormat.PARQUET,
            out,
            limits=LoadLimits(memory_limit=memory, threads=threads),
        )
        info.update(
            rows=result.row_count,
            peak_temp_bytes=result.peak_temp_bytes,
            clipped=result.clipped,
            timings=result.timings,
            buckets=result.buckets,
        )
    info["seconds"] = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    info["cpu_s"] = usage.ru_utime + usage.ru_stime  # robust to other work on the machine
    info["peak_rss_bytes"] = usage.ru_maxrss * 1024
    info["file_bytes"] = out.stat().st_size
    print(json.dumps(info), flush=True)


def run_child(mode: str, src: Path, out: Path, threads: int, memory: str) -> dict[str, Any]:
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "_child", mode, str(src), str(out), str(threads), memory]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --- queries -----------------------------------------------------------------------


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def query_bench(
    product_file: Path, raw_file: Path, threads: int, memory: str, runs: int
) -> dict[str, Any]:
    import duckdb

    from products.manifest import parse_manifest
    from products.yamlfile import load_yaml
    from sandbox.engine import EngineLimits, WorkerPool, execute, prepare

    manifest = parse_manifest(load_yaml(MANIFEST.read_text(encoding="utf-8")))
    allowed = frozenset(c.name for c in manifest.columns if c.classification.value != "identifier")
    limits = EngineLimits(timeout_s=3600, memory_limit=memory, threads=threads)
    pool = WorkerPool(size=2)
    raw = duckdb.connect(
        str(raw_file), read_only=True, config={"threads": threads, "memory_limit": memory}
    )
    raw.execute("SET enable_progress_bar_print = false")
    out: dict[str, Any] = {}
    try:
        for name, sql in QUERIES.items():

            def dp(sql: str = sql) -> None:
                q = prepare(manifest, sql, allowed_columns=allowed, delta=0, epsilon=Decimal(1))
                execute(q, product_file, limits, runner=pool)

            def rawq(sql: str = sql) -> None:
                raw.execute(sql).fetchall()

            dp()
            rawq()
            t_dp: list[float] = []
            t_raw: list[float] = []
            for _ in range(runs):
                for fn, acc in ((rawq, t_raw), (dp, t_dp)):
                    t = time.perf_counter()
                    fn()
                    acc.append(time.perf_counter() - t)
            out[name] = {
                "raw_ms": median_ms(t_raw),
                "dp_ms": median_ms(t_dp),
                "ratio": round(statistics.median(t_dp) / statistics.median(t_raw), 2),
            }
    finally:
        raw.close()
        pool.close()
    return out


def http_bench(rows: int, src: Path, raw_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The two queries as signed HTTP calls to a deployment of the registry product
    loaded from ``src``, interleaved with raw DuckDB on ``raw_file``."""
    import duckdb

    from bench.http_deployment import (
        ENTERPRISE,
        QUERY_WORKERS,
        SERVER_THREADS,
        SignedQueries,
        deploy,
        serving,
    )
    from products.yamlfile import load_yaml
    from sandbox.client import Client

    manifest = load_yaml(MANIFEST.read_text(encoding="utf-8"))
    columns = [c["name"] for c in manifest["columns"] if c["classification"] != "identifier"]
    keys = {c["name"]: len(c.get("public_values", [])) for c in manifest["columns"]}
    expected_rows = {"group_by": keys["district"], "where": keys["district"] * keys["industry"]}
    data_dir = args.dir / f"http_{rows}"
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    deployed = deploy(
        data_dir, manifest, src, args.threads, columns,
        memory_limit=args.memory_limit,
        caller="bench/scale.py --http",
        purpose="national-scale benchmark of the signed HTTP call (bench/scale.py --http)",
        scope_prefix="sc-scale-",
    )  # fmt: skip
    out: dict[str, Any] = {
        "deploy_load_s": round(deployed.load_s, 1),
        "server": f"gunicorn -w 1 -k gthread --threads {SERVER_THREADS}, "
        f"{QUERY_WORKERS} query workers",
        "scope": deployed.scope,
    }
    raw = duckdb.connect(
        str(raw_file), read_only=True,
        config={"threads": args.threads, "memory_limit": args.memory_limit},
    )  # fmt: skip
    raw.execute("SET enable_progress_bar_print = false")
    try:
        with (
            serving(
                data_dir, args.threads, memory_limit=args.memory_limit, log_name="gunicorn.log"
            ) as url,
            Client(url, ENTERPRISE, deployed.key) as client,
        ):
            client.jwks()  # the platform's keys, fetched once as a client would cache them
            signed = SignedQueries(client, deployed.scope)
            for name, sql in QUERIES.items():

                def http(sql: str = sql, n: int = expected_rows[name]) -> None:
                    signed(sql, n)

                def rawq(sql: str = sql) -> None:
                    raw.execute(sql).fetchall()

                rawq()
                for _ in range(QUERY_WORKERS):  # each server worker opens the file once
                    http()
                t_http: list[float] = []
                t_raw: list[float] = []
                for _ in range(args.runs):
                    for fn, acc in ((rawq, t_raw), (http, t_http)):
                        t = time.perf_counter()
                        fn()
                        acc.append(time.perf_counter() - t)
                out[name] = {
                    "raw_ms": median_ms(t_raw),
                    "http_ms": median_ms(t_http),
                    "ratio": round(statistics.median(t_http) / statistics.median(t_raw), 2),
                    "http_samples_ms": [round(t * 1000, 1) for t in t_http],
                    "raw_samples_ms": [round(t * 1000, 1) for t in t_raw],
                }
            out["released"] = signed.calls
    finally:
        raw.close()
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    return out


def fairness(small: Path, big: Path, threads: int, memory: str, runs: int) -> dict[str, Any]:
    from products.manifest import parse_manifest
    from products.yamlfile import load_yaml
    from sandbox.engine import EngineLimits, WorkerPool, execute, prepare

    manifest = parse_manifest(load_yaml(MANIFEST.read_text(encoding="utf-8")))
    allowed = frozenset({"district", "registered_capital"})
    q = prepare(manifest, QUERIES["group_by"], allowed_columns=allowed, delta=0, epsilon=Decimal(1))
    limits = EngineLimits(timeout_s=3600, memory_limit=memory, threads=threads)
    pool = WorkerPool(size=2)
    try:
        execute(q, small, limits, runner=pool)
        execute(q, big, limits, runner=pool)
        alone = []
        for _ in range(runs):
            t = time.perf_counter()
            execute(q, small, limits, runner=pool)
            alone.append(time.perf_counter() - t)
        stop = threading.Event()
        big_times: list[float] = []

        def loop() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                execute(q, big, limits, runner=pool, tenant="big")
                big_times.append(time.perf_counter() - t)

        th = threading.Thread(target=loop, daemon=True)
        th.start()
        time.sleep(0.5)
        beside = []
        for _ in range(runs):
            t = time.perf_counter()
            execute(q, small, limits, runner=pool, tenant="small")
            beside.append(time.perf_counter() - t)
            time.sleep(0.05)
        stop.set()
        th.join()
    finally:
        pool.close()
    return {
        "small_alone_ms": median_ms(alone),
        "small_beside_big_ms": median_ms(beside),
        "big_ms": median_ms(big_times) if big_times else None,
        "slowdown": round(statistics.median(beside) / statistics.median(alone), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000_000, 100_000_000])
    ap.add_argument("--with-300m", action="store_true", help="add 300,000,000 rows")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--dir", type=Path, default=Path("/work/scale-bench"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep generated and loaded files")
    ap.add_argument(
        "--skip-ctas-above", type=int, default=10**12,
        help="above this many rows, no CTAS copy (raw queries run on the loader's file)",
    )  # fmt: skip
    ap.add_argument(
        "--http", action="store_true",
        help="also time the two queries through the signed HTTP call of a real deployment",
    )  # fmt: skip
    args = ap.parse_args()
    from bench.registry_data import write_copies, write_parquet

    sizes = sorted(set(args.rows + ([300_000_000] if args.with_300m else [])))
    args.dir.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, Any]] = {}
    products: dict[int, Path] = {}
    for rows in sizes:
        src = args.dir / f"registry_{rows}.parquet"
        if not src.exists():
            t = time.monotonic()
            base = args.dir / f"registry_{rows // 3}.parquet"
            if rows % 3 == 0 and base.exists():  # 300M: three re-coded copies of 100M
                write_copies(src, base, 3, threads=args.threads, memory_limit=args.memory_limit)
            else:
                write_parquet(src, rows, threads=args.threads, memory_limit=args.memory_limit)
            print(json.dumps({"rows": rows, "generated_s": round(time.monotonic() - t, 1)}))
        r: dict[str, Any] = {"rows": rows, "source_bytes": src.stat().st_size}
        raw_file = args.dir / f"ctas_{rows}.duckdb"
        product = args.dir / f"product_{rows}" / "v1.duckdb"
        product.parent.mkdir(exist_ok=True)
        if rows <= args.skip_ctas_above:
            r["ctas"] = run_child("ctas", src, raw_file, args.threads, args.memory_limit)
            r["ctas_unordered"] = run_child(
                "ctas_unordered", src, raw_file, args.threads, args.memory_limit
            )
        r["loader"] = run_child("load", src, product, args.threads, args.memory_limit)
        if "ctas" in r:
            r["load_over_ctas"] = round(r["loader"]["seconds"] / r["ctas"]["seconds"], 2)
            r["load_over_ctas_unordered"] = round(
                r["loader"]["seconds"] / r["ctas_unordered"]["seconds"], 2
            )
            r["load_over_ctas_cpu"] = round(r["loader"]["cpu_s"] / r["ctas"]["cpu_s"], 2)
        temp, size = r["loader"]["peak_temp_bytes"], r["loader"]["file_bytes"]
        r["temp_over_product"] = round(temp / size, 3)
        print(json.dumps(r), flush=True)
        r["queries"] = query_bench(
            product, raw_file if raw_file.exists() else product, args.threads,
            args.memory_limit, args.runs,
        )  # fmt: skip
        print(json.dumps({"rows": rows, "queries": r["queries"]}), flush=True)
        if args.http:
            r["http"] = http_bench(rows, src, raw_file if raw_file.exists() else product, args)
            print(json.dumps({"rows": rows, "http": r["http"]}), flush=True)
        if raw_file.exists() and not args.keep:
            raw_file.unlink()
        results[rows] = r
        products[rows] = product
    if len(sizes) > 1:
        fair = fairness(
            products[sizes[0]], products[sizes[-1]], args.threads, args.memory_limit, args.runs
        )
        print(json.dumps({"fairness": fair}), flush=True)
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        growth = results[hi]["loader"]["seconds"] / results[lo]["loader"]["seconds"]
        cpu = results[hi]["loader"]["cpu_s"] / results[lo]["loader"]["cpu_s"]
        print(
            json.dumps({"load_growth": {f"{hi}/{lo}": round(growth, 2), "cpu": round(cpu, 2)}}),
            flush=True,
        )
    http_head = " group by HTTP/raw | where HTTP/raw |" if args.http else ""
    print(
        "\n| rows | CTAS s | loader s | ratio | loader peak RSS | peak temp / product | "
        "group by DP/raw | where DP/raw |" + http_head
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |" + " --- |" * (2 * args.http))
    for rows, r in results.items():
        q = r["queries"]
        ctas = f"{r['ctas']['seconds']:.1f}" if "ctas" in r else "-"
        line = (
            f"| {rows:,} | {ctas} | {r['loader']['seconds']:.1f} | "
            f"{r.get('load_over_ctas', '-')} | "
            f"{r['loader']['peak_rss_bytes'] / 2**20:,.0f} MiB | {r['temp_over_product']} | "
            f"{q['group_by']['dp_ms']} / {q['group_by']['raw_ms']} ms = {q['group_by']['ratio']} | "
            f"{q['where']['dp_ms']} / {q['where']['raw_ms']} ms = {q['where']['ratio']} |"
        )
        if "http" in r:
            h = r["http"]
            line += "".join(
                f" {h[k]['http_ms']} / {h[k]['raw_ms']} ms = {h[k]['ratio']} |"
                for k in ("group_by", "where")
            )
        print(line)
    if not args.keep:
        for rows in sizes:
            shutil.rmtree(args.dir / f"product_{rows}", ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _, _, mode, src, out, threads, memory = sys.argv
        child(mode, Path(src), Path(out), int(threads), memory)
    else:
        main()
