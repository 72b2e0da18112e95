"""Latency of verification lookups on a large product (docs/verification.md, DESIGN §10).

Generates the demo enterprise registry at the requested size, loads it with the
production loader, and measures single and batch verification calls through
``VerificationRunner`` against three layouts of the same table:

- ``loaded``: the file as ``products.loader.load_file`` writes it today;
- ``sorted``: rewritten ``ORDER BY`` the privacy unit (the proposed loader change),
  so that DuckDB's row-group min/max statistics skip all but one row group;
- ``art``: the loaded file plus ``CREATE UNIQUE INDEX ... (uscc)`` (an ART index);

and, with ``index`` among ``--layouts``, the answer index (``sandbox/verification/
index.py``) of the loaded file: its build (time, the process's peak RSS, file size),
then the same calls answered from it. The three DuckDB layouts are measured with
answer indexes off, so that every call there is a point lookup.

Run from the repository root:
``python -m bench.verification_lookup --rows 10000000 --workdir /tmp/vbench``
(``--layouts loaded index`` to skip the two extra copies of the file).
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import statistics
import time
from pathlib import Path

import duckdb

from products.errors import DomainError
from products.loader import DataFormat, load_file
from sandbox.demo import generate, manifests, verification_products
from sandbox.verification.index import index_path
from sandbox.verification.lookup import VerificationLimits, VerificationRunner


def _ms(samples: list[float]) -> str:
    s = sorted(samples)
    return (
        f"p50 {statistics.median(s) * 1e3:7.2f} ms  p95 {s[int(0.95 * (len(s) - 1))] * 1e3:7.2f} ms"
    )


def _prepare(rows: int, work: Path, wanted: list[str]) -> dict[str, Path]:
    work.mkdir(parents=True, exist_ok=True)
    product = manifests()["enterprise_registry"]
    csv_path = work / f"enterprise_registry_{rows}.csv"
    if not csv_path.exists():
        t = time.perf_counter()
        generate("enterprise_registry", rows, csv_path)
        print(f"generated {rows:,} rows in {time.perf_counter() - t:.1f} s")
    names = ["loaded"] + [n for n in ("sorted", "art") if n in wanted]
    layouts = {name: work / f"{name}_{rows}.duckdb" for name in names}
    if not layouts["loaded"].exists():
        t = time.perf_counter()
        load_file(product, csv_path, DataFormat.CSV, layouts["loaded"])
        print(f"loaded in {time.perf_counter() - t:.1f} s")
    if "sorted" in layouts and not layouts["sorted"].exists():
        t = time.perf_counter()
        con = duckdb.connect(str(layouts["sorted"]))
        con.execute("ATTACH ? AS src (READ_ONLY)", [str(layouts["loaded"])])
        con.execute(
            "CREATE TABLE enterprise_registry AS "
            "SELECT * FROM src.enterprise_registry ORDER BY uscc"
        )
        con.close()
        print(f"sorted copy in {time.perf_counter() - t:.1f} s")
    if "art" in layouts and not layouts["art"].exists():
        t = time.perf_counter()
        shutil.copy(layouts["loaded"], layouts["art"])
        con = duckdb.connect(str(layouts["art"]))
        con.execute("CREATE UNIQUE INDEX enterprise_registry_uscc ON enterprise_registry (uscc)")
        con.close()
        print(f"ART index in {time.perf_counter() - t:.1f} s")
    for name, path in layouts.items():
        print(f"  {name:7s} {path.stat().st_size / 2**20:8.0f} MiB")
    return layouts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/vbench"))
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument(
        "--layouts",
        nargs="+",
        default=["loaded", "sorted", "art", "index"],
        choices=["loaded", "sorted", "art", "index"],
    )
    args = parser.parse_args()
    layouts = _prepare(args.rows, args.workdir, args.layouts)
    loaded = layouts["loaded"]
    if "loaded" not in args.layouts:
        del layouts["loaded"]
    product = manifests()["enterprise_registry"]
    vp = verification_products()["enterprise-good-standing"]
    sample = duckdb.connect(str(loaded), read_only=True)
    keys = [
        r[0]
        for r in sample.execute(
            "SELECT uscc FROM enterprise_registry USING SAMPLE 2000 ROWS"
        ).fetchall()
    ]
    sample.close()
    rng = random.Random(1)
    runs = list(layouts.items())
    if "index" in args.layouts:
        runs.append(("index", loaded))
    for name, path in runs:
        limits = (
            VerificationLimits(build_in_background=False)
            if name == "index"
            else VerificationLimits(answer_indexes=False)
        )
        runner = VerificationRunner(limits)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        runner.verify(vp, product, path, {"uscc": keys[0]})
        first = time.perf_counter() - t
        if name == "index":
            built = index_path(vp, product, path)
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(
                f"index   built in {first:.1f} s (first call included), file "
                f"{built.stat().st_size / 2**20:.0f} MiB, peak RSS {rss0 / 2**10:.0f} -> "
                f"{rss1 / 2**10:.0f} MiB"
            )
        lat = []
        for _ in range(args.calls if name != "loaded" else max(args.calls // 10, 10)):
            key = rng.choice(keys)
            t = time.perf_counter()
            answer = runner.verify(vp, product, path, {"uscc": key})
            lat.append(time.perf_counter() - t)
            assert "match" in answer
        print(f"{name:7s} single, cached file:   first {first * 1e3:7.1f} ms  {_ms(lat)}")
        for size in (10, 100, 1000):
            blat = []
            for _ in range(5):
                items = [{"subject": {"uscc": k}} for k in rng.sample(keys, size)]
                t = time.perf_counter()
                try:
                    runner.verify_batch(vp, product, path, items)
                except DomainError as exc:
                    print(f"{name:7s} batch of {size:4d}:        refused: {exc.message}")
                    break
                blat.append(time.perf_counter() - t)
            if not blat:
                continue
            per_item = statistics.median(blat) / size * 1e3
            print(f"{name:7s} batch of {size:4d}:        {_ms(blat)}  ({per_item:.3f} ms/item)")
        runner.close()
        if name not in ("loaded", "index"):
            olat = []
            for _ in range(20):
                fresh = VerificationRunner(VerificationLimits(answer_indexes=False))
                t = time.perf_counter()
                fresh.verify(vp, product, path, {"uscc": rng.choice(keys)})
                olat.append(time.perf_counter() - t)
                fresh.close()
            print(f"{name:7s} single, file opened per call: {_ms(olat)}")


if __name__ == "__main__":
    main()
