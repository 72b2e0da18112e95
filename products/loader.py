"""Loading CSV or Parquet rows into a product version's DuckDB file.

The file is streamed by DuckDB (bounded memory: ``memory_limit`` plus spilling to a
temp directory), checked row by row against the manifest, and written to a fresh
file; nothing is written to the destination unless every row is valid. Rejections
are reported by line number and column with the rule broken, never with the value.

The written file follows the data-plane contract the query engine relies on: one
table named after the product, one typed column per manifest column, plus
``_unit_rank``: a random permutation rank of each privacy unit's rows, fixed at
load, so that contribution bounding is the cheap filter ``_unit_rank <= k``, and
``_unit_key``: ``md5_number_upper`` of the unit as text, the order of rows within a
rank, which keyed lookups (verification) filter on to read a single row group.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import duckdb

from products.errors import InvalidRequest
from products.manifest import Column, ColumnType, DataProduct

Progress = Callable[[str, float], None]
MAX_REPORTED_REJECTIONS = 20

DUCKDB_TYPES = {
    ColumnType.STRING: "VARCHAR",
    ColumnType.INTEGER: "BIGINT",
    ColumnType.FLOAT: "DOUBLE",
    ColumnType.BOOLEAN: "BOOLEAN",
    ColumnType.DATE: "DATE",
}


class DataFormat(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"

    @classmethod
    def from_name(cls, name: str) -> DataFormat:
        """Guess the format from a file name or a media type. Raises ``InvalidRequest``."""
        lowered = name.lower()
        # A file's extension decides first ("export_parquet.csv" is CSV); the media
        # types of uploads (text/csv, application/vnd.apache.parquet) next.
        if lowered.endswith((".parquet", ".pq")):
            return cls.PARQUET
        if lowered.endswith((".csv", ".csv.gz")):
            return cls.CSV
        if "parquet" in lowered:
            return cls.PARQUET
        if "csv" in lowered:
            return cls.CSV
        raise InvalidRequest(
            f"cannot tell the data format of {name!r}: use CSV (text/csv) or Parquet "
            "(application/vnd.apache.parquet)"
        )


@dataclass(frozen=True)
class Rejection:
    line: int  # 1-based line of the record in the file (header is line 1 for CSV)
    column: str
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "column": self.column, "rule": self.rule}


@dataclass(frozen=True)
class LoadResult:
    row_count: int
    content_hash: str  # hex SHA-256 of the uploaded file's bytes
    units: int = 0
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadLimits:
    memory_limit: str = "2GB"
    threads: int = 2


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _typed_expr(col: Column, raw: str) -> str:
    """SQL turning the staged value ``raw`` into the column's type (NULL if not parsable)."""
    t = col.type
    if t is ColumnType.STRING:
        return raw
    if t is ColumnType.INTEGER:
        # TRY_CAST('1.5' AS BIGINT) rounds; an integer column must hold integers.
        return (
            f"CASE WHEN regexp_full_match(trim({raw}::VARCHAR), '[+-]?[0-9]{{1,18}}') "
            f"THEN TRY_CAST(trim({raw}::VARCHAR) AS BIGINT) END"
        )
    if t is ColumnType.FLOAT:
        return f"CASE WHEN isfinite(TRY_CAST({raw} AS DOUBLE)) THEN TRY_CAST({raw} AS DOUBLE) END"
    if t is ColumnType.BOOLEAN:
        return f"TRY_CAST({raw} AS BOOLEAN)"
    return (
        f"CASE WHEN regexp_full_match(trim({raw}::VARCHAR), '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') "
        f"THEN TRY_CAST(trim({raw}::VARCHAR) AS DATE) END"
    )


def _violation_expr(col: Column, raw: str, unit: str) -> str:
    """SQL yielding the name of the first rule the staged value breaks, else NULL."""
    typed = _typed_expr(col, raw)
    cases = []
    if not col.nullable or col.name == unit:
        cases.append(f"WHEN {raw} IS NULL THEN 'missing value (column is not nullable)'")
    cases.append(f"WHEN {raw} IS NULL THEN NULL")
    cases.append(f"WHEN ({typed}) IS NULL THEN 'not a valid {col.type.value}'")
    if col.bounds is not None:
        lo, hi = col.bounds
        cases.append(
            f"WHEN ({typed}) < {_literal(lo)} OR ({typed}) > {_literal(hi)} "
            f"THEN 'outside bounds [{lo}, {hi}]'"
        )
    if col.public_values is not None:
        values = ", ".join(_literal(v) for v in col.public_values)
        if col.type is ColumnType.DATE:
            values = ", ".join(f"DATE {_literal(v)}" for v in col.public_values)
        cases.append(f"WHEN ({typed}) NOT IN ({values}) THEN 'not one of public_values'")
    return "CASE " + " ".join(cases) + " END"


