"""SmartNoise SQL (pandas reader) on the benchmark product, for bench/dp_query.py.

    <python with smartnoise-sql> bench/dp_smartnoise.py PRODUCT.duckdb RUNS

Runs in its own interpreter because smartnoise-sql pins an older OpenDP than the
engine uses. Loads the table into pandas (not timed: SmartNoise's pandas reader needs
it in memory), then times ``SELECT g, COUNT(*), SUM(x) ... GROUP BY g`` with person-level
bounding (``max_ids = 2``, the product's max_rows_per_unit), epsilon 1, and prints one
JSON line: {"rows", "median", "runs": [...]} (seconds).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

import duckdb
import snsql  # type: ignore[import-not-found]
from snsql import Privacy


def main() -> None:
    path, runs = sys.argv[1], int(sys.argv[2])
    con = duckdb.connect(path, read_only=True)
    df = con.execute("SELECT unit, g, x FROM bench").df()
    con.close()
    metadata: dict[str, Any] = {
        "": {
            "bench": {
                "bench": {
                    "max_ids": 2,
                    "row_privacy": False,
                    "rows": len(df),
                    "unit": {"type": "int", "private_id": True},
                    "g": {"type": "string"},
                    "x": {"type": "int", "lower": 0, "upper": 1000},
                }
            }
        }
    }
    reader = snsql.from_df(df, privacy=Privacy(epsilon=1.0, delta=1e-6), metadata=metadata)
    sql = "SELECT g, COUNT(*) AS n, SUM(x) AS s FROM bench.bench GROUP BY g"
    reader.execute(sql)  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        reader.execute(sql)
        times.append(time.perf_counter() - started)
    print(json.dumps({"rows": len(df), "median": statistics.median(times), "runs": times}))


if __name__ == "__main__":
    main()
