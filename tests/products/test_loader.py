"""Loading rows: typed, bounded, all-or-nothing, reported by line number without values."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from products.errors import InvalidRequest
from products.loader import DataFormat, load_file, sha256_file
from products.manifest import DataProduct, parse_manifest


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
        "_unit_key": "UBIGINT",
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
        ("U9,A,10,51,2020-01-01,true", "staff", "outside bounds"),
        ("U9,A,-1,5,2020-01-01,true", "capital", "outside bounds"),
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
        progress=lambda stage, f: seen.append(stage),
    )
    assert [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s] == [
        "hashing",
        "reading",
        "checking",
        "writing",
        "done",
    ]


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
