"""AuditLog: the durable, append-only Merkle log over SQLAlchemy Core (DESIGN §7).

Appends use *group commit*: concurrent callers in a process share one transaction. The
first caller to find no commit in progress becomes the leader, takes every queued entry
(up to ``max_batch``), commits them together, wakes exactly the callers of that batch and
hands the lead to the first caller still queued; callers that arrived meanwhile form the
next batch. A caller returns only after the transaction holding its
entry has committed, so an acknowledged entry survives a crash (DESIGN §2.5).

Index assignment is serialised across processes and nodes by locking the single head
row inside the transaction: ``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE``
on SQLite (pysqlite is put in driver-autocommit mode on a dedicated engine and the write
transaction emits the BEGIN itself; writers of all processes first queue on a
``WriterLock``).
Leaves carry their ``index``, ``time`` and ``prev`` (the previous leaf hash), so they are
built inside that lock: no gaps, no duplicates.

Proofs and roots read perfect-subtree hashes from ``audit_nodes`` (O(log n) rows), never
rebuilding the tree. Nothing here updates or deletes an entry.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from audit import tables
from audit.bundle import BundleWriter
from audit.entry import Entry, format_time, parse_leaf, parse_time
from audit.errors import AuditError, BadCheckpoint, OutOfRange
from audit.merkle import (
    HASH_SIZE,
    CompactRange,
    consistency_ranges,
    fold,
    inclusion_ranges,
    perfect_subtrees,
)
from audit.note import (
    Checkpoint,
    CosignatureVerifier,
    NoteSigner,
    checkpoint_text,
    parse_note,
)
from audit.suites import DEFAULT_SUITE, Suite, suite_named
from audit.writer_lock import WriterLock

__all__ = [
    "DEFAULT_ORIGIN",
    "Appended",
    "AuditLog",
    "ConsistencyProof",
    "EntryWriter",
    "InclusionProof",
    "Page",
    "StoreError",
    "StoredCheckpoint",
    "StoredEntry",
    "StoredWitness",
    "create_tables",
]

DEFAULT_ORIGIN = "public-data-sandbox/audit"
_PG_LOCK_KEY = 0x61756469  # "audi": advisory lock key for create_tables on PostgreSQL


# Built once: a statement built per append costs its construction and cache-key walk.
_HEAD_UPDATE = tables.head.update().where(tables.head.c.id == 1)
_ENTRIES_INSERT = tables.entries.insert()
_NODES_INSERT = tables.nodes.insert()


class StoreError(AuditError):
    """The database failed while appending or reading; the entry was not acknowledged."""

    code = "unavailable"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Appended:
    """A committed entry: its index, leaf bytes, leaf hash and time string."""

    index: int
    leaf: bytes
    leaf_hash: bytes
    time: str


@dataclass(frozen=True)
class StoredEntry:
    """An entry as stored: index, leaf bytes and leaf hash."""

    index: int
    leaf: bytes
    leaf_hash: bytes

    @property
    def entry(self) -> dict[str, Any]:
        """The parsed entry (the leaf is trusted: it was written by this log)."""
        return parse_leaf(self.leaf, strict=False)


@dataclass(frozen=True)
class Page:
    """One page of entries; ``next_cursor`` is the index to continue from, or None."""

    entries: list[StoredEntry]
    next_cursor: int | None


@dataclass(frozen=True)
class StoredCheckpoint:
    """A signed checkpoint: tree size, root hash, time and the exact signed-note text."""

    size: int
    root: bytes
    time: str
    note: str

    def to_api(self) -> dict[str, Any]:
        """DESIGN §7 answer: ``{"tree_size", "root_hash", "time", "note"}``."""
        return {
            "tree_size": self.size,
            "root_hash": _b64(self.root),
            "time": self.time,
            "note": self.note,
        }


@dataclass(frozen=True)
class StoredWitness:
    """A witness's latest cosignature: the checkpoint's size and signed note, the
    cosignature's timestamp (unix seconds) and its line."""

    witness: str
    size: int
    timestamp: int
    line: str
    note: str


@dataclass(frozen=True)
class StoredCosignature:
    """A witness's cosignature line as stored, and whether the call that returned it
    stored it (False: an earlier cosignature by that witness was kept)."""

    line: str
    created: bool


@dataclass(frozen=True)
class InclusionProof:
    """An RFC 9162 inclusion proof of ``index`` in the tree of ``tree_size``."""

    index: int
    tree_size: int
    leaf_hash: bytes
    root_hash: bytes
    proof: list[bytes]

    def to_api(self) -> dict[str, Any]:
        """DESIGN §5 answer, hashes in standard base64."""
        return {
            "index": self.index,
            "tree_size": self.tree_size,
            "leaf_hash": _b64(self.leaf_hash),
            "root_hash": _b64(self.root_hash),
            "proof": [_b64(p) for p in self.proof],
        }


