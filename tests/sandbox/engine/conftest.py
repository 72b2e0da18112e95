"""Fixtures for the engine: product files that follow the data-plane contract.

A product version is a DuckDB file with one table named after the product, one typed
column per manifest column and ``_unit_rank``: a random permutation rank of each
unit's rows, fixed at load (the loader's contract). Tests build such files directly
with DuckDB here; the real PUMS sample is read from the shared datasets directory
(``SANDBOX_SHARED_DIR``, default ``<repo>/../shared``) and never copied into the repo.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest

from products.manifest import ColumnType, DataProduct, parse_manifest
from sandbox.engine.isolation import EngineLimits, UnsafeInProcessRunner, WorkerPool

REPO = Path(__file__).resolve().parents[3]
DUCKDB_TYPES = {
    ColumnType.STRING: "VARCHAR",
    ColumnType.INTEGER: "BIGINT",
    ColumnType.FLOAT: "DOUBLE",
    ColumnType.BOOLEAN: "BOOLEAN",
    ColumnType.DATE: "DATE",
}
LIMITS = EngineLimits(timeout_s=20.0, memory_limit="512MB", threads=1)


def shared_dir() -> Path:
    return Path(os.environ.get("SANDBOX_SHARED_DIR", REPO.parent / "shared"))


def build_from_select(path: Path, product: DataProduct, select_sql: str, seed: int = 7) -> Path:
    """Write ``path``: the product table from ``select_sql`` (columns in manifest order,
    named as in the manifest), typed per the manifest, plus ``_unit_rank``."""
    typed = ", ".join(
        f'CAST("{c.name}" AS {DUCKDB_TYPES[c.type]}) AS "{c.name}"' for c in product.columns
    )
    unit = product.privacy_unit
    con = duckdb.connect(str(path))
    try:
        con.execute(f"CREATE TEMP TABLE staged AS SELECT {typed} FROM ({select_sql})")
        con.execute(
            f'CREATE TABLE "{product.id}" AS SELECT *, (row_number() OVER '
            f'(PARTITION BY "{unit}" ORDER BY hash(rowid, {seed})))::INTEGER AS _unit_rank '
            "FROM staged"
        )
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return path


def build_from_rows(
    path: Path, product: DataProduct, rows: Sequence[Sequence[Any]], seed: int = 7
) -> Path:
    """Write ``path`` from Python rows (in manifest column order)."""
    names = [c.name for c in product.columns]
    con = duckdb.connect()
    try:
        cols = ", ".join(
            f'"{n}" {DUCKDB_TYPES[c.type]}' for n, c in zip(names, product.columns, strict=True)
        )
        con.execute(f"CREATE TABLE src ({cols})")
        if rows:
            marks = ", ".join("?" for _ in names)
            con.executemany(f"INSERT INTO src VALUES ({marks})", [list(r) for r in rows])
        data = con.execute("SELECT * FROM src").fetchall()
    finally:
        con.close()
    if not data:
        select = "SELECT " + ", ".join(f'NULL AS "{n}"' for n in names) + " WHERE FALSE"
    else:
        values = ", ".join("(" + ", ".join(_sql_literal(v) for v in row) + ")" for row in data)
        quoted = ", ".join(f'"{n}"' for n in names)
        select = f"SELECT * FROM (VALUES {values}) AS v({quoted})"
    return build_from_select(path, product, select, seed)


def _sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if hasattr(value, "isoformat"):
        return f"DATE '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def table_rows(path: Path, product: DataProduct) -> list[dict[str, Any]]:
    """Return every stored row (with ``_unit_rank``) for computing truths in Python."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        cur = con.execute(f'SELECT * FROM "{product.id}"')
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


PUMS_COLUMNS: list[dict[str, Any]] = [
    {"name": "age", "type": "integer", "classification": "attribute", "bounds": [0, 100],
     "bins": [0, 20, 30, 40, 50, 60, 70, 100], "nullable": False},
    {"name": "sex", "type": "integer", "classification": "attribute", "public_values": [0, 1],
     "bounds": [0, 1], "nullable": False},
    {"name": "educ", "type": "integer", "classification": "attribute",
     "public_values": list(range(1, 17)), "bounds": [1, 16], "nullable": False},
    {"name": "race", "type": "integer", "classification": "attribute",
     "public_values": [1, 2, 3, 4, 5, 6], "bounds": [1, 6], "nullable": False},
    {"name": "income", "type": "integer", "classification": "sensitive",
     "bounds": [0, 500000], "bins": [0, 10000, 25000, 50000, 100000, 500000],
     "nullable": False},
    {"name": "married", "type": "integer", "classification": "attribute",
     "public_values": [0, 1], "bounds": [0, 1], "nullable": False},
    {"name": "pid", "type": "integer", "classification": "identifier", "nullable": False},
]  # fmt: skip
PUMS_ALLOWED = frozenset({"age", "sex", "educ", "race", "income", "married"})


def pums_manifest(*, product_id: str = "pums", k: int = 2, **extra: Any) -> DataProduct:
    columns = [dict(c) for c in PUMS_COLUMNS]
    if product_id == "pums_f":  # income as a float column
        for c in columns:
            if c["name"] == "income":
                c["type"] = "float"
    return parse_manifest(
        {"id": product_id, "title": "PUMS sample", "privacy_unit": "pid",
         "max_rows_per_unit": k, "columns": columns, **extra}
    )  # fmt: skip


def _pums_csv(name: str) -> Path:
    path = shared_dir() / "datasets" / "pums" / name
    if not path.is_file():
        pytest.skip(
            f"PUMS data not found at {path}: set SANDBOX_SHARED_DIR to the shared directory "
            "holding datasets/pums"
        )
    return path


@pytest.fixture(scope="session")
def pums_product() -> DataProduct:
    return pums_manifest()


@pytest.fixture(scope="session")
def pums_db(tmp_path_factory: pytest.TempPathFactory, pums_product: DataProduct) -> Path:
    """PUMS_dup (person ids repeated 1-4 times) as product ``pums``, k = 2."""
    csv = _pums_csv("PUMS_dup.csv")
    path = tmp_path_factory.mktemp("pums") / "pums.duckdb"
    return build_from_select(path, pums_product, f"SELECT * FROM read_csv('{csv}')")


@pytest.fixture(scope="session")
def pums_f_product() -> DataProduct:
    return pums_manifest(product_id="pums_f")


@pytest.fixture(scope="session")
def pums_f_db(tmp_path_factory: pytest.TempPathFactory, pums_f_product: DataProduct) -> Path:
    """PUMS_dup with income as DOUBLE (plus a fractional part), as product ``pums_f``."""
    csv = _pums_csv("PUMS_dup.csv")
    path = tmp_path_factory.mktemp("pums_f") / "pums_f.duckdb"
    select = (
        "SELECT age, sex, educ, race, income + (pid % 7) / 8.0 AS income, married, pid "
        f"FROM read_csv('{csv}')"
    )
    return build_from_select(path, pums_f_product, select)


@pytest.fixture(scope="session")
def runner() -> Iterator[UnsafeInProcessRunner]:
    yield UnsafeInProcessRunner()


@pytest.fixture(scope="session")
def pool() -> Iterator[WorkerPool]:
    workers = WorkerPool(size=2, grace_s=5.0)
    yield workers
    workers.close()


@pytest.fixture(scope="session")
def limits() -> EngineLimits:
    return LIMITS