class _ProgressPoller:
    """Reports DuckDB's own progress of the running statement from a side thread."""

    def __init__(self, con: duckdb.DuckDBPyConnection, progress: Progress | None) -> None:
        self._con = con
        self._progress = progress
        self._stop = threading.Event()
        self._stage = ""
        self._thread: threading.Thread | None = None

    def stage(self, name: str) -> None:
        self._stage = name
        if self._progress:
            self._progress(name, 0.0)

    def __enter__(self) -> _ProgressPoller:
        if self._progress:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        assert self._progress is not None
        while not self._stop.wait(0.2):
            try:
                pct = float(self._con.query_progress())
            except duckdb.Error:
                continue
            if pct >= 0:
                self._progress(self._stage, min(pct, 100.0) / 100.0)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


def load_file(
    manifest: DataProduct,
    source: Path,
    fmt: DataFormat,
    dest: Path,
    *,
    limits: LoadLimits = LoadLimits(),
    progress: Progress | None = None,
) -> LoadResult:
    """Validate ``source`` against ``manifest`` and write the product file to ``dest``.

    Returns the row count and content hash. Raises ``InvalidRequest`` (with
    ``details.rejected`` and ``details.first_rejections``) when any row breaks the
    manifest; then ``dest`` is not created.
    """
    if not source.is_file():
        raise InvalidRequest(f"data file {str(source)!r} does not exist")
    work = dest.with_name(dest.name + ".partial")
    spill = dest.with_name(dest.name + ".tmpdir")
    for leftover in (work, Path(str(work) + ".wal")):
        leftover.unlink(missing_ok=True)
    try:
        if progress:
            progress("hashing", 0.0)
        content_hash = sha256_file(source)
        if progress:
            progress("hashing", 1.0)
        con = duckdb.connect(str(work))
        try:
            con.execute(f"SET memory_limit = {_literal(limits.memory_limit)}")
            con.execute(f"SET threads = {int(limits.threads)}")
            con.execute(f"SET temp_directory = {_literal(str(spill))}")
            con.execute("SET preserve_insertion_order = true")
            with _ProgressPoller(con, progress) as poller:
                poller.stage("reading")
                _stage_rows(con, manifest, source, fmt)
                poller.stage("checking")
                _check_rows(con, manifest)
                poller.stage("writing")
                row_count, units = _write_table(con, manifest)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        _fsync(work)
        os.replace(work, dest)
        _fsync_dir(dest.parent)
        if progress:
            progress("done", 1.0)
        return LoadResult(row_count=row_count, content_hash=content_hash, units=units)
    except duckdb.Error as exc:
        raise InvalidRequest(
            f"the {fmt.value} data could not be read: {_first_line(str(exc))}"
        ) from None
    finally:
        for leftover in (work, Path(str(work) + ".wal")):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(spill, ignore_errors=True)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else "unknown error"


def _stage_rows(
    con: duckdb.DuckDBPyConnection, manifest: DataProduct, source: Path, fmt: DataFormat
) -> None:
    if fmt is DataFormat.CSV:
        reader = (
            f"read_csv({_literal(str(source))}, header = true, all_varchar = true, "
            "auto_detect = true, strict_mode = true, null_padding = false)"
        )
    else:
        reader = f"read_parquet({_literal(str(source))})"
    found = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()]
    expected = list(manifest.column_names)
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if missing or extra:
        raise InvalidRequest(
            "the data's columns do not match the manifest",
            {"missing_columns": missing, "unexpected_columns": extra},
        )
    cols = ", ".join(_quote(c) for c in expected)
    # TEMP: the staging copy must not leave freed blocks behind in the product file.
    con.execute(f"CREATE TEMP TABLE staged AS SELECT {cols} FROM {reader}")


