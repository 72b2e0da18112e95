"""Loading rows: typed, clipped (not refused) at the bounds, all-or-nothing, reported by
line number without values; killed loads leave nothing; temp disk within its budget."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from products.errors import InvalidRequest, TooLarge
from products.layout import fixed_point
from products.loader import DataFormat, LoadLimits, LoadProgress, load_file, sha256_file
from products.manifest import DataProduct, parse_manifest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def product() -> DataProduct:
    return parse_manifest(
        {
            "id": "registry",
            "title": "Registry",
            "privacy_unit": "uscc",
            "max_rows_per_unit": 2,
            "columns": [
                {"name": "uscc", "type": "string", "classification": "identifier"},
                {
                    "name": "district",
                    "type": "string",
                    "classification": "attribute",
                    "public_values": ["A", "B"],
                },
                {
                    "name": "capital",
                    "type": "float",
                    "classification": "sensitive",
                    "bounds": [0, 1000],
                },
                {
                    "name": "staff",
                    "type": "integer",
                    "classification": "sensitive",
                    "bounds": [0, 50],
                    "nullable": False,
                },
                {"name": "founded", "type": "date", "classification": "public"},
                {"name": "active", "type": "boolean", "classification": "attribute"},
            ],
        }
    )


GOOD = """uscc,district,capital,staff,founded,active
U1,A,10.5,3,2020-01-02,true
U1,B,20,4,2021-03-04,false
U2,A,,5,,true
U3,B,999.9,50,2019-12-31,
"""


def write(tmp_path: Path, text: str, name: str = "rows.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_valid_csv_loads_typed_rows_with_unit_ranks(product: DataProduct, tmp_path: Path) -> None:
    src = write(tmp_path, GOOD)
    dest = tmp_path / "v1.duckdb"
    result = load_file(product, src, DataFormat.CSV, dest)
    assert result.row_count == 4 and result.units == 3
    assert result.content_hash == sha256_file(src)
    con = duckdb.connect(str(dest), read_only=True)
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'registry'"
        ).fetchall()
    )
    assert types == {
        "uscc": "VARCHAR",
        "district": "VARCHAR",
        "capital": "DOUBLE",
        "staff": "BIGINT",
        "founded": "DATE",
        "active": "BOOLEAN",
        "_unit_rank": "INTEGER",
        "_bucket": "INTEGER",
        fixed_point(product.column("capital")).name: "BIGINT",  # type: ignore[arg-type, union-attr]
        fixed_point(product.column("staff")).name: "BIGINT",  # type: ignore[arg-type, union-attr]
    }
    ranks = con.execute(
        "SELECT uscc, list_sort(list(_unit_rank)) FROM registry GROUP BY uscc ORDER BY uscc"
    ).fetchall()
    assert ranks == [("U1", [1, 2]), ("U2", [1]), ("U3", [1])]
    assert con.execute("SELECT sum(staff), count(capital) FROM registry").fetchone() == (62, 3)


def test_parquet_loads_too(product: DataProduct, tmp_path: Path) -> None:
    src = write(tmp_path, GOOD)
    pq = tmp_path / "rows.parquet"
    duckdb.execute(f"COPY (SELECT * FROM read_csv('{src}')) TO '{pq}' (FORMAT parquet)")
    result = load_file(product, pq, DataFormat.PARQUET, tmp_path / "v1.duckdb")
    assert result.row_count == 4


@pytest.mark.parametrize(
    ("line", "column", "rule"),
    [
        ("U9,A,10,1.5,2020-01-01,true", "staff", "not a valid integer"),
        ("U9,A,nan,5,2020-01-01,true", "capital", "not a valid float"),
        ("U9,C,10,5,2020-01-01,true", "district", "not one of public_values"),
        ("U9,A,10,5,01/02/2020,true", "founded", "not a valid date"),
        ("U9,A,10,5,2020-01-01,maybe", "active", "not a valid boolean"),
        ("U9,A,10,,2020-01-01,true", "staff", "missing value"),
        (",A,10,5,2020-01-01,true", "uscc", "missing value"),
    ],
)
def test_bad_rows_are_refused_by_line_and_rule_without_values(
    product: DataProduct, tmp_path: Path, line: str, column: str, rule: str
) -> None:
    src = write(tmp_path, GOOD + line + "\n")
    dest = tmp_path / "v1.duckdb"
    with pytest.raises(InvalidRequest) as exc:
        load_file(product, src, DataFormat.CSV, dest)
    details = exc.value.details
    assert details["rejected"] == 1
    (rejection,) = details["first_rejections"]
    assert rejection["line"] == 6 and rejection["column"] == column
    assert rule in rejection["rule"]
    assert "U9" not in str(exc.value.message) + str(details)
    assert not dest.exists(), "nothing may be written when any row is bad"
    assert list(tmp_path.iterdir()) == [src]


def test_missing_and_extra_columns(product: DataProduct, tmp_path: Path) -> None:
    src = write(tmp_path, "uscc,district,capital,staff,founded,colour\nU1,A,1,1,2020-01-01,red\n")
    with pytest.raises(InvalidRequest) as exc:
        load_file(product, src, DataFormat.CSV, tmp_path / "v.duckdb")
    assert exc.value.details == {"missing_columns": ["active"], "unexpected_columns": ["colour"]}


def test_unique_key_violation_reports_counts_not_values(tmp_path: Path) -> None:
    m = parse_manifest(
        {
            "id": "people",
            "title": "People",
            "privacy_unit": "pid",
            "max_rows_per_unit": 3,
            "unique": [["pid"]],
            "columns": [{"name": "pid", "type": "string", "classification": "identifier"}],
        }
    )
    src = write(tmp_path, "pid\nP1\nP2\nP1\n")
    with pytest.raises(InvalidRequest) as exc:
        load_file(m, src, DataFormat.CSV, tmp_path / "v.duckdb")
    assert exc.value.details["duplicated_keys"] == 1
    assert "P1" not in str(exc.value.details) + exc.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv"]


@pytest.mark.parametrize("unique", [[["pid", "year"]], [["year", "n"]]])
def test_unique_keys_with_and_without_the_unit_in_buckets(
    tmp_path: Path, unique: list[list[str]]
) -> None:
    m = parse_manifest(
        {
            "id": "people",
            "title": "People",
            "privacy_unit": "pid",
            "max_rows_per_unit": 2,
            "unique": unique,
            "columns": [
                {"name": "pid", "type": "string", "classification": "identifier"},
                {"name": "year", "type": "integer", "classification": "attribute",
                 "bounds": [2000, 2030]},
                {"name": "n", "type": "integer", "classification": "attribute",
                 "bounds": [0, 10]},
            ],
        }
    )  # fmt: skip
    rows = "pid,year,n\n" + "".join(
        f"P{i},{2000 + j},{i * 3 + j}\n" for i in range(300) for j in range(3)
    )
    ok = load_file(
        m, write(tmp_path, rows), DataFormat.CSV, tmp_path / "a.duckdb",
        limits=LoadLimits(rows_per_bucket=100),
    )  # fmt: skip
    assert ok.row_count == 900 and ok.units == 300 and ok.buckets > 1
    bad = rows + "P7,2000,21\n"  # repeats both (P7, 2000) and (2000, 21)
    with pytest.raises(InvalidRequest) as exc:
        load_file(
            m, write(tmp_path, bad, "bad.csv"), DataFormat.CSV, tmp_path / "b.duckdb",
            limits=LoadLimits(rows_per_bucket=100),
        )  # fmt: skip
    assert exc.value.details == {"unique": unique[0], "duplicated_keys": 1}
    assert not (tmp_path / "b.duckdb").exists()


@pytest.mark.parametrize("text", ["", 'not,a\ncsv"file', "\x00\x01\x02"])
def test_garbage_is_a_clear_error(product: DataProduct, tmp_path: Path, text: str) -> None:
    src = write(tmp_path, text)
    with pytest.raises(InvalidRequest):
        load_file(product, src, DataFormat.CSV, tmp_path / "v.duckdb")
    assert not (tmp_path / "v.duckdb").exists()


def test_progress_is_reported_per_stage(product: DataProduct, tmp_path: Path) -> None:
    seen: list[str] = []
    load_file(
        product,
        write(tmp_path, GOOD),
        DataFormat.CSV,
        tmp_path / "v.duckdb",
        progress=lambda stage, f, info: seen.append(stage),
    )
    assert [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s] == [
        "reading",
        "writing",
        "done",
    ]


def test_progress_detail_has_rows_rate_and_eta(product: DataProduct, tmp_path: Path) -> None:
    seen: list[LoadProgress] = []

    def progress(stage: str, fraction: float, info: LoadProgress) -> None:
        seen.append(info)

    src = write(tmp_path, GOOD)
    load_file(product, src, DataFormat.CSV, tmp_path / "v.duckdb", progress=progress)
    assert seen[-1].stage == "done" and seen[-1].eta_s == 0.0
    writing = [p for p in seen if p.stage == "writing"]
    assert writing[-1].fraction == 1.0 and writing[-1].rows == 4 == writing[-1].rows_total
    assert writing[-1].rows_per_s > 0 and writing[-1].eta_s is not None


def test_values_outside_bounds_load_and_are_counted_as_clipped(
    product: DataProduct, tmp_path: Path
) -> None:
    """Bounds are clipping bounds (DESIGN §8): out-of-bounds values load unchanged for
    WHERE and verification, their fixed-point values are clipped, and the load says
    how many per column."""
    rows = GOOD + "U9,A,-1,51,2020-01-01,true\nU8,B,5000,60,2020-01-01,true\n"
    dest = tmp_path / "v.duckdb"
    result = load_file(product, write(tmp_path, rows), DataFormat.CSV, dest)
    assert result.row_count == 6
    assert result.clipped == {
        "capital": {"below": 1, "above": 1},
        "staff": {"below": 0, "above": 2},
    }
    fp_capital = fixed_point(product.column("capital"))  # type: ignore[arg-type]
    fp_staff = fixed_point(product.column("staff"))  # type: ignore[arg-type]
    assert fp_capital is not None and fp_staff is not None
    con = duckdb.connect(str(dest), read_only=True)
    got = con.execute(
        f'SELECT capital, staff, "{fp_capital.name}", "{fp_staff.name}" FROM registry '
        "WHERE uscc IN ('U8', 'U9') ORDER BY uscc"
    ).fetchall()
    con.close()
    assert got == [
        (5000.0, 60, fp_capital.hi_units, 50),
        (-1.0, 51, fp_capital.lo_units, 50),
    ]
    assert fp_capital.lo_units == 0 and fp_capital.hi_units == 1000 * 2**fp_capital.scale


def test_temp_disk_budget_too_small_is_refused_before_writing(
    product: DataProduct, tmp_path: Path
) -> None:
    src = write(tmp_path, GOOD + "".join(f"X{i},A,1,1,2020-01-01,true\n" for i in range(5000)))
    dest = tmp_path / "out" / "v1.duckdb"
    with pytest.raises(TooLarge) as exc:
        load_file(product, src, DataFormat.CSV, dest, limits=LoadLimits(temp_disk_limit=1000))
    assert exc.value.code == "too_large" and exc.value.details["rule"] == "temp_disk_limit"
    assert "temporary disk" in exc.value.message
    assert list(dest.parent.iterdir()) == []  # nothing half-written, no lock, no temp


def test_temp_disk_budget_exceeded_during_the_load_stops_it(tmp_path: Path) -> None:
    """The estimate passes, the real staging does not: the watcher stops the load."""
    m = parse_manifest(
        {
            "id": "people",
            "title": "People",
            "privacy_unit": "pid",
            "max_rows_per_unit": 2,
            "columns": [
                {"name": "pid", "type": "string", "classification": "identifier"},
                {"name": "note", "type": "string", "classification": "attribute"},
            ],
        }
    )
    src = tmp_path / "rows.parquet"
    duckdb.execute(
        f"COPY (SELECT 'P' || (range // 2) AS pid, md5(range::VARCHAR) || md5((range + 1)::VARCHAR)"
        f" AS note FROM range(200000)) TO '{src}' (FORMAT parquet, COMPRESSION uncompressed)"
    )
    dest = tmp_path / "out" / "v1.duckdb"
    budget = src.stat().st_size * 2  # above the estimate, below what zstd needs here
    with pytest.raises(TooLarge) as exc:
        load_file(
            m,
            src,
            DataFormat.PARQUET,
            dest,
            limits=LoadLimits(temp_disk_limit=budget // 8, rows_per_bucket=20_000),
        )
    assert exc.value.details["rule"] == "temp_disk_limit"
    assert list(dest.parent.iterdir()) == [] if dest.parent.exists() else True


def test_format_from_name() -> None:
    assert DataFormat.from_name("x.csv") is DataFormat.CSV
    assert DataFormat.from_name("application/vnd.apache.parquet") is DataFormat.PARQUET
    with pytest.raises(InvalidRequest):
        DataFormat.from_name("rows.xlsx")


def test_unit_rank_is_a_uniform_choice_independent_of_row_position(tmp_path: Path) -> None:
    """Bounding keeps rank 1: each of a unit's rows must be rank 1 equally often,
    wherever the unit sits in the file (a position-keyed hash fails this)."""
    m = parse_manifest(
        {
            "id": "t",
            "title": "T",
            "privacy_unit": "u",
            "max_rows_per_unit": 1,
            "columns": [
                {"name": "u", "type": "string", "classification": "identifier"},
                {"name": "r", "type": "integer", "classification": "sensitive", "bounds": [0, 2]},
            ],
        }
    )
    # 4000 units of 3 rows, written at every offset modulo 3 by a one-row unit in front.
    rows = "u,r\nlead,0\n" + "".join(f"U{i},{j}\n" for i in range(4000) for j in range(3))
    src = write(tmp_path, rows)
    dest = tmp_path / "v.duckdb"
    load_file(m, src, DataFormat.CSV, dest)
    con = duckdb.connect(str(dest), read_only=True)
    counts = dict(
        con.execute(
            "SELECT r, count(*) FROM t WHERE _unit_rank = 1 AND u <> 'lead' GROUP BY r"
        ).fetchall()
    )
    con.close()
    # Binomial(4000, 1/3): sd ≈ 29.8; 8 sd bounds cannot flake.
    assert all(abs(counts[r] - 4000 / 3) < 240 for r in range(3)), counts


# --- unit-hash buckets: exact per-unit bounding without a global sort ---------------

UNITS_MANIFEST: dict[str, Any] = {
    "id": "t",
    "title": "T",
    "privacy_unit": "u",
    "max_rows_per_unit": 2,
    "columns": [
        {"name": "u", "type": "string", "classification": "identifier"},
        {"name": "r", "type": "integer", "classification": "sensitive", "bounds": [0, 1000]},
    ],
}


@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=60),
    k=st.integers(min_value=1, max_value=3),
    per_bucket=st.sampled_from([1, 7, 50, 0]),
)
def test_bucketed_ranks_are_a_permutation_of_each_units_rows(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], k: int, per_bucket: int
) -> None:
    """Whatever the bucketing, every unit's ranks are exactly 1..n over its own rows,
    so ``_unit_rank <= k`` keeps min(n, k) rows of each unit — the reference
    computation of DESIGN §8's bounding — and every unit sits in one bucket; within
    a bucket the kept rows come first."""
    tmp = tmp_path_factory.mktemp("b")
    manifest = parse_manifest({**UNITS_MANIFEST, "max_rows_per_unit": k})
    rows = [(f"unit-{i}", i * 10 + j) for i, n in enumerate(sizes) for j in range(n)]
    text = "u,r\n" + "".join(f"{u},{r}\n" for u, r in rows)
    dest = tmp / "v.duckdb"
    result = load_file(
        manifest, write(tmp, text), DataFormat.CSV, dest,
        limits=LoadLimits(rows_per_bucket=per_bucket),
    )  # fmt: skip
    assert result.row_count == len(rows) and result.units == len(sizes)
    con = duckdb.connect(str(dest), read_only=True)
    stored = con.execute("SELECT u, r, _unit_rank, _bucket, rowid FROM t ORDER BY rowid").fetchall()
    con.close()
    assert sorted((u, r) for u, r, *_ in stored) == sorted(rows)
    ranks: dict[str, list[int]] = defaultdict(list)
    buckets: dict[str, set[int]] = defaultdict(set)
    for u, _, rank, bucket, _ in stored:
        ranks[u].append(rank)
        buckets[u].add(bucket)
    for i, n in enumerate(sizes):
        assert sorted(ranks[f"unit-{i}"]) == list(range(1, n + 1))
        assert len(buckets[f"unit-{i}"]) == 1
    kept = sum(1 for *_, rank, _, _ in stored if rank <= k)
    assert kept == sum(min(n, k) for n in sizes)
    seen_buckets = [b for *_, b, _ in stored]
    assert seen_buckets == sorted(seen_buckets)  # stored bucket by bucket
    for b in set(seen_buckets):
        in_bucket = [rank <= k for _, _, rank, bb, _ in stored if bb == b]
        assert in_bucket == sorted(in_bucket, reverse=True)  # kept rows first


def test_bucketed_choice_is_uniform_within_each_unit(tmp_path: Path) -> None:
    """As test_unit_rank_is_a_uniform_choice..., through many buckets."""
    m = parse_manifest({**UNITS_MANIFEST, "max_rows_per_unit": 1})
    rows = "u,r\n" + "".join(f"U{i},{j}\n" for i in range(3000) for j in range(3))
    dest = tmp_path / "v.duckdb"
    result = load_file(
        m, write(tmp_path, rows), DataFormat.CSV, dest, limits=LoadLimits(rows_per_bucket=500)
    )
    assert result.buckets >= 16
    con = duckdb.connect(str(dest), read_only=True)
    counts = dict(
        con.execute("SELECT r, count(*) FROM t WHERE _unit_rank = 1 GROUP BY r").fetchall()
    )
    con.close()
    # Binomial(3000, 1/3): sd ≈ 25.8; 8 sd bounds cannot flake.
    assert all(abs(counts[r] - 1000) < 207 for r in range(3)), counts


# --- a load killed with SIGKILL ---------------------------------------------------------

KILLED_LOAD = """
import sys
from pathlib import Path
from products.loader import DataFormat, LoadLimits, load_file
from products.manifest import parse_manifest
import json
m = parse_manifest(json.loads(sys.argv[1]))

