"""Loading CSV or Parquet rows into a product version's DuckDB file (layout 2).

The load is linear in the data and bounded in memory and temporary disk:

1. **Read** (one streaming pass, DuckDB's threads): every row is typed and checked
   against the manifest (types, missing values, public values, the check characters
   of columns declaring a ``format``: ``products.check_characters``), and its bounded
   numeric values are also stored as clipped fixed-point integers
   (``products.layout``). Values outside a column's bounds are not refused: bounds
   are clipping bounds (DESIGN §8), and the load reports how many values each column
   will have clipped.
2. **Rank.** When the privacy unit is a declared unique key (one row per unit, as in
   a registry), every row gets rank 1 in that same pass and a second read proves the
   unit unique. Otherwise the read writes each row to a staging Parquet partition
   chosen by the top bits of a 64-bit hash of its unit (its *bucket*); a bucket holds
   every row of its units and fits in memory, so each unit's rows get a uniformly
   random rank there (``_unit_rank``), declared unique keys that contain the unit are
   checked there, and the bucket is appended to the product table with the rows that
   bounding keeps first. No step sorts the whole data set.

Nothing is written to the destination unless every row is valid: the table is built
in ``<dest>.partial`` and renamed into place after an fsync. A load that fails,
exceeds its temporary-disk budget or is killed (even with SIGKILL) leaves no file
under the destination name; its leftovers are removed by the next load in the same
directory (each load holds a lock on ``<dest>.lock`` while it runs, so a live load's
files are never touched). Rejections are reported by line number and column with the
rule broken, never with the value.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import duckdb

from products.check_characters import check_character_rules
from products.errors import InvalidRequest, StorageUnavailable, TooLarge
from products.layout import BUCKET, UNIT_RANK, FixedPoint, fixed_point, layout_comment
from products.manifest import Column, ColumnType, DataProduct

MAX_REPORTED_REJECTIONS = 20
# Temporary tables of the write pass ('$' cannot occur in a product id).
_ROWS = '"load$rows"'
_RANKED = '"load$ranked"'
_BAD_ROW = "sandbox-loader: a row breaks the manifest"
MAX_BUCKET_BITS = 12  # at most 4096 buckets
TEMP_RESERVE_BYTES = 1 << 30  # free space left to others when no budget is configured

DUCKDB_TYPES = {
    ColumnType.STRING: "VARCHAR",
    ColumnType.INTEGER: "BIGINT",
    ColumnType.FLOAT: "DOUBLE",
    ColumnType.BOOLEAN: "BOOLEAN",
    ColumnType.DATE: "DATE",
}
_INTEGER_SOURCES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT"}
_INTEGER_SOURCES |= {"UINTEGER", "UBIGINT", "HUGEINT", "UHUGEINT"}
_FLOAT_SOURCES = {"DOUBLE", "FLOAT", *_INTEGER_SOURCES}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)?\s*\Z", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """Return the bytes of a size such as ``"2GB"``, ``"512MiB"`` or ``"1000"``.

    Raises ``InvalidRequest``.
    """
    m = _SIZE.match(text)
    if not m:
        raise InvalidRequest(f"{text!r} is not a size (e.g. 512MB, 2GB, 100GiB)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "B").upper()])


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
    """What a successful load wrote.

    ``clipped`` maps every bounded numeric column to ``{"below": n, "above": m}``: how
    many of its values lie outside the manifest bounds and will be clipped to them in
    sums and averages (DESIGN §8; they are stored unchanged for WHERE and verification).
    ``peak_temp_bytes`` is the most temporary disk the load used at once (staging and
    spill, not the product file), ``buckets`` the number of unit-hash buckets, and
    ``timings`` the seconds of each stage.
    """

    row_count: int
    content_hash: str  # hex SHA-256 of the uploaded file's bytes
    units: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    clipped: dict[str, dict[str, int]] = field(default_factory=dict)
    peak_temp_bytes: int = 0
    buckets: int = 0
    layout: int = 2


@dataclass(frozen=True)
class LoadLimits:
    """Resources of one load.

    ``temp_disk_limit`` (bytes) bounds the staging files and DuckDB's spill together;
    None allows the free space of the temporary directory's file system less 1 GiB.
    ``temp_dir`` is where they go (default: beside the destination); it need not be on
    the destination's file system (e.g. local disk while products live on shared
    storage). ``rows_per_bucket`` 0 derives the bucket size from ``memory_limit``.
    """

    memory_limit: str = "2GB"
    threads: int = 2
    temp_disk_limit: int | None = None
    temp_dir: Path | None = None
    rows_per_bucket: int = 0


@dataclass(frozen=True)
class LoadProgress:
    """Where a load is: the third argument of every progress callback."""

    stage: str
    fraction: float  # of this stage
    rows: int  # rows through this stage so far (estimated while reading)
    rows_total: int  # rows in the file (estimated for CSV until read)
    rows_per_s: float  # over this stage so far
    eta_s: float | None  # estimated seconds until the whole load is done


Progress = Callable[[str, float, LoadProgress], None]


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


def _double(value: float) -> str:
    return f"CAST({_literal(repr(float(value)))} AS DOUBLE)"


def _typed_expr(col: Column, raw: str, source_type: str = "VARCHAR") -> str:
    """SQL turning the source value ``raw`` into the column's type (NULL if not parsable)."""
    t = col.type
    src = source_type.upper()
    if t is ColumnType.STRING:
        return raw if src == "VARCHAR" else f"CAST({raw} AS VARCHAR)"
    if t is ColumnType.INTEGER:
        if src in _INTEGER_SOURCES:
            return f"TRY_CAST({raw} AS BIGINT)"
        # TRY_CAST('1.5' AS BIGINT) rounds; an integer column must hold integers.
        return (
            f"CASE WHEN regexp_full_match(trim({raw}::VARCHAR), '[+-]?[0-9]{{1,18}}') "
            f"THEN TRY_CAST(trim({raw}::VARCHAR) AS BIGINT) END"
        )
    if t is ColumnType.FLOAT:
        if src in _FLOAT_SOURCES:
            return f"CASE WHEN isfinite({raw}::DOUBLE) THEN {raw}::DOUBLE END"
        return f"CASE WHEN isfinite(TRY_CAST({raw} AS DOUBLE)) THEN TRY_CAST({raw} AS DOUBLE) END"
    if t is ColumnType.BOOLEAN:
        return raw if src == "BOOLEAN" else f"TRY_CAST({raw} AS BOOLEAN)"
    if src == "DATE":
        return raw
    return (
        f"CASE WHEN regexp_full_match(trim({raw}::VARCHAR), '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') "
        f"THEN TRY_CAST(trim({raw}::VARCHAR) AS DATE) END"
    )