@dataclass(frozen=True)
class ConsistencyProof:
    """An RFC 9162 consistency proof from tree ``first`` to tree ``second``."""

    first: int
    second: int
    first_root: bytes
    second_root: bytes
    proof: list[bytes]

    def to_api(self) -> dict[str, Any]:
        """DESIGN §5 answer, hashes in standard base64."""
        return {
            "first": self.first,
            "second": self.second,
            "first_root": _b64(self.first_root),
            "second_root": _b64(self.second_root),
            "proof": [_b64(p) for p in self.proof],
        }


def create_tables(engine: Engine) -> None:
    """Create the audit tables and the head row if missing (idempotent, race-safe)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
        tables.metadata.create_all(conn)
        exists = conn.execute(sa.select(tables.head.c.id).where(tables.head.c.id == 1)).first()
        if exists is None:
            conn.execute(tables.head.insert().values(id=1, size=0, frontier=b""))


class LogTransaction:
    """What an :data:`EntryWriter` is handed inside the append transaction: its
    connection, the index its entry will get, and the log's own changes that may
    commit with the entry (a checkpoint, a cosignature)."""

    def __init__(self, log: AuditLog, conn: Connection, tree: CompactRange, committed: int) -> None:
        self.conn = conn
        self.index = tree.size
        self._log = log
        self._tree = tree
        self._committed = committed

    def checkpoint(self, size: int | None = None, *, reuse_within: float = 0.0) -> StoredCheckpoint:
        """Return the checkpoint of ``size`` entries (default: every entry before this
        one), signing and storing it with this entry if none is stored.

        With ``reuse_within`` and no ``size``, the latest stored checkpoint is returned
        instead when it is at most that many seconds old (a burst of readers does not
        sign one checkpoint each). Raises :class:`BadCheckpoint` without a signer and
        :class:`OutOfRange` for a size beyond this entry.
        """
        log, conn = self._log, self.conn
        c = tables.checkpoints
        if size is None:
            size = self.index
            latest = conn.execute(sa.select(c).order_by(c.c.size.desc()).limit(1)).first()
            if latest is not None:
                stored = _checkpoint(latest)
                if stored.size >= size or log._age(stored) < reuse_within:
                    return stored
        if not 0 <= size <= self.index:
            raise OutOfRange(f"tree size {size} exceeds the log ({self.index})")
        row = conn.execute(sa.select(c).where(c.c.size == size)).first()
        if row is not None:
            return _checkpoint(row)
        if size == self.index:
            root = self._tree.root()
        elif size <= self._committed:
            root = log._root(conn, size)
        else:  # inside this batch, before this entry: its rows are not written yet
            raise OutOfRange(f"tree size {size} is not committed yet")
        return log._sign(conn, size, root)

    def add_cosignature(
        self, note: str, witness: CosignatureVerifier, *, max_skew_s: int = 300
    ) -> StoredCosignature:
        """Store ``witness``'s cosignature found in ``note`` with this entry; return the
        stored line and whether this call stored it.

        ``note`` is one of this log's checkpoints with the witness's cosignature line
        (C2SP tlog-cosignature) appended. Raises :class:`BadCheckpoint` if the text is
        not a checkpoint this log signed or carries no line of that witness, if its
        timestamp lies more than ``max_skew_s`` seconds ahead of the log's clock, or if
        the witness already cosigned a larger checkpoint (a witness moves forward only;
        the served cosigned checkpoint is the largest); and
        :class:`~audit.errors.BadSignature` if the cosignature does not verify. A
        witness's first cosignature of a checkpoint is the one kept: a later one (say,
        a newer timestamp) verifies but returns the stored line with ``created`` False.
        """
        conn = self.conn
        parsed = parse_note(note)
        cp = Checkpoint.parse(parsed.text)
        c, cs = tables.checkpoints, tables.cosignatures
        row = conn.execute(sa.select(c).where(c.c.size == cp.size)).first()
        if row is None or parse_note(_checkpoint(row).note).text != parsed.text:
            raise BadCheckpoint("not a checkpoint this log issued")
        sigs = [s for s in parsed.signatures if witness.matches(s)]
        if not sigs:
            raise BadCheckpoint(f"no cosignature by {witness.name} in the note")
        ts = witness.timestamp(parsed.text, sigs[0])
        if ts > self._log.clock().timestamp() + max_skew_s:
            raise BadCheckpoint(
                f"the cosignature's time {ts} lies ahead of the log's clock by more than "
                f"{max_skew_s} s"
            )
        line = sigs[0].line().rstrip("\n")
        newest = conn.execute(
            sa.select(sa.func.max(cs.c.checkpoint_size)).where(
                cs.c.witness == witness.name, cs.c.key_id == witness.key_id
            )
        ).scalar()
        if newest is not None and cp.size < newest:
            raise BadCheckpoint(
                f"{witness.name} cosigned the checkpoint of size {newest} already; a witness "
                f"does not go back to size {cp.size}"
            )
        existing = conn.execute(
            sa.select(cs.c.line).where(
                cs.c.checkpoint_size == cp.size,
                cs.c.witness == witness.name,
                cs.c.key_id == witness.key_id,
            )
        ).scalar()
        if existing is not None:
            return StoredCosignature(str(existing), created=False)
        conn.execute(
            cs.insert().values(
                checkpoint_size=cp.size,
                witness=witness.name,
                key_id=witness.key_id,
                timestamp=ts,
                line=line,
            )
        )
        return StoredCosignature(line, created=True)


#: Writes a call's state changes in the append transaction and returns its entry
#: (see :meth:`AuditLog.append`).
EntryWriter = Callable[[LogTransaction], Entry]


class _Pending:
    __slots__ = ("done", "error", "parked", "result", "write")

    def __init__(self, write: EntryWriter) -> None:
        self.write = write
        self.result: Appended | None = None
        self.error: BaseException | None = None
        self.done = False
        # Held while the caller waits; released once: when its entry is done, or when
        # it is to lead the next batch.
        self.parked = threading.Lock()
        self.parked.acquire()


def _split_hashes(blob: bytes) -> list[bytes]:
    return [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]


def _sqlite_writer(engine: Engine, synchronous: str, lock_timeout_s: float) -> Engine:
    """A dedicated engine on the same SQLite file, in driver autocommit so that
    ``AuditLog._write_transaction`` can open every transaction with BEGIN IMMEDIATE."""
    writer = sa.create_engine(engine.url, connect_args={"timeout": lock_timeout_s})

    @event.listens_for(writer, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Driver autocommit: pysqlite issues no BEGIN of its own; _write_transaction does.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA busy_timeout={int(lock_timeout_s * 1000)}")
        cur.close()

    return writer


class AuditLog:
    """The append-only audit log in a relational store (SQLite WAL or PostgreSQL).

    ``suite`` (DESIGN §13) names the hash of every leaf, node, root and proof, and the
    key type ``signer`` must have; a deployment never changes it.
    ``signer`` signs checkpoints (``None``: read-only for checkpoints). ``clock`` is
    injected (returns an aware datetime). Entry times never go backwards: a clock behind
    the last entry's time is ignored. ``lock_timeout_s`` bounds how long an append waits
    for another writer on SQLite (DESIGN §2.9: a stalled process cannot stall the
    others for longer; on PostgreSQL the engine's ``lock_timeout`` does it).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        origin: str = DEFAULT_ORIGIN,
        suite: Suite | str = DEFAULT_SUITE,
        signer: NoteSigner | None = None,
        clock: Callable[[], datetime] = _utcnow,
        max_batch: int = 512,
        sqlite_synchronous: str = "NORMAL",
        checkpoint_interval: float = 60.0,
        checkpoint_entries: int = 10_000,
        min_checkpoint_interval: float = 1.0,
        lock_timeout_s: float = 5.0,
    ) -> None:
        if sqlite_synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError("sqlite_synchronous must be NORMAL, FULL or EXTRA")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.engine = engine
        self.origin = origin
        self.suite = suite_named(suite) if isinstance(suite, str) else suite
        self.tree = self.suite.tree
        if signer is not None and signer.verifier().key_type != self.suite.key_type:
            raise BadCheckpoint(
                f"the {self.suite.name} suite signs checkpoints with {self.suite.key_type} "
                f"keys, not {signer.verifier().key_type}"
            )
        self.signer = signer
        self.clock = clock
        self.max_batch = max_batch
        self.checkpoint_interval = checkpoint_interval
        self.checkpoint_entries = checkpoint_entries
        self.min_checkpoint_interval = min_checkpoint_interval
        self._dialect = engine.dialect.name
        database = engine.url.database or ""
        if self._dialect == "sqlite" and database not in ("", ":memory:"):
            self._writer = _sqlite_writer(engine, sqlite_synchronous.upper(), lock_timeout_s)
            self._write_lock: WriterLock | None = WriterLock(
                Path(f"{database}-audit-writer.lock"), timeout_s=lock_timeout_s
            )
        else:
            self._writer = engine
            self._write_lock = None
        # Built once: a statement built per append costs its cache-key walk every time.
        head_query = sa.select(tables.head).where(tables.head.c.id == 1)
        self._head_query = (
            head_query.with_for_update() if self._dialect == "postgresql" else head_query
        )
        self._pid = os.getpid()
        self._mutex = threading.Lock()
        self._queue: list[_Pending] = []
        self._leading = False

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Release the log's own connections (the caller's engine is left alone)."""
        if self._writer is not self.engine:
            self._writer.dispose()
        if self._write_lock is not None:
            self._write_lock.close()

    @contextmanager
    def _write_transaction(self) -> Iterator[Connection]:
        """A write transaction on the log's writer; on a SQLite file, writers of all
        processes queue on the :class:`WriterLock` first."""
        if self._write_lock is None:
            with self._writer.begin() as conn:
                yield conn
            return
        with self._write_lock.held(), self._writer.begin() as conn:
            # Takes SQLite's write lock up front: the head row read that follows is
            # current, and no other process appends until we commit
            # (sqlite.org/lang_transaction.html). Emitted here rather than from a
            # "begin" event: any connection event listener makes every statement on the
            # engine pay for event dispatch.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn

    def _after_fork(self) -> None:
        # A forked child (e.g. a gunicorn worker) must not inherit a held condition or
        # another process's queue, nor share pooled connections with the parent.
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._mutex = threading.Lock()
            self._queue = []
            self._leading = False
            if self._writer is not self.engine:
                self._writer.dispose(close=False)

    # ----------------------------------------------------------------- appending

    def append(self, entry: Entry | EntryWriter) -> Appended:
        """Append one entry and return it once its transaction has committed.

        ``entry`` is the entry itself, or an :data:`EntryWriter` that the batch leader
        calls inside the append transaction, after the log's head is locked (appends
        are serialised across processes and nodes while it runs) and with the index
        its entry will get: it may write the call's state changes on the connection,
        which then commit together with the entry or not at all, and returns the
        entry that records them. Writers run in queue order, so a change made by one
        is seen by the writers after it. A writer that raises aborts its whole batch:
        it must decide refusals without raising (``sandbox/actions/call.py``).
        Blocks until durable. Raises :class:`StoreError` if the database fails
        (neither the entries nor their changes are committed).
        """
        write: EntryWriter = (lambda _tx: entry) if isinstance(entry, Entry) else entry
        self._after_fork()
        req = _Pending(write)
        with self._mutex:
            self._queue.append(req)
            lead = not self._leading
            self._leading = True
        if not lead:
            # Woken exactly once: done, or chosen to lead the next batch. (Waking every
            # waiter after each commit cost a thread switch per waiter per batch.)
            req.parked.acquire()
        if not req.done:
            self._lead()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def _lead(self) -> None:
        """Commit the next batch (which holds the caller's own entry: a leader's entry
        is always first in the queue), then wake its callers and hand the lead to the
        first caller still queued, if any."""
        with self._mutex:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
        try:
            self._commit(batch)
        finally:
            with self._mutex:
                successor = self._queue[0] if self._queue else None
                self._leading = successor is not None
            for r in batch:
                if r.parked.locked():
                    r.parked.release()
            if successor is not None:
                successor.parked.release()

    def _commit(self, batch: list[_Pending]) -> None:
        """Write ``batch`` in one transaction; record each result or the error."""
        try:
            results = self._write_batch([r.write for r in batch])
        except AuditError as exc:
            for r in batch:
                r.error = exc
        except (sa.exc.SQLAlchemyError, OSError) as exc:  # OSError: e.g. the writer lock
            err = StoreError(f"audit store failed: {type(exc).__name__}: {exc}")
            err.__cause__ = exc
            for r in batch:
                r.error = err
        except BaseException as exc:  # e.g. KeyboardInterrupt in the leader: tell all
            for r in batch:
                r.error = exc
                r.done = True
            raise
        else:
            for r, res in zip(batch, results, strict=True):
                r.result = res
        for r in batch:
            r.done = True

    def _lock_head(self, conn: Connection) -> sa.Row[Any]:
        row = conn.execute(self._head_query).first()
        if row is None:
            raise StoreError("audit tables are not initialised (call create_tables)")
        return row

    def _now(self, last: str | None) -> str:
        now = format_time(self.clock())
        return last if last is not None and last > now else now

    def _write_batch(self, writers: Sequence[EntryWriter]) -> list[Appended]:
        with self._write_transaction() as conn:
            head = self._lock_head(conn)
            cr = CompactRange(head.size, _split_hashes(head.frontier), th=self.tree)
            leaf_hash = self.tree.leaf
            prev: bytes | None = head.last_leaf_hash
            now = self._now(head.last_time)
            entry_rows: list[dict[str, Any]] = []
            node_rows: list[dict[str, Any]] = []

            def on_node(level: int, idx: int, h: bytes) -> None:
                node_rows.append({"level": level, "idx": idx, "hash": h})

            out: list[Appended] = []
            committed = int(head.size)
            for write in writers:
                index = cr.size
                entry = write(LogTransaction(self, conn, cr, committed))
                leaf = entry.leaf(index=index, time=now, prev=prev)
                h = leaf_hash(leaf)
                cr.append(h, on_node)
                target = entry.target
                entry_rows.append(
                    {
                        "idx": index,
                        "leaf": leaf,
                        "leaf_hash": h,
                        "time": now,
                        "actor": _str_or_none(entry.actor),
                        "role": _str_or_none(entry.role),
                        "action": _column_text(entry.action),
                        "decision": _column_text(entry.decision),
                        "product": _str_or_none(target.get("product")),
                        "scope": _str_or_none(target.get("scope")),
                        "subject": _str_or_none(
                            target.get("enterprise") or target.get("principal")
                        ),
                    }
                )
                out.append(Appended(index, leaf, h, now))
                prev = h
            conn.execute(_ENTRIES_INSERT, entry_rows)
            if node_rows:
                conn.execute(_NODES_INSERT, node_rows)
            conn.execute(
                _HEAD_UPDATE,
                {
                    "size": cr.size,
                    "frontier": b"".join(cr.hashes),
                    "last_leaf_hash": prev,
                    "last_time": now,
                },
            )
        return out

    # ----------------------------------------------------------------- reading

    def size(self) -> int:
        """Return the number of committed entries."""
        with self.engine.connect() as conn:
            return self._size(conn)

    def _size(self, conn: Connection) -> int:
        size = conn.execute(sa.select(tables.head.c.size).where(tables.head.c.id == 1)).scalar()
        if size is None:
            raise StoreError("audit tables are not initialised (call create_tables)")
        return int(size)

    def leaf(self, index: int) -> bytes:
        """Return the leaf bytes of entry ``index``; raises :class:`OutOfRange`."""
        with self.engine.connect() as conn:
            leaf = conn.execute(
                sa.select(tables.entries.c.leaf).where(tables.entries.c.idx == index)
            ).scalar()
        if leaf is None:
            raise OutOfRange(f"no entry {index}")
        return bytes(leaf)

    def _perfect(
        self, conn: Connection, keys: Iterable[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        """Fetch perfect-subtree hashes by ``(level, idx)`` (level 0: leaf hashes)."""
        want = set(keys)
        leaves = [i for lv, i in want if lv == 0]
        inner = [(lv, i) for lv, i in want if lv > 0]
        got: dict[tuple[int, int], bytes] = {}
        if leaves:
            e = tables.entries
            for idx, h in conn.execute(
                sa.select(e.c.idx, e.c.leaf_hash).where(e.c.idx.in_(leaves))
            ):
                got[(0, int(idx))] = bytes(h)
        if inner:
            n = tables.nodes
            by_level: dict[int, list[int]] = {}
            for lv, i in inner:
                by_level.setdefault(lv, []).append(i)
            # One (level = ? AND idx IN (...)) term per level: SQLite answers each with
            # the primary key, where a row-value IN over (level, idx) scanned the whole
            # node table (O(n): half a second per proof at 1M entries).
            cond = sa.or_(
                *(sa.and_(n.c.level == lv, n.c.idx.in_(ids)) for lv, ids in by_level.items())
            )
            for lv, idx, h in conn.execute(sa.select(n.c.level, n.c.idx, n.c.hash).where(cond)):
                got[(int(lv), int(idx))] = bytes(h)
        if len(got) != len(want):
            raise StoreError("audit node cache is missing subtree hashes")
        return got

    def _range_hashes(self, conn: Connection, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        parts = [perfect_subtrees(a, b) for a, b in ranges]
        got = self._perfect(conn, (k for part in parts for k in part))
        return [fold([got[k] for k in part], th=self.tree) for part in parts]

    def _root(self, conn: Connection, size: int) -> bytes:
        if size == 0:
            return self.tree.empty
        return self._range_hashes(conn, [(0, size)])[0]

    def _check_size(self, conn: Connection, tree_size: int) -> None:
        current = self._size(conn)
        if not 0 <= tree_size <= current:
            raise OutOfRange(f"tree size {tree_size} is not in [0, {current}]")

    def root(self, size: int | None = None) -> bytes:
        """Return the root hash of the tree of ``size`` (default: current) entries.

        Raises :class:`OutOfRange` if ``size`` exceeds the log.
        """
        with self.engine.connect() as conn:
            if size is None:
                size = self._size(conn)
            self._check_size(conn, size)
            return self._root(conn, size)

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> InclusionProof:
        """Return the inclusion proof of ``index`` in the tree of ``tree_size``.

        Raises :class:`OutOfRange` unless ``0 <= index < tree_size <= size()``.
        """
        with self.engine.connect() as conn:
            if tree_size is None:
                tree_size = self._size(conn)
            self._check_size(conn, tree_size)
            if not 0 <= index < tree_size:
                raise OutOfRange(f"index {index} is not in a tree of size {tree_size}")
            ranges = inclusion_ranges(index, tree_size)
            hashes = self._range_hashes(conn, [*ranges, (index, index + 1), (0, tree_size)])
        return InclusionProof(index, tree_size, hashes[-2], hashes[-1], hashes[:-2])

    def consistency_proof(self, first: int, second: int | None = None) -> ConsistencyProof:
        """Return the consistency proof from tree ``first`` to tree ``second``.

        Raises :class:`OutOfRange` unless ``0 < first <= second <= size()``.
        """
        with self.engine.connect() as conn:
            if second is None:
                second = self._size(conn)
            self._check_size(conn, second)
            if not 0 < first <= second:
                raise OutOfRange(f"no consistency proof from {first} to {second}")
            ranges = consistency_ranges(first, second)
            hashes = self._range_hashes(conn, [*ranges, (0, first), (0, second)])
        return ConsistencyProof(first, second, hashes[-2], hashes[-1], hashes[:-2])

    def entries(
        self,
        *,
        start_time: datetime | str | None = None,
        end_time: datetime | str | None = None,
        actor: str | None = None,
        action: str | None = None,
        decision: str | None = None,
        product: str | None = None,
        scope: str | None = None,
        involves: str | None = None,
        role: str | None = None,
        reason_contains: str | None = None,
        cursor: int = 0,
        limit: int = 100,
        descending: bool = False,
        scan: int | None = None,
    ) -> Page:
        """Return entries matching every given filter, from ``cursor`` on (inclusive):
        upwards by index, or with ``descending`` downwards (newest first; ``cursor``
        is then the highest index wanted, any value past the end meaning "the newest").

        ``start_time`` is inclusive, ``end_time`` exclusive; since entry times never go
        backwards along the index, both become index bounds found on the time index
        (O(log n)), so a time filter never sorts or scans the log. ``involves`` keeps
        entries whose actor or subject (``target.enterprise``/``target.principal``) is
        that principal — the "own entries" view. ``reason_contains`` keeps refusals
        whose reason holds that text (case-insensitive); it reads leaves, so ``scan``
        bounds how many entries one call examines: the page then ends where the scan
        stopped and ``next_cursor`` continues from there. Raises :class:`OutOfRange`
        for a negative cursor or a limit outside 1..10000.
        """
        if cursor < 0 or not 1 <= limit <= 10_000:
            raise OutOfRange("cursor must be >= 0 and limit in 1..10000")
        e = tables.entries
        with self.engine.connect() as conn:
            low, high = self._index_bounds(conn, start_time, end_time)
            if descending:
                high = min(high, cursor + 1) if high is not None else cursor + 1
                if scan is not None:
                    low = max(low, high - scan)
            else:
                low = max(low, cursor)
                if scan is not None:
                    high = min(high, low + scan) if high is not None else low + scan
            query = sa.select(e.c.idx, e.c.leaf, e.c.leaf_hash).where(e.c.idx >= low)
            if high is not None:
                query = query.where(e.c.idx < high)
            for column, value in (
                (e.c.actor, actor),
                (e.c.action, action),
                (e.c.decision, decision),
                (e.c.product, product),
                (e.c.scope, scope),
                (e.c.role, role),
            ):
                if value is not None:
                    query = query.where(column == value)
            if involves is not None:
                query = query.where(sa.or_(e.c.actor == involves, e.c.subject == involves))
            if reason_contains:
                query = query.where(e.c.decision == "deny")
            order = e.c.idx.desc() if descending else e.c.idx
            query = query.order_by(order)
            if not reason_contains:
                rows = conn.execute(query.limit(limit + 1)).all()
                found = [StoredEntry(int(r.idx), bytes(r.leaf), bytes(r.leaf_hash)) for r in rows]
                more = len(found) > limit
                found = found[:limit]
                if not more:
                    return Page(found, self._scan_end(low, high, descending, scan))
                last = found[-1].index
                return Page(found, last - 1 if descending else last + 1)
            needle = reason_contains.casefold()
            found, last_seen = [], None
            for r in conn.execute(query).yield_per(500):
                last_seen = int(r.idx)
                stored = StoredEntry(last_seen, bytes(r.leaf), bytes(r.leaf_hash))
                reason = stored.entry.get("reason")
                if isinstance(reason, str) and needle in reason.casefold():
                    found.append(stored)
                    if len(found) == limit:
                        break
            if len(found) == limit and last_seen is not None:
                return Page(found, last_seen - 1 if descending else last_seen + 1)
            return Page(found, self._scan_end(low, high, descending, scan))

    @staticmethod
    def _scan_end(low: int, high: int | None, descending: bool, scan: int | None) -> int | None:
        """Where a page that found no more rows continues: past a bounded scan's
        window when one was set and there is more log beyond it, else nowhere."""
        if scan is None:
            return None
        if descending:
            return low - 1 if low > 0 else None
        return high  # the caller stops at the end of the log (size)

    def _index_bounds(
        self, conn: Connection, start_time: datetime | str | None, end_time: datetime | str | None
    ) -> tuple[int, int | None]:
        """The index range ``[low, high)`` of entries with ``start_time <= time <
        end_time`` (``high`` None: no upper bound), read on the time index."""
        e = tables.entries
        low, high = 0, None

        def first_at_or_after(t: datetime | str) -> int | None:
            idx = conn.execute(
                sa.select(e.c.idx).where(e.c.time >= _time_str(t)).order_by(e.c.time).limit(1)
            ).scalar()
            return None if idx is None else int(idx)

        if start_time is not None:
            first = first_at_or_after(start_time)
            low = first if first is not None else self._size(conn)
        if end_time is not None:
            first = first_at_or_after(end_time)
            high = first if first is not None else self._size(conn)
        return low, high

    def counts(
        self,
        *,
        start_time: datetime | str | None = None,
        end_time: datetime | str | None = None,
        involves: str | None = None,
    ) -> list[tuple[str | None, str, str, int]]:
        """Return ``(product, action, decision, count)`` over the entries in the time
        range (``involves``: only those of that principal), most frequent first."""
        e = tables.entries
        with self.engine.connect() as conn:
            low, high = self._index_bounds(conn, start_time, end_time)
            n = sa.func.count().label("n")
            query = (
                sa.select(e.c.product, e.c.action, e.c.decision, n)
                .where(e.c.idx >= low)
                .group_by(e.c.product, e.c.action, e.c.decision)
                .order_by(n.desc(), e.c.product, e.c.action, e.c.decision)
            )
            if high is not None:
                query = query.where(e.c.idx < high)
            if involves is not None:
                query = query.where(sa.or_(e.c.actor == involves, e.c.subject == involves))
            rows = conn.execute(query).all()
        return [(r.product, str(r.action), str(r.decision), int(r.n)) for r in rows]

    def witnesses(self) -> list[StoredWitness]:
        """Each witness's latest cosignature: the checkpoint it covers and its line."""
        c, cs = tables.checkpoints, tables.cosignatures
        latest = (
            sa.select(cs.c.witness, sa.func.max(cs.c.checkpoint_size).label("size"))
            .group_by(cs.c.witness)
            .subquery()
        )
        query = (
            sa.select(cs.c.witness, cs.c.checkpoint_size, cs.c.timestamp, cs.c.line, c.c.note)
            .join(
                latest,
                sa.and_(cs.c.witness == latest.c.witness, cs.c.checkpoint_size == latest.c.size),
            )
            .join(c, c.c.size == cs.c.checkpoint_size)
            .order_by(cs.c.witness, cs.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        seen: dict[str, StoredWitness] = {}
        for r in rows:
            seen.setdefault(
                str(r.witness),
                StoredWitness(
                    str(r.witness),
                    int(r.checkpoint_size),
                    int(r.timestamp),
                    str(r.line),
                    str(r.note),
                ),
            )
        return list(seen.values())

    # ----------------------------------------------------------------- checkpoints

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """Return the stored checkpoint of the largest tree size, if any."""
        c = tables.checkpoints
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(c).order_by(c.c.size.desc()).limit(1)).first()
        return _checkpoint(row) if row is not None else None

    def _age(self, cp: StoredCheckpoint) -> float:
        return (self.clock() - parse_time(cp.time)).total_seconds()

    def maybe_checkpoint(self) -> StoredCheckpoint | None:
        """Sign a checkpoint if the tree grew by ``checkpoint_entries`` or the latest is
        older than ``checkpoint_interval`` seconds; return it, or ``None`` if not due.
        """
        if self.signer is None:
            return None
        latest = self.latest_checkpoint()
        size = self.size()
        if latest is not None and latest.size >= size:
            return None
        if (
            latest is None
            or size - latest.size >= self.checkpoint_entries
            or self._age(latest) >= self.checkpoint_interval
        ):
            return self.checkpoint()
        return None

    def checkpoint(self) -> StoredCheckpoint:
        """Return the checkpoint of the current tree, signing it if none is stored.
        Raises :class:`BadCheckpoint` if there is no signer."""
        with self._write_transaction() as conn:
            head = self._lock_head(conn)
            size = int(head.size)
            c = tables.checkpoints
            row = conn.execute(sa.select(c).where(c.c.size == size)).first()
            if row is not None:
                return _checkpoint(row)
            root = CompactRange(size, _split_hashes(head.frontier), th=self.tree).root()
            return self._sign(conn, size, root)

    def _sign(self, conn: Connection, size: int, root: bytes) -> StoredCheckpoint:
        """Sign and store the checkpoint of ``size`` with ``root`` (head locked)."""
        if self.signer is None:
            raise BadCheckpoint("this audit log has no checkpoint signer")
        c = tables.checkpoints
        last = conn.execute(sa.select(sa.func.max(c.c.time))).scalar()
        when = self._now(last)
        note = self.signer.sign_note(checkpoint_text(self.origin, size, root, when))
        conn.execute(c.insert().values(size=size, root=root, time=when, note=note))
        return StoredCheckpoint(size, root, when, note)

    def checkpoint_at(self, size: int) -> StoredCheckpoint | None:
        """Return the stored checkpoint of exactly ``size``, if any."""
        c = tables.checkpoints
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(c).where(c.c.size == size)).first()
        return _checkpoint(row) if row is not None else None

    @staticmethod
    def cosigned_note(conn: Connection, cp: StoredCheckpoint) -> str:
        """Return ``cp``'s note with every cosignature line stored for it appended."""
        cs = tables.cosignatures
        lines = conn.execute(
            sa.select(cs.c.line).where(cs.c.checkpoint_size == cp.size).order_by(cs.c.id)
        ).scalars()
        return cp.note + "".join(f"{line}\n" for line in lines)

    @classmethod
    def latest_cosigned_note(cls, conn: Connection) -> str | None:
        """Return the largest checkpoint any witness cosigned, with its cosignature
        lines, or ``None`` if no checkpoint has been cosigned yet."""
        c, cs = tables.checkpoints, tables.cosignatures
        size = conn.execute(sa.select(sa.func.max(cs.c.checkpoint_size))).scalar()
        if size is None:
            return None
        row = conn.execute(sa.select(c).where(c.c.size == size)).one()
        return cls.cosigned_note(conn, _checkpoint(row))

    # ----------------------------------------------------------------- export

    def export(
        self,
        out: Callable[[bytes], object] | IO[bytes] | IO[str],
        *,
        start: int = 0,
        end: int | None = None,
        keys: Sequence[Mapping[str, Any]] | None = None,
        witnesses: Sequence[Mapping[str, Any]] = (),
        page: int = 2000,
    ) -> int:
        """Stream the bundle of entries ``[start, end)`` (DESIGN §7) to ``out``.

        ``out`` is a callable taking bytes, or a binary or text stream. Memory is bounded
        by ``page`` entries. ``keys`` are the JWKs for the header (each with ``kid`` and
        ``name``; default: the signer's public key). The bundle ends with the stored
        checkpoint of size ``end`` with its cosignatures, preceded by
        the latest cosigned checkpoint inside the range, if any. Returns ``end``.
        Raises :class:`OutOfRange` for a bad range, :class:`BadCheckpoint` when no
        checkpoint of size ``end`` is stored.
        """
        write = _writer_for(out)
        with self.engine.connect() as conn:
            size = self._size(conn)
        if end is None:
            end = size
        if not 0 <= start <= end <= size:
            raise OutOfRange(f"export range [{start}, {end}) is not within [0, {size}]")
        final = self.checkpoint_at(end)
        if final is None:
            raise BadCheckpoint(
                f"no checkpoint of size {end} is stored: sign it first "
                "(LogTransaction.checkpoint, in the export's own entry)"
            )
        if keys is None:
            if self.signer is None:
                raise BadCheckpoint("no keys given and no signer to describe")
            keys = [self.signer.public_jwk()]
        w = BundleWriter(write)
        w.header(self.origin, start, end, keys, witnesses, self.suite.name)
        c, cs, e = tables.checkpoints, tables.cosignatures, tables.entries
        with self.engine.connect() as conn:
            if start > 0:
                keys_ = perfect_subtrees(0, start)
                got = self._perfect(conn, keys_)
                w.prefix(start, [got[k] for k in keys_])
            witnessed = conn.execute(
                sa.select(c)
                .where(
                    c.c.size > start, c.c.size < end, c.c.size.in_(sa.select(cs.c.checkpoint_size))
                )
                .order_by(c.c.size.desc())
                .limit(1)
            ).first()
        cursor = start
        while cursor < end:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(e.c.idx, e.c.leaf)
                    .where(e.c.idx >= cursor, e.c.idx < end)
                    .order_by(e.c.idx)
                    .limit(page)
                ).all()
            if not rows:
                raise StoreError(f"entry {cursor} is missing from the store")
            for idx, leaf in rows:
                if idx != cursor:
                    raise StoreError(f"entry {cursor} is missing from the store")
                w.entry(idx, bytes(leaf))
                cursor += 1
        with self.engine.connect() as conn:
            if witnessed is not None:
                w.checkpoint(self.cosigned_note(conn, _checkpoint(witnessed)))
            w.checkpoint(self.cosigned_note(conn, final))
        return end


def _checkpoint(row: sa.Row[Any]) -> StoredCheckpoint:
    return StoredCheckpoint(int(row.size), bytes(row.root), str(row.time), str(row.note))


def _str_or_none(value: Any) -> str | None:
    return _column_text(value) if isinstance(value, str) else None


def _column_text(value: str) -> str:
    # For the searchable copies of a few fields only (the leaf keeps the exact text):
    # PostgreSQL text refuses NUL, and one refused row would fail every entry of the
    # batch, whoever sent it.
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _time_str(value: datetime | str) -> str:
    return value if isinstance(value, str) else format_time(value)


def _writer_for(out: Callable[[bytes], object] | IO[bytes] | IO[str]) -> Callable[[bytes], object]:
    if isinstance(out, io.TextIOBase):
        text = out

        def write_text(data: bytes) -> None:
            text.write(data.decode("utf-8"))

        return write_text
    write = getattr(out, "write", None)
    if write is not None:
        return write  # type: ignore[no-any-return]
    if callable(out):
        return out
    raise TypeError("export needs a callable or a writable stream")
