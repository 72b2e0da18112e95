"""Executing verification calls against a product version's DuckDB file (DESIGN §9).

Every answer is computed by DuckDB as booleans: the statements select only the
outcome of each check, never a cell, so no record value reaches Python, let alone
an answer. Values from the caller (key values, chosen parameters) and from the
definition (fixed parameters) are always bound as statement parameters; only
identifiers the manifest already validated (table and column names) are quoted
into the SQL text.

Isolation (DESIGN §2.2): each data file is opened once per process, read-only, in
a private in-memory DuckDB instance (``ATTACH ... (READ_ONLY)``), after which
external access is disabled, extension auto-install and auto-load are off, memory
and threads are limited, and ``lock_configuration`` is set last so none of this can
be undone. A private instance also means the query engine may open the same file
with its own settings in the same process without DuckDB refusing "a different
configuration". Calls take a cursor on the cached instance, which costs far less
than opening the file (measured in docs/verification.md).

Semantics: the key must match exactly one row. An unknown subject, or (should the
data ever break its declared uniqueness) several rows, answers ``false`` for every
check. A NULL cell fails every check, and ``exists`` is true only for a found
record whose cell is not NULL.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from products.manifest import DataProduct
from products.verification import AnswerShape, Op, VerificationProduct
from sandbox.errors import QueryFailed, Unavailable
from sandbox.settings import Settings
from sandbox.verification.index import AnswerIndex, Layout, build, index_path, indexable
from sandbox.verification.request import Item, parse_item, parse_items
from sandbox.verification.sql import Statement, check_sql, column_types, param_sql, quote

logger = logging.getLogger(__name__)

SCHEMA = "product"  # the alias the data file is attached under
IN_PREFILTER_MAX = 256  # batches with at most this many distinct first-key values


@dataclass(frozen=True)
class VerificationLimits:
    """Resource limits of the verification executor (per attached data file)."""

    memory_limit: str = "256MB"
    threads: int = 2
    max_batch_items: int = 1000
    max_open_files: int = 32
    batch_timeout_s: float = 10.0
    answer_indexes: bool = True  # answer from precomputed indexes once built (index.py)
    build_in_background: bool = True  # False: the first call builds the index and waits

    @classmethod
    def from_settings(cls, settings: Settings) -> VerificationLimits:
        """Return the limits a deployment configures (``SANDBOX_MAX_BATCH_ITEMS``...)."""
        return cls(max_batch_items=settings.max_batch_items)


@dataclass(frozen=True)
class Outcome:
    """The answer released to the caller, plus whether the key matched a record.

    ``found`` is for the platform only (enumeration detection, DESIGN §9); it is
    never part of the answer, so an unknown subject looks like a false one.
    """

    answer: dict[str, Any]
    found: bool


def _point_query(
    vp: VerificationProduct, product: DataProduct, item: Item, unit_key: bool = False
) -> tuple[str, list[Any]]:
    """One keyed lookup: ``WHERE key = ?`` lets DuckDB skip every row group whose
    min/max excludes the key (and use an index if the file has one)."""
    types = column_types(vp, product)
    st = Statement()
    exprs = []
    for check in vp.checks:
        t = types[check.column]
        cell = f"t.{quote(check.column)}"
        exprs.append(check_sql(check, cell, param_sql(st, check, item.params[check.name], t)))
    conds = [
        f"t.{quote(k)} = {st.bind(v, types[k])}" for k, v in zip(vp.key, item.key, strict=True)
    ]
    if unit_key and product.privacy_unit in vp.key:
        # Rows are stored by _unit_key within each rank: this integer filter lets the
        # zone maps skip every other row group (see products/loader.py).
        value = item.key[vp.key.index(product.privacy_unit)]
        unit_type = types[product.privacy_unit]
        conds.append(
            f"t._unit_key = md5_number_upper(CAST({st.bind(value, unit_type)} AS VARCHAR))"
        )
    where = " AND ".join(conds)
    sql = f"SELECT {', '.join(exprs)} FROM {SCHEMA}.{quote(product.id)} AS t WHERE {where} LIMIT 2"
    return sql, st.params


def _batch_query(
    vp: VerificationProduct, product: DataProduct, items: Sequence[Item], unit_key: bool = False
) -> tuple[str, list[Any]]:
    """All items in one statement: the subjects (and the parameters each chose) are
    bound as parallel lists, unnested into a relation and left-joined on the key.
    One scan answers the whole batch, in item order."""
    types = column_types(vp, product)
    st = Statement()
    columns = [f"unnest({st.bind(list(range(len(items))), 'BIGINT[]')}) AS _i"]
    for j, k in enumerate(vp.key):
        values = [item.key[j] for item in items]
        columns.append(f"unnest({st.bind(values, types[k] + '[]')}) AS _k{j}")
    exprs = []
    for n, check in enumerate(vp.checks):
        t = types[check.column]
        cell = f"t.{quote(check.column)}"
        value: str | tuple[str, str]
        if not check.caller_supplied or check.op is Op.EXISTS:
            value = param_sql(st, check, check.param, t)
        else:
            chosen = [item.params[check.name] for item in items]
            if check.op in (Op.IN, Op.BETWEEN):
                lists = [list(p) if isinstance(p, tuple) else [p] for p in chosen]
                columns.append(f"unnest({st.bind(lists, t + '[][]')}) AS _p{n}")
                value = (f"q._p{n}[1]", f"q._p{n}[2]") if check.op is Op.BETWEEN else f"q._p{n}"
            else:
                columns.append(f"unnest({st.bind(chosen, t + '[]')}) AS _p{n}")
                value = f"q._p{n}"
        exprs.append(f"coalesce(bool_and({check_sql(check, cell, value)}), false)")
    on = " AND ".join(f"t.{quote(k)} = q._k{j}" for j, k in enumerate(vp.key))
    table = f"{SCHEMA}.{quote(product.id)}"
    first = sorted({item.key[0] for item in items}, key=str)
    if len(first) <= IN_PREFILTER_MAX:
        # A literal IN list (of bound parameters) on the first key column is pushed
        # into the scan, where row-group statistics or an index skip most of the table;
        # the join alone scans it all. Past a few hundred keys nearly every row group
        # holds one of them and the list only costs (docs/verification.md).
        in_list = ", ".join(st.bind(v, types[vp.key[0]]) for v in first)
        prefilter = f"{quote(vp.key[0])} IN ({in_list})"
        if unit_key and vp.key[0] == product.privacy_unit:
            hashes = ", ".join(
                f"md5_number_upper(CAST({st.bind(v, types[vp.key[0]])} AS VARCHAR))" for v in first
            )
            prefilter += f" AND _unit_key IN ({hashes})"
        table = f"(SELECT * FROM {table} WHERE {prefilter})"
    # count(t.key) counts matched rows only: the key columns of an unmatched
    # (left-joined) row are NULL.
    sql = (
        f"WITH q AS (SELECT {', '.join(columns)}) "
        f"SELECT q._i, count(t.{quote(vp.key[0])}), {', '.join(exprs)} "
        f"FROM q LEFT JOIN {table} AS t ON {on} "
        "GROUP BY q._i ORDER BY q._i"
    )
    return sql, st.params


def _answer(vp: VerificationProduct, results: Sequence[bool]) -> dict[str, Any]:
    match = all(results)
    if vp.answer is AnswerShape.ALL:
        return {"match": match}
    return {
        "match": match,
        "checks": {c.name: bool(r) for c, r in zip(vp.checks, results, strict=True)},
    }


def _indexed_outcome(vp: VerificationProduct, index: AnswerIndex, item: Item) -> Outcome:
    layout = index.layout
    bits = [layout.bit(c, item.params[c.name]) for c in vp.checks]
    results, found = index.answers(bits, item.key)
    return Outcome(_answer(vp, results), found)


@dataclass
class _Database:
    root: duckdb.DuckDBPyConnection
    users: int = 0
    retired: bool = False
    unit_key: bool = False  # the file has the loader's _unit_key column


class VerificationRunner:
    """Answers verification calls; keeps each data file open for reuse.

    Thread-safe: every call runs on its own cursor. ``close()`` releases the files.
    """

    def __init__(self, limits: VerificationLimits = VerificationLimits()) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._open: OrderedDict[str, _Database] = OrderedDict()
        # (data file, verification product id) -> its index; a definition never changes
        # under its id, and a data file never changes under its (versioned) name.
        self._indexes: dict[tuple[str, str], AnswerIndex] = {}
        self._unindexed: set[tuple[str, str]] = set()  # building, failed or not indexable

    # -- connections -------------------------------------------------------------

    def _connect(self, path: str) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(
            ":memory:",
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "allow_community_extensions": False,
            },
        )
        try:
            con.execute(f"ATTACH ? AS {SCHEMA} (READ_ONLY)", [path])
            con.execute("SET enable_external_access = false")
            con.execute("SET memory_limit = ?", [self.limits.memory_limit])
            con.execute("SET threads = ?", [int(self.limits.threads)])
            con.execute("SET lock_configuration = true")  # last: nothing above can change
        except BaseException:
            con.close()
            raise
        return con

    def _acquire(self, data_path: Path) -> tuple[_Database, duckdb.DuckDBPyConnection]:
        path = str(Path(data_path).resolve())
        with self._lock:
            db = self._open.get(path)
            if db is None:
                try:
                    root = self._connect(path)
                    found = root.execute(
                        "SELECT count(*) FROM duckdb_columns() "
                        f"WHERE database_name = '{SCHEMA}' AND column_name = '_unit_key'"
                    ).fetchone()
                    db = _Database(root, unit_key=bool(found and found[0]))
                except duckdb.Error:
                    raise Unavailable(
                        "the product's data file cannot be opened", {"data_file": Path(path).name}
                    ) from None
                self._open[path] = db
                self._evict()
            else:
                self._open.move_to_end(path)
            db.users += 1
            cursor = db.root.cursor()
        return db, cursor

    def _evict(self) -> None:
        while len(self._open) > self.limits.max_open_files:
            _, old = self._open.popitem(last=False)
            old.retired = True
            if old.users == 0:
                old.root.close()

    def _release(self, db: _Database, cursor: duckdb.DuckDBPyConnection) -> None:
        cursor.close()
        with self._lock:
            db.users -= 1
            if db.retired and db.users == 0:
                db.root.close()

    @contextmanager
    def cursor(self, data_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor on the read-only, locked, offline connection that lookups of
        ``data_path`` run on (for inspection: every lookup goes through ``run``)."""
        db, cur = self._acquire(data_path)
        try:
            yield cur
        finally:
            self._release(db, cur)

    @property
    def open_files(self) -> int:
        """How many data files are held open."""
        with self._lock:
            return len(self._open)

    @property
    def indexes(self) -> int:
        """How many answer indexes calls are answered from."""
        with self._lock:
            return len(self._indexes)

    def close(self) -> None:
        """Close every cached file (calls in flight finish first)."""
        with self._lock:
            for db in self._open.values():
                db.retired = True
                if db.users == 0:
                    db.root.close()
            self._open.clear()

    # -- execution ---------------------------------------------------------------

    def run(
        self,
        vp: VerificationProduct,
        product: DataProduct,
        data_path: Path,
        items: Sequence[Item],
    ) -> list[Outcome]:
        """Return the outcome of each parsed item, in item order.

        Raises ``QueryFailed`` if DuckDB gives up (memory, the batch time limit) and
        ``Unavailable`` if the data file cannot be read.
        """
        if vp.product != product.id:
            raise ValueError(f"{vp.id!r} is defined on {vp.product!r}, not {product.id!r}")
        if not items:
            return []
        if self.limits.answer_indexes:
            index = self._index_of(vp, product, data_path)
            if index is not None:
                return [_indexed_outcome(vp, index, item) for item in items]
        single = len(items) == 1
        db, cursor = self._acquire(data_path)
        sql, params = (
            _point_query(vp, product, items[0], db.unit_key)
            if single
            else _batch_query(vp, product, items, db.unit_key)
        )
        timer = None
        if not single:
            timer = threading.Timer(self.limits.batch_timeout_s, cursor.interrupt)
            timer.start()
        try:
            rows = cursor.execute(sql, params).fetchall()
        except duckdb.InterruptException:
            raise QueryFailed(
                f"the batch did not finish within {self.limits.batch_timeout_s} s; "
                "send fewer items per batch"
            ) from None
        except duckdb.OutOfMemoryException:
            raise QueryFailed(
                "the batch needs more memory than allowed; send fewer items"
            ) from None
        except duckdb.Error as exc:
            raise Unavailable(
                "the verification could not be evaluated",
                {"reason": type(exc).__name__},
            ) from None
        finally:
            if timer is not None:
                timer.cancel()
            self._release(db, cursor)
        none = [False] * len(vp.checks)
        if single:
            found = len(rows) == 1
            return [Outcome(_answer(vp, rows[0] if found else none), found)]
        outcomes = []
        for row in rows:
            found = row[1] == 1
            outcomes.append(Outcome(_answer(vp, row[2:] if found else none), found))
        return outcomes

    def values(
        self,
        vp: VerificationProduct,
        product: DataProduct,
        data_path: Path,
        items: Sequence[Item],
        columns: Sequence[str],
    ) -> list[tuple[Any, ...] | None]:
        """Return, per item, its record's ``columns`` (None when the key matches no
        single record): keyed point lookups as ``run``'s, for the scoring of linear
        model products (DESIGN §11.3), which needs numbers rather than booleans. The
        values stay in the service, which turns them into a band; no answer carries
        them. Raises ``Unavailable`` if the data file cannot be read."""
        if vp.product != product.id:
            raise ValueError(f"{vp.id!r} is defined on {vp.product!r}, not {product.id!r}")
        types = column_types(vp, product)
        selected = ", ".join(f"t.{quote(c)}" for c in columns)
        db, cursor = self._acquire(data_path)
        out: list[tuple[Any, ...] | None] = []
        try:
            for item in items:
                st = Statement()
                where = " AND ".join(
                    f"t.{quote(k)} = {st.bind(v, types[k])}"
                    for k, v in zip(vp.key, item.key, strict=True)
                )
                sql = (
                    f"SELECT {selected} FROM {SCHEMA}.{quote(product.id)} AS t "
                    f"WHERE {where} LIMIT 2"
                )
                rows = cursor.execute(sql, st.params).fetchall()
                out.append(tuple(rows[0]) if len(rows) == 1 else None)
        except duckdb.Error as exc:
            raise Unavailable(
                "the model could not be evaluated", {"reason": type(exc).__name__}
            ) from None
        finally:
            self._release(db, cursor)
        return out

    # -- answer indexes -------------------------------------------------------

    def _index_of(
        self, vp: VerificationProduct, product: DataProduct, data_path: Path
    ) -> AnswerIndex | None:
        """Return the loaded index, or ``None`` while there is none (building it in
        the background the first time it is missing)."""
        slot = (str(data_path), vp.id)
        index = self._indexes.get(slot)
        if index is not None or slot in self._unindexed:
            return index
        with self._lock:
            if slot in self._indexes or slot in self._unindexed:
                return self._indexes.get(slot)
            self._unindexed.add(slot)
        layout = indexable(vp, product)
        if layout is None:
            return None
        try:
            path = index_path(vp, product, data_path)
            if path.exists():
                return self._install(slot, AnswerIndex(path, layout))
        except (OSError, ValueError):
            logger.exception("answer index of %s unreadable; rebuilding", vp.id)
        if not self.limits.build_in_background:
            self._build_quietly(vp, product, data_path, layout, slot)
            return self._indexes.get(slot)
        threading.Thread(
            target=self._build_quietly,
            args=(vp, product, data_path, layout, slot),
            name=f"answer-index-{vp.id}",
            daemon=True,
        ).start()
        return None

    def _install(self, slot: tuple[str, str], index: AnswerIndex) -> AnswerIndex:
        with self._lock:
            self._indexes[slot] = index
            self._unindexed.discard(slot)
        return index

    def _build_quietly(
        self,
        vp: VerificationProduct,
        product: DataProduct,
        data_path: Path,
        layout: Layout,
        slot: tuple[str, str],
    ) -> None:
        try:
            self._install(slot, self._build(vp, product, data_path, layout))
        except Exception:  # point lookups keep answering; logged for the operator
            logger.exception("building the answer index of %s failed", vp.id)

    def _build(
        self, vp: VerificationProduct, product: DataProduct, data_path: Path, layout: Layout
    ) -> AnswerIndex:
        path = index_path(vp, product, data_path)
        db, cursor = self._acquire(data_path)
        try:
            build(cursor, f"{SCHEMA}.{quote(product.id)}", vp, product, layout, path)
        finally:
            self._release(db, cursor)
        return AnswerIndex(path, layout)

    def prepare(
        self, vp: VerificationProduct, product: DataProduct, data_path: Path
    ) -> AnswerIndex | None:
        """Build (or load) the answer index of ``vp`` now; ``None`` if not indexable."""
        layout = indexable(vp, product)
        if layout is None:
            return None
        path = index_path(vp, product, data_path)
        index = AnswerIndex(path, layout) if path.exists() else None
        if index is None:
            index = self._build(vp, product, data_path, layout)
        return self._install((str(data_path), vp.id), index)

    def verify(
        self,
        vp: VerificationProduct,
        product: DataProduct,
        data_path: Path,
        subject: Any,
        params: Any = None,
        *,
        consent_ref: str | None = None,
    ) -> dict[str, Any]:
        """Answer one call: ``{"match": bool}`` or ``{"match": bool, "checks": {...}}``.

        Raises ``InvalidRequest`` for a bad subject, parameter or missing consent
        (``details.fields`` names the field), else as ``run``.
        """
        body: dict[str, Any] = {"subject": subject}
        if params is not None:
            body["params"] = params
        if consent_ref is not None:
            body["consent_ref"] = consent_ref
        item = parse_item(vp, product, body)
        return self.run(vp, product, data_path, [item])[0].answer

    def verify_batch(
        self,
        vp: VerificationProduct,
        product: DataProduct,
        data_path: Path,
        items: Any,
    ) -> list[dict[str, Any]]:
        """Answer a batch ``[{subject, params?, consent_ref?}...]``, answers in item order.

        The whole batch is refused (``InvalidRequest`` naming ``items.<i>.<field>``,
        or ``TooLarge`` past ``limits.max_batch_items``) if any item is bad.
        """
        parsed = parse_items(vp, product, items, max_items=self.limits.max_batch_items)
        return [o.answer for o in self.run(vp, product, data_path, parsed)]