def _exact_type(col: Column, source_type: str) -> bool:
    """True when every non-NULL source value converts (so no type check is needed)."""
    src = source_type.upper()
    return (
        (col.type is ColumnType.STRING and src == "VARCHAR")
        or (col.type is ColumnType.BOOLEAN and src == "BOOLEAN")
        or (col.type is ColumnType.DATE and src == "DATE")
        or (col.type is ColumnType.INTEGER and src in _INTEGER_SOURCES - {"UBIGINT", "HUGEINT"})
    )


def _rules(col: Column, raw: str, source_type: str, unit: str) -> list[tuple[str, str | None]]:
    """The checks of one value, in order: (condition SQL, rule broken or None = valid)."""
    typed = _typed_expr(col, raw, source_type)
    rules: list[tuple[str, str | None]] = []
    if not col.nullable or col.name == unit:
        rules.append((f"{raw} IS NULL", "missing value (column is not nullable)"))
    rules.append((f"{raw} IS NULL", None))
    if not _exact_type(col, source_type):
        rules.append((f"({typed}) IS NULL", f"not a valid {col.type.value}"))
    if col.public_values is not None:
        values = ", ".join(_literal(v) for v in col.public_values)
        if col.type is ColumnType.DATE:
            values = ", ".join(f"DATE {_literal(v)}" for v in col.public_values)
        rules.append((f"({typed}) NOT IN ({values})", "not one of public_values"))
    if col.format is not None and col.type is ColumnType.STRING:
        rules.extend(check_character_rules(col.format, f"({typed})"))
    return rules


def _violation_expr(col: Column, raw: str, source_type: str, unit: str) -> str:
    """SQL yielding the first rule the value breaks, else NULL."""
    whens = " ".join(
        f"WHEN {cond} THEN {'NULL' if rule is None else _literal(rule)}"
        for cond, rule in _rules(col, raw, source_type, unit)
    )
    return f"CASE {whens} END"


def _bad_expr(col: Column, raw: str, source_type: str, unit: str) -> str | None:
    """SQL true when the value breaks a rule (the same rules as ``_violation_expr``)."""
    rules = _rules(col, raw, source_type, unit)
    if all(rule is None for _, rule in rules):
        return None
    return f"COALESCE(({_violation_expr(col, raw, source_type, unit)}) IS NOT NULL, FALSE)"


def clip_sql(value: str, lo: str, hi: str) -> str:
    """NULL-safe clipping, the in-bounds case first (as the planner writes it)."""
    return (
        f"CASE WHEN {value} BETWEEN {lo} AND {hi} THEN {value} "
        f"WHEN {value} < {lo} THEN {lo} WHEN {value} > {hi} THEN {hi} END"
    )