def progress(stage, fraction, info):
    print(stage, fraction, flush=True)

load_file(m, Path(sys.argv[2]), DataFormat.PARQUET, Path(sys.argv[3]),
          limits=LoadLimits(threads=1, rows_per_bucket=20_000), progress=progress)
print("finished", flush=True)
"""


def test_a_load_killed_halfway_leaves_the_previous_version_and_the_next_load_works(
    tmp_path: Path,
) -> None:
    import json

    manifest = UNITS_MANIFEST
    m = parse_manifest(manifest)
    versions = tmp_path / "products" / "t"
    v1 = versions / "v1.duckdb"
    load_file(m, write(tmp_path, "u,r\nA,1\nA,2\nB,3\n"), DataFormat.CSV, v1)
    big = tmp_path / "big.parquet"
    duckdb.execute(
        f"COPY (SELECT 'U' || (range // 3) AS u, (range % 1000)::BIGINT AS r "
        f"FROM range(600000)) TO '{big}' (FORMAT parquet)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_LOAD), json.dumps(manifest), str(big),
         str(versions / "v2.duckdb")],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # halfway: once it has written some buckets
        stage, fraction = line.split()[0], float(line.split()[1] if len(line.split()) > 1 else 0)
        if stage == "writing" and fraction > 0.2:
            break
        assert stage != "finished", "the load ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert not (versions / "v2.duckdb").exists()
    leftovers = sorted(p.name for p in versions.iterdir())
    assert "v2.duckdb.partial" in leftovers  # what SIGKILL leaves behind ...
    con = duckdb.connect(str(v1), read_only=True)  # ... while v1 still answers
    assert con.execute("SELECT count(*), sum(r) FROM t").fetchone() == (3, 6)
    con.close()
    v3 = versions / "v3.duckdb"
    result = load_file(m, big, DataFormat.PARQUET, v3, limits=LoadLimits(rows_per_bucket=50_000))
    assert result.row_count == 600_000 and result.units == 200_000
    assert sorted(p.name for p in versions.iterdir()) == ["v1.duckdb", "v3.duckdb"]
    assert not any(p.name.endswith(".loading") for p in versions.parent.iterdir())