def _check_rows(con: duckdb.DuckDBPyConnection, manifest: DataProduct) -> None:
    unit = manifest.privacy_unit
    checks = [
        f"({_violation_expr(c, _quote(c.name), unit)}) AS {_quote(c.name)}"
        for c in manifest.columns
    ]
    any_bad = " OR ".join(f"{_quote(c.name)} IS NOT NULL" for c in manifest.columns)
    # Line numbers: rowid is the record's ordinal in the file (insertion order is
    # preserved); +2 accounts for the CSV header and 1-based lines.
    con.execute(
        f"CREATE TEMP TABLE violations AS SELECT * FROM "
        f"(SELECT rowid + 2 AS line, {', '.join(checks)} FROM staged) WHERE {any_bad}"
    )
    rejected = con.execute("SELECT count(*) FROM violations").fetchone()
    n_bad = int(rejected[0]) if rejected else 0
    if n_bad:
        first = con.execute(
            f"SELECT * FROM violations ORDER BY line LIMIT {MAX_REPORTED_REJECTIONS}"
        ).fetchall()
        names = [d[0] for d in con.description or []]
        report: list[Rejection] = []
        for row in first:
            for name, rule in zip(names[1:], row[1:], strict=True):
                if rule is not None:
                    report.append(Rejection(int(row[0]), name, str(rule)))
        raise InvalidRequest(
            f"{n_bad} row(s) break the manifest; nothing was loaded",
            {
                "rejected": n_bad,
                "first_rejections": [r.to_dict() for r in report[:MAX_REPORTED_REJECTIONS]],
            },
        )
    for key in manifest.unique:
        cols = ", ".join(_quote(k) for k in key)
        dup = con.execute(
            f"SELECT count(*) FROM (SELECT {cols} FROM staged GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()
        if dup and dup[0]:
            raise InvalidRequest(
                f"{dup[0]} value(s) of the declared unique key ({', '.join(key)}) repeat; "
                "nothing was loaded",
                {"unique": list(key), "duplicated_keys": int(dup[0])},
            )


def _write_table(con: duckdb.DuckDBPyConnection, manifest: DataProduct) -> tuple[int, int]:
    select = ", ".join(
        f"({_typed_expr(c, _quote(c.name))})::{DUCKDB_TYPES[c.type]} AS {_quote(c.name)}"
        for c in manifest.columns
    )
    unit = _quote(manifest.privacy_unit)
    table = _quote(manifest.id)
    # Each row draws an independent uniform number, materialised in a subquery (DuckDB
    # refuses a volatile window ORDER BY); ranking a unit's rows by it is a uniformly
    # random permutation that depends on nothing but that unit's own draws, so removing
    # one unit changes no other unit's selection. (A hash of the row position would
    # not be uniform, and would shift when rows before it are removed.)
    # Rows are stored in (_unit_rank, unit) order: contribution bounding
    # (_unit_rank <= k) then skips whole row groups, and keyed verification lookups
    # on the unit read one row group per rank (min/max statistics), measured in
    # docs/engine.md and docs/verification.md.
    # ``_unit_key`` (a stable 64-bit hash of the unit: md5, not DuckDB's hash(), which
    # may change between releases) is what rows are ordered by within a rank: string
    # zone maps keep only an 8-byte prefix, useless for codes sharing a region prefix,
    # whereas integer min/max lets a keyed lookup read one row group.
    unit_col = next(c for c in manifest.columns if c.name == manifest.privacy_unit)
    unit_typed = f"({_typed_expr(unit_col, unit)})::{DUCKDB_TYPES[unit_col.type]}"
    con.execute(
        f"CREATE TABLE {table} AS SELECT * EXCLUDE (_draw) FROM (SELECT {select}, _draw, "
        f"(row_number() OVER (PARTITION BY {unit} ORDER BY _draw))::INTEGER AS _unit_rank, "
        f"md5_number_upper(CAST({unit_typed} AS VARCHAR)) AS _unit_key "
        f"FROM (SELECT *, random() AS _draw FROM staged)) ORDER BY _unit_rank, _unit_key"
    )
    con.execute("DROP TABLE staged")
    counts = con.execute(f"SELECT count(*), count(DISTINCT {unit}) FROM {table}").fetchone()
    assert counts is not None
    return int(counts[0]), int(counts[1])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