def fixed_point_sql(fp: FixedPoint, value: str) -> str:
    """SQL of the stored fixed-point integer of ``value`` (see ``FixedPoint``)."""
    if fp.integer:
        return clip_sql(value, _literal(int(fp.lo)), _literal(int(fp.hi)))
    clipped = clip_sql(value, _double(fp.lo), _double(fp.hi))
    return f"CAST(ROUND(({clipped}) * {_double(fp.multiplier)}) AS BIGINT)"


# --- progress, temp disk -----------------------------------------------------------


class _Reporter:
    """Turns stage fractions into the callback's calls, with rows/s and an ETA.

    The callback gets ``(stage, fraction, LoadProgress)``. While reading, the ETA assumes the
    second pass takes ``second_pass`` times as long as the first (measured: about as
    long for the bucketed write, a quarter for the one-row check).
    """

    second_pass = 1.0

    def __init__(self, callback: Progress | None, rows_total: int) -> None:
        self.callback = callback
        self.rows_total = rows_total
        self.started = time.monotonic()
        self.stage_started = self.started
        self.stage = ""
        self.read_seconds: float | None = None
        self.lock = threading.Lock()

    def begin(self, stage: str) -> None:
        with self.lock:
            now = time.monotonic()
            if self.stage == "reading":
                self.read_seconds = now - self.stage_started
            self.stage, self.stage_started = stage, now
        self.report(0.0)

    def report(self, fraction: float) -> None:
        if self.callback is None:
            return
        fraction = min(max(fraction, 0.0), 1.0)
        with self.lock:
            stage = self.stage
            elapsed = time.monotonic() - self.stage_started
            rows = int(self.rows_total * fraction)
            rate = rows / elapsed if elapsed > 0 else 0.0
            eta: float | None = None
            if fraction > 0 and stage == "reading":
                left = elapsed * (1 - fraction) / fraction
                eta = left + self.second_pass * (elapsed / fraction)
            elif fraction > 0 and stage in ("writing", "checking"):
                eta = elapsed * (1 - fraction) / fraction
            elif stage == "done":
                eta = 0.0
        info = LoadProgress(stage, fraction, rows, self.rows_total, rate, eta)
        self.callback(stage, fraction, info)


class _TempWatch:
    """Measures the temporary directory from a side thread; past the budget it
    interrupts DuckDB (and the load then fails with ``TooLarge``)."""

    def __init__(self, root: Path, budget: int, period_s: float = 0.2) -> None:
        self.root = root
        self.budget = budget
        self.period_s = period_s
        self.peak = 0
        self.exceeded = False
        self.con: duckdb.DuckDBPyConnection | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-temp-watch", daemon=True)

    def usage(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
        return total

    def check(self) -> None:
        used = self.usage()
        self.peak = max(self.peak, used)
        if used > self.budget and not self.exceeded:
            self.exceeded = True
            if self.con is not None:
                with contextlib.suppress(Exception):
                    self.con.interrupt()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.check()

    def __enter__(self) -> _TempWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.check()

    def refuse(self) -> TooLarge:
        return TooLarge(
            f"the load needed more than its temporary-disk budget of {_human(self.budget)} "
            "and was stopped; nothing was written. Raise the budget "
            "(SANDBOX_LOAD_TEMP_DISK_LIMIT) or free disk space",
            {"rule": "temp_disk_limit", "limit_bytes": self.budget},
        )


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError  # pragma: no cover


class _Progress:
    """Polls DuckDB's progress of the running statement from a side thread."""

    def __init__(self, con: duckdb.DuckDBPyConnection, reporter: _Reporter) -> None:
        self._con = con
        self._reporter = reporter
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Progress:
        if self._reporter.callback is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                pct = float(self._con.query_progress())
            except (duckdb.Error, RuntimeError):
                continue
            if pct >= 0:
                self._reporter.report(min(pct, 100.0) / 100.0)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


# --- leftovers of killed loads -----------------------------------------------------


def _paths(dest: Path, temp_dir: Path | None) -> tuple[Path, Path, Path]:
    """(partial file, lock file, temporary directory) of a load into ``dest``."""
    work = dest.with_name(dest.name + ".partial")
    lock = dest.with_name(dest.name + ".lock")
    base = temp_dir if temp_dir is not None else dest.parent
    temp = base / f".{dest.parent.name}.{dest.name}.loading"
    return work, lock, temp


def _remove(work: Path, temp: Path) -> None:
    for leftover in (work, Path(str(work) + ".wal")):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(temp, ignore_errors=True)


def remove_stale_loads(directory: Path, temp_dir: Path | None = None) -> list[str]:
    """Remove what dead loads left in ``directory`` (their lock is no longer held):
    partial files and temporary directories. Returns the names of the loads cleaned.

    A load killed with SIGKILL leaves its files; the next load calls this first.
    """
    cleaned = []
    for lock_path in sorted(directory.glob("*.lock")):
        dest = lock_path.with_name(lock_path.name[: -len(".lock")])
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live load holds it
            work, _, temp = _paths(dest, temp_dir)
            _remove(work, temp)
            lock_path.unlink(missing_ok=True)
            cleaned.append(dest.name)
        finally:
            os.close(fd)
    return cleaned


@contextlib.contextmanager
def _load_lock(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InvalidRequest(
                f"another load into {lock_path.name[: -len('.lock')]!r} is running"
            ) from None
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)  # still held: no other load is using it
    finally:
        os.close(fd)


# --- the load ----------------------------------------------------------------------


@dataclass
class _Source:
    reader: str
    types: dict[str, str]  # column -> DuckDB type of the source
    rows: int  # exact for Parquet, estimated for CSV
    exact_rows: bool


def _describe(con: duckdb.DuckDBPyConnection, source: Path, fmt: DataFormat) -> _Source:
    path = _literal(str(source))
    if fmt is DataFormat.CSV:
        reader = (
            f"read_csv({path}, header = true, all_varchar = true, "
            "auto_detect = true, strict_mode = true, null_padding = false)"
        )
    else:
        reader = f"read_parquet({path})"
    described = con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()
    types = {str(r[0]): str(r[1]) for r in described}
    if fmt is DataFormat.PARQUET:
        row = con.execute(f"SELECT sum(num_rows) FROM parquet_file_metadata({path})").fetchone()
        return _Source(reader, types, int(row[0] or 0) if row else 0, True)
    size = source.stat().st_size
    with source.open("rb") as f:
        sample = f.read(1 << 20)
    lines = max(sample.count(b"\n"), 1)
    return _Source(reader, types, max(int(size * lines / max(len(sample), 1)) - 1, 0), False)


def _memory_bytes(limit: str) -> int:
    try:
        return parse_size(limit)
    except InvalidRequest:
        return 2 * 10**9


def _bucket_bits(manifest: DataProduct, rows: int, limits: LoadLimits) -> int:
    per_bucket = limits.rows_per_bucket
    if per_bucket <= 0:
        # A bucket is held in memory (ranked, checked, sorted): keep it near a
        # quarter of the memory limit at an estimated 40 bytes per stored value.
        width = 40 * (len(manifest.columns) + 3)
        per_bucket = max(50_000, _memory_bytes(limits.memory_limit) // (4 * width))
    buckets = max(1, math.ceil(rows / per_bucket))
    return min(MAX_BUCKET_BITS, math.ceil(math.log2(buckets)))


def _estimate_temp(source: Path, fmt: DataFormat, rows: int) -> int:
    """A generous estimate of the staging files: Parquet input is restaged at about its
    own size, CSV at about half (typed, compressed); plus the hash and fixed-point
    columns (incompressible, 16 bytes a row)."""
    size = source.stat().st_size
    ratio = 1.0 if fmt is DataFormat.PARQUET else 0.5
    return int(size * ratio) + 16 * rows + (16 << 20)


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

    Returns the row and unit counts, the content hash, the clipped-value counts and
    the peak temporary disk. Raises ``InvalidRequest`` (with ``details.rejected`` and
    ``details.first_rejections``) when any row breaks the manifest, ``TooLarge`` when
    the load would exceed or exceeds its temporary-disk budget, and
    ``StorageUnavailable`` when the disk fails; then nothing is left under ``dest``.
    """
    if not source.is_file():
        raise InvalidRequest(f"data file {str(source)!r} does not exist")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if limits.temp_dir is not None:
        limits.temp_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_loads(dest.parent, limits.temp_dir)
    work, lock, temp = _paths(dest, limits.temp_dir)
    with _load_lock(lock):
        _remove(work, temp)
        try:
            return _load(manifest, source, fmt, dest, work, temp, limits, progress)
        except duckdb.Error as exc:
            text = _first_line(str(exc))
            if "No space left" in text or ("disk" in text.lower() and "full" in text.lower()):
                raise StorageUnavailable(
                    "the disk is full; nothing was written", {"rule": "disk_full"}
                ) from None
            raise InvalidRequest(f"the {fmt.value} data could not be read: {text}") from None
        except OSError as exc:
            raise StorageUnavailable(
                f"the product's storage failed ({exc.strerror or type(exc).__name__}); "
                "nothing was written",
                {"rule": "storage"},
            ) from None
        finally:
            _remove(work, temp)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else "unknown error"


def _load(
    manifest: DataProduct,
    source: Path,
    fmt: DataFormat,
    dest: Path,
    work: Path,
    temp: Path,
    limits: LoadLimits,
    progress: Progress | None,
) -> LoadResult:
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    hashed: dict[str, str] = {}

    def hash_source() -> None:
        try:
            hashed["sha256"] = sha256_file(source)
        except OSError as exc:  # reported by the caller's thread, below
            hashed["error"] = exc.strerror or type(exc).__name__

    hasher = threading.Thread(target=hash_source, name="load-hash", daemon=True)
    hasher.start()
    temp.mkdir(parents=True)
    con = duckdb.connect(str(work))
    try:
        spill = temp / "spill"
        con.execute(f"SET memory_limit = {_literal(limits.memory_limit)}")
        con.execute(f"SET threads = {int(limits.threads)}")
        con.execute(f"SET temp_directory = {_literal(str(spill))}")
        # Progress is polled (query_progress), never printed into a server's log.
        con.execute("SET enable_progress_bar = true")
        con.execute("SET enable_progress_bar_print = false")
        src = _describe(con, source, fmt)
        expected = list(manifest.column_names)
        missing = [c for c in expected if c not in src.types]
        extra = [c for c in src.types if c not in expected]
        if missing or extra:
            raise InvalidRequest(
                "the data's columns do not match the manifest",
                {"missing_columns": missing, "unexpected_columns": extra},
            )
        budget = _budget(limits, temp)
        estimate = _estimate_temp(source, fmt, src.rows)
        if estimate > budget:
            raise TooLarge(
                f"the load would need about {_human(estimate)} of temporary disk, more "
                f"than its budget of {_human(budget)}; nothing was written. Raise the "
                "budget (SANDBOX_LOAD_TEMP_DISK_LIMIT) or free disk space",
                {"rule": "temp_disk_limit", "limit_bytes": budget, "estimate_bytes": estimate},
            )
        con.execute(f"SET max_temp_directory_size = {_literal(str(budget) + 'B')}")
        bits = _bucket_bits(manifest, src.rows, limits)
        reporter = _Reporter(progress, src.rows)
        with _TempWatch(temp, budget) as watch:
            watch.con = con
            try:
                if (manifest.privacy_unit,) in manifest.unique:
                    bits = 0
                    stats = _load_single_rows(con, manifest, src, reporter, timings)
                else:
                    stats = _load_buckets(con, manifest, src, temp, bits, reporter, watch, timings)
                con.execute(
                    f"COMMENT ON TABLE {_quote(manifest.id)} IS "
                    f"{_literal(layout_comment(buckets=1 << bits, bucket_bits=bits))}"
                )
                con.execute("CHECKPOINT")
            except duckdb.InterruptException:
                if watch.exceeded:
                    raise watch.refuse() from None
                raise
    finally:
        con.close()
    t2 = time.monotonic()
    hasher.join()
    timings["hash_wait_s"] = time.monotonic() - t2
    if "sha256" not in hashed:
        raise StorageUnavailable(
            f"the data file could not be read ({hashed.get('error', 'unknown error')})",
            {"rule": "storage"},
        )
    _fsync(work)
    os.replace(work, dest)
    _fsync_dir(dest.parent)
    timings["total_s"] = time.monotonic() - t0
    reporter.begin("done")
    return LoadResult(
        row_count=stats.rows,
        content_hash=hashed["sha256"],
        units=stats.units,
        timings=timings,
        clipped=stats.clipped,
        peak_temp_bytes=watch.peak,
        buckets=1 << bits,
    )


def _checked(manifest: DataProduct, src: _Source) -> str:
    """A WHERE condition that is TRUE for a valid row and raises (DuckDB's error())
    on the first row breaking a rule, so a clean load stores no flag per row; the
    rare failing load is then read again for a report by line (``_refuse_bad_rows``)."""
    bad = [
        check
        for c in manifest.columns
        if (check := _bad_expr(c, _quote(c.name), src.types[c.name], manifest.privacy_unit))
    ]
    if not bad:
        return "TRUE"
    return f"CASE WHEN {' OR '.join(bad)} THEN error({_literal(_BAD_ROW)}) ELSE TRUE END"


def _typed_select(manifest: DataProduct, src: _Source) -> tuple[list[str], list[str]]:
    """(typed manifest columns, stored fixed-point columns) as SQL select items."""
    typed_items, fixed_items = [], []
    for c in manifest.columns:
        raw = _quote(c.name)
        typed = f"({_typed_expr(c, raw, src.types[c.name])})::{DUCKDB_TYPES[c.type]}"
        typed_items.append(f"{typed} AS {raw}")
        fp = fixed_point(c)
        if fp is not None:
            fixed_items.append(f"{fixed_point_sql(fp, typed)} AS {_quote(fp.name)}")
    return typed_items, fixed_items


def _create_table(con: duckdb.DuckDBPyConnection, manifest: DataProduct) -> list[str]:
    """Create the empty product table; return its column names, quoted, in order."""
    fps = [fp for c in manifest.columns if (fp := fixed_point(c)) is not None]
    columns = [f"{_quote(c.name)} {DUCKDB_TYPES[c.type]}" for c in manifest.columns]
    columns += [f"{UNIT_RANK} INTEGER", f"{BUCKET} INTEGER"]
    columns += [f"{_quote(fp.name)} BIGINT" for fp in fps]
    con.execute(f"CREATE TABLE {_quote(manifest.id)} ({', '.join(columns)})")
    return [c.split(" ")[0] for c in columns]


def _bounded_measures(manifest: DataProduct) -> tuple[list[Column], list[str]]:
    bounded = [c for c in manifest.columns if c.type.numeric and c.bounds is not None]
    measures = []
    for c in bounded:
        assert c.bounds is not None
        lo, hi = (_literal(b) for b in c.bounds)
        measures.append(f"count(*) FILTER (WHERE {_quote(c.name)} < {lo})")
        measures.append(f"count(*) FILTER (WHERE {_quote(c.name)} > {hi})")
    return bounded, measures


def _run_checked(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    manifest: DataProduct,
    src: _Source,
    reporter: _Reporter,
) -> None:
    try:
        with _Progress(con, reporter):
            con.execute(sql)
    except duckdb.Error as exc:
        if _BAD_ROW in str(exc):
            _refuse_bad_rows(con, manifest, src)
        raise


def _load_single_rows(
    con: duckdb.DuckDBPyConnection,
    manifest: DataProduct,
    src: _Source,
    reporter: _Reporter,
    timings: dict[str, float],
) -> _Stats:
    """The load of a product whose unit is a declared unique key (one row per unit,
    e.g. an enterprise registry keyed by credit code): every row's rank is 1, the
    uniform permutation of a one-row unit, so no bucketing is needed. One streaming
    pass writes the table; one pass over the unit column then proves the key unique
    (distinct 64-bit hashes imply distinct units; only if two hashes meet are the
    values themselves grouped) and counts the clipped values."""
    t0 = time.monotonic()
    table = _quote(manifest.id)
    unit = _quote(manifest.privacy_unit)
    _create_table(con, manifest)
    reporter.second_pass = 0.25
    typed, fixed = _typed_select(manifest, src)
    select = [*typed, f"1 AS {UNIT_RANK}", f"0 AS {BUCKET}", *fixed]
    con.execute("SET preserve_insertion_order = false")
    reporter.begin("reading")
    _run_checked(
        con,
        f"INSERT INTO {table} SELECT {', '.join(select)} FROM {src.reader} "
        f"WHERE {_checked(manifest, src)}",
        manifest,
        src,
        reporter,
    )
    timings["read_s"] = time.monotonic() - t0
    reporter.begin("checking")
    t1 = time.monotonic()
    bounded, measures = _bounded_measures(manifest)
    row = con.execute(
        f"SELECT count(*), count(DISTINCT hash({unit})), {', '.join(measures) or '0'} FROM {table}"
    ).fetchone()
    assert row is not None
    rows, distinct_hashes = int(row[0]), int(row[1])
    if distinct_hashes != rows:
        dup = con.execute(
            f"SELECT count(*) FROM (SELECT {unit} FROM {table} GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()
        n = int(dup[0]) if dup else 0
        if n:
            raise InvalidRequest(
                f"{n} value(s) of the declared unique key ({manifest.privacy_unit}) repeat; "
                "nothing was loaded",
                {"unique": [manifest.privacy_unit], "duplicated_keys": n},
            )
    stats = _Stats(rows=rows, units=rows)
    stats.clipped = {
        c.name: {"below": int(row[2 + 2 * i]), "above": int(row[3 + 2 * i])}
        for i, c in enumerate(bounded)
    }
    for key in manifest.unique:
        if key == (manifest.privacy_unit,) or manifest.privacy_unit in key:
            continue  # implied by the unit's uniqueness
        cols = ", ".join(_quote(k) for k in key)
        dup = con.execute(
            f"SELECT count(*) FROM (SELECT {cols} FROM {table} GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()
        if dup and dup[0]:
            raise InvalidRequest(
                f"{dup[0]} value(s) of the declared unique key ({', '.join(key)}) repeat; "
                "nothing was loaded",
                {"unique": list(key), "duplicated_keys": int(dup[0])},
            )
    reporter.report(1.0)
    timings["check_s"] = time.monotonic() - t1
    return stats


def _load_buckets(
    con: duckdb.DuckDBPyConnection,
    manifest: DataProduct,
    src: _Source,
    temp: Path,
    bits: int,
    reporter: _Reporter,
    watch: _TempWatch,
    timings: dict[str, float],
) -> _Stats:
    """The general load: scatter rows to unit-hash buckets, then rank each bucket."""
    t0 = time.monotonic()
    reporter.begin("reading")
    staging = temp / "staging"
    _stage(con, manifest, src, staging, bits, reporter)
    timings["read_s"] = time.monotonic() - t0
    watch.check()
    if watch.exceeded:
        raise watch.refuse()
    _check_unique_outside_unit(con, manifest, staging)
    reporter.rows_total = _staged_rows(con, staging)
    reporter.begin("writing")
    t1 = time.monotonic()
    stats = _write(con, manifest, staging, bits, reporter, watch)
    timings["write_s"] = time.monotonic() - t1
    return stats


def _budget(limits: LoadLimits, temp: Path) -> int:
    free = shutil.disk_usage(temp).free
    if limits.temp_disk_limit is not None:
        return min(limits.temp_disk_limit, free)
    return max(free - TEMP_RESERVE_BYTES, 0)


def _unit_sql(manifest: DataProduct, types: dict[str, str]) -> str:
    """The unit's 64-bit hash (DuckDB's ``hash``: it only has to agree with itself
    within one load, since it only assigns units to buckets)."""
    unit_col = manifest.column(manifest.privacy_unit)
    assert unit_col is not None
    raw = _quote(unit_col.name)
    typed = f"({_typed_expr(unit_col, raw, types[unit_col.name])})::{DUCKDB_TYPES[unit_col.type]}"
    return f"hash(CAST({typed} AS VARCHAR))"


def _stage(
    con: duckdb.DuckDBPyConnection,
    manifest: DataProduct,
    src: _Source,
    staging: Path,
    bits: int,
    reporter: _Reporter,
) -> None:
    """The streaming pass: type, check, encode and scatter every row by its bucket."""
    typed, fixed = _typed_select(manifest, src)
    key = _unit_sql(manifest, src.types)
    bucket = f"({key} >> {64 - bits})::INTEGER" if bits else "0"
    # Rows need no order here; each bucket is ranked on its own later.
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET partitioned_write_max_open_files = {max(100, 2 << bits)}")
    _run_checked(
        con,
        f"COPY (SELECT {', '.join([*typed, *fixed])}, {bucket} AS {BUCKET} "
        f"FROM {src.reader} WHERE {_checked(manifest, src)}) TO {_literal(str(staging))} "
        f"(FORMAT parquet, PARTITION_BY ({BUCKET}), COMPRESSION zstd, "
        "WRITE_PARTITION_COLUMNS false)",
        manifest,
        src,
        reporter,
    )


def _bucket_glob(staging: Path, bucket: int | None = None) -> str:
    part = "*" if bucket is None else str(bucket)
    return _literal(str(staging / f"{BUCKET}={part}" / "*.parquet"))


def _staged_rows(con: duckdb.DuckDBPyConnection, staging: Path) -> int:
    if not any(staging.glob(f"{BUCKET}=*")):
        return 0
    row = con.execute(
        f"SELECT sum(num_rows) FROM parquet_file_metadata({_bucket_glob(staging)})"
    ).fetchone()
    return int(row[0] or 0) if row else 0


def _refuse_bad_rows(con: duckdb.DuckDBPyConnection, manifest: DataProduct, src: _Source) -> None:
    """Raise ``InvalidRequest`` with the count of bad rows and the first rejections."""
    # Rare path: read the file again in order, numbering records (a streaming window).
    # Line = record number + 1 (the CSV header is line 1).
    unit = manifest.privacy_unit
    checks = [
        f"({_violation_expr(c, _quote(c.name), src.types[c.name], unit)}) AS {_quote(c.name)}"
        for c in manifest.columns
    ]
    any_bad = " OR ".join(f"{_quote(c.name)} IS NOT NULL" for c in manifest.columns)
    con.execute("SET preserve_insertion_order = true")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {_ROWS} AS SELECT * FROM (SELECT row_number() OVER () "
        f"+ 1 AS line, {', '.join(checks)} FROM {src.reader}) WHERE {any_bad}"
    )
    counted = con.execute(f"SELECT count(*) FROM {_ROWS}").fetchone()
    n_bad = int(counted[0]) if counted else 0
    first = con.execute(
        f"SELECT * FROM {_ROWS} ORDER BY line LIMIT {MAX_REPORTED_REJECTIONS}"
    ).fetchall()
    names = [d[0] for d in con.description or []]
    report: list[Rejection] = []
    for r in first:
        for name, rule in zip(names[1:], r[1:], strict=True):
            if rule is not None:
                report.append(Rejection(int(r[0]), name, str(rule)))
    raise InvalidRequest(
        f"{n_bad} row(s) break the manifest; nothing was loaded",
        {
            "rejected": n_bad,
            "first_rejections": [x.to_dict() for x in report[:MAX_REPORTED_REJECTIONS]],
        },
    )


def _check_unique_outside_unit(
    con: duckdb.DuckDBPyConnection, manifest: DataProduct, staging: Path
) -> None:
    """Unique keys without the privacy unit are not co-located by bucket: check them
    over all staged rows at once (DuckDB's aggregate spills within the budget)."""
    if not any(staging.glob(f"{BUCKET}=*")):
        return
    for key in manifest.unique:
        if manifest.privacy_unit in key:
            continue
        cols = ", ".join(_quote(k) for k in key)
        row = con.execute(
            f"SELECT count(*) FROM (SELECT {cols} FROM read_parquet("
            f"{_bucket_glob(staging)}, hive_partitioning = false) GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()
        if row and row[0]:
            raise InvalidRequest(
                f"{row[0]} value(s) of the declared unique key ({', '.join(key)}) repeat; "
                "nothing was loaded",
                {"unique": list(key), "duplicated_keys": int(row[0])},
            )


@dataclass
class _Stats:
    rows: int = 0
    units: int = 0
    clipped: dict[str, dict[str, int]] = field(default_factory=dict)


def _write(
    con: duckdb.DuckDBPyConnection,
    manifest: DataProduct,
    staging: Path,
    bits: int,
    reporter: _Reporter,
    watch: _TempWatch,
) -> _Stats:
    """Rank, check and append each bucket in turn; return the counts."""
    table = _quote(manifest.id)
    unit = _quote(manifest.privacy_unit)
    k = manifest.max_rows_per_unit
    _create_table(con, manifest)
    values = [_quote(c.name) for c in manifest.columns]
    fp_values = [_quote(fp.name) for c in manifest.columns if (fp := fixed_point(c))]
    bounded, clip_measures = _bounded_measures(manifest)
    stats = _Stats(clipped={c.name: {"below": 0, "above": 0} for c in bounded})
    measures = [
        "count(*)",
        f"count(*) FILTER (WHERE {UNIT_RANK} = 1)",
        f"count(*) FILTER (WHERE {UNIT_RANK} > {k})",
        *clip_measures,
    ]
    unit_keys = [key for key in manifest.unique if manifest.privacy_unit in key]
    duplicated = [0] * len(unit_keys)
    buckets = sorted(
        int(p.name.split("=", 1)[1]) for p in staging.glob(f"{BUCKET}=*") if p.is_dir()
    )
    total = max(reporter.rows_total, 1)
    done = 0
    for b in buckets:
        # Each row draws an independent uniform number; ranking a unit's rows by it is
        # a uniformly random permutation that depends on nothing but that unit's own
        # draws, so removing one unit changes no other unit's selection (DESIGN §8).
        # A bucket holds all rows of its units, so ranking it alone is exact.
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {_RANKED} AS SELECT * EXCLUDE (_draw), "
            f"(row_number() OVER (PARTITION BY {unit} ORDER BY _draw))::INTEGER "
            f"AS {UNIT_RANK} FROM (SELECT *, random() AS _draw FROM "
            f"read_parquet({_bucket_glob(staging, b)}, hive_partitioning = false))"
        )
        row = con.execute(f"SELECT {', '.join(measures)} FROM {_RANKED}").fetchone()
        assert row is not None
        rows, units, dropped = int(row[0]), int(row[1]), int(row[2])
        stats.rows += rows
        stats.units += units
        for i, c in enumerate(bounded):
            stats.clipped[c.name]["below"] += int(row[3 + 2 * i])
            stats.clipped[c.name]["above"] += int(row[4 + 2 * i])
        for j, key in enumerate(unit_keys):
            cols = ", ".join(_quote(x) for x in key)
            dup = con.execute(
                f"SELECT count(*) FROM (SELECT {cols} FROM {_RANKED} GROUP BY ALL "
                "HAVING count(*) > 1)"
            ).fetchone()
            duplicated[j] += int(dup[0]) if dup else 0
        if not any(duplicated):
            select = ", ".join([*values, UNIT_RANK, f"{b} AS {BUCKET}", *fp_values])
            if not dropped:
                con.execute(f"INSERT INTO {table} SELECT {select} FROM {_RANKED}")
            else:
                # The rows bounding keeps first, so that `_unit_rank <= k` reads a
                # prefix of each bucket and row-group statistics skip the rest.
                for cond in (f"{UNIT_RANK} <= {k}", f"{UNIT_RANK} > {k}"):
                    con.execute(f"INSERT INTO {table} SELECT {select} FROM {_RANKED} WHERE {cond}")
        con.execute(f"DROP TABLE IF EXISTS {_RANKED}")
        shutil.rmtree(staging / f"{BUCKET}={b}", ignore_errors=True)
        done += rows
        reporter.report(done / total)
        watch.check()
        if watch.exceeded:
            raise watch.refuse()
    for key, n in zip(unit_keys, duplicated, strict=True):
        if n:
            raise InvalidRequest(
                f"{n} value(s) of the declared unique key ({', '.join(key)}) repeat; "
                "nothing was loaded",
                {"unique": list(key), "duplicated_keys": n},
            )
    return stats


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
