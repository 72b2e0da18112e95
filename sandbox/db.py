"""The control-plane store: engines for SQLite (WAL) and PostgreSQL, and migrations.

Why a small migration table rather than Alembic: the schema is owned by three
packages, each with its own ``MetaData``; a numbered list of migration functions,
applied in one transaction and recorded in ``schema_migrations``, keeps the whole
history in one short, tested module, without a second configuration tree
(``alembic.ini``, ``env.py``) that operators would have to keep in step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from audit.log import create_tables as create_audit_tables
from policies import tables as policies_tables
from products import tables as products_tables
from products.errors import InvalidRequest
from products.transactions import IMMEDIATE_OPTION, read_then_write
from sandbox.errors import Unavailable
from sandbox.models import tables as model_tables
from sandbox.settings import Settings
from sandbox.verification import tables as verification_tables

migrations_table_meta = sa.MetaData()
schema_migrations = sa.Table(
    "schema_migrations",
    migrations_table_meta,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class StoreTimeouts:
    """How long any connection may wait for a lock, sit idle inside a transaction or
    run one statement (DESIGN §2.9): a frozen or crashed process's transaction is
    ended by PostgreSQL after ``idle_transaction_s``, releasing its locks, and
    nobody waits for a lock longer than ``lock_s`` (the caller gets 503)."""

    lock_s: float = 5.0
    idle_transaction_s: float = 2.0
    statement_s: float = 30.0


def create_engine(
    url: str, *, sqlite_synchronous: str = "NORMAL", timeouts: StoreTimeouts = StoreTimeouts()
) -> Engine:
    """Return an engine for the control plane.

    SQLite gets WAL, foreign keys and a busy timeout of ``timeouts.lock_s``;
    transactions begin deferred, except those opened with
    ``products.transactions.read_then_write``, which begin ``IMMEDIATE`` so that they
    serialise instead of failing on lock upgrade. PostgreSQL connections get the
    lock, idle-in-transaction and statement timeouts. Raises ``InvalidRequest`` for a
    URL SQLAlchemy cannot use.
    """
    try:
        parsed = sa.engine.make_url(url)
    except ArgumentError:
        raise InvalidRequest(f"database URL {url!r} is not a valid SQLAlchemy URL") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise InvalidRequest(
            f"database URL {url!r}: the control plane runs on SQLite or PostgreSQL only"
        )
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise InvalidRequest(
            f"database URL {url!r}: an in-memory SQLite store would vanish with the "
            "process; name a file (sqlite:////path/control.sqlite3)"
        )
    try:
        if backend == "sqlite":
            engine = sa.create_engine(
                parsed,
                connect_args={"timeout": timeouts.lock_s, "check_same_thread": False},
                pool_size=8,
                max_overflow=32,
            )
            _configure_sqlite(engine, sqlite_synchronous, timeouts)
            return engine
        engine = sa.create_engine(parsed, pool_size=8, max_overflow=32, pool_pre_ping=True)
        _configure_postgresql(engine, timeouts)
        return engine
    except (NoSuchModuleError, ImportError):  # ImportError: a driver not installed
        raise InvalidRequest(f"database URL {url!r} names an unsupported driver") from None


def _configure_postgresql(engine: Engine, timeouts: StoreTimeouts) -> None:
    settings = (
        f"SET lock_timeout = {int(timeouts.lock_s * 1000)}; "
        f"SET idle_in_transaction_session_timeout = {int(timeouts.idle_transaction_s * 1000)}; "
        f"SET statement_timeout = {int(timeouts.statement_s * 1000)}"
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True
        with dbapi_conn.cursor() as cur:
            cur.execute(settings)
        dbapi_conn.autocommit = autocommit


def _configure_sqlite(engine: Engine, synchronous: str, timeouts: StoreTimeouts) -> None:
    if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
        raise InvalidRequest(f"sqlite synchronous must be NORMAL or FULL, not {synchronous!r}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below decide how transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(timeouts.lock_s * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Readers and write-first transactions begin deferred (WAL readers never wait);
        # read-then-write transactions take the write lock up front
        # (products.transactions.read_then_write).
        immediate = conn.get_execution_options().get(IMMEDIATE_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


def _initial(conn: Connection) -> None:
    for meta in (products_tables.metadata, policies_tables.metadata, verification_tables.metadata):
        meta.create_all(conn)


def _enumeration_reviews(conn: Connection) -> None:
    verification_tables.enumeration_reviews.create(conn, checkfirst=True)


def _drop_probe_totals(conn: Connection) -> None:
    # The per-bucket totals served the in-request assessment, which the scheduled
    # review replaced (it reads the per-key rows).
    conn.exec_driver_sql("DROP TABLE IF EXISTS verification_probe_totals")


def _console_sessions(conn: Connection) -> None:
    policies_tables.console_sessions.create(conn, checkfirst=True)


def _model_products(conn: Connection) -> None:
    model_tables.metadata.create_all(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _initial),
    Migration(2, "scheduled enumeration reviews", _enumeration_reviews),
    Migration(3, "probe totals dropped", _drop_probe_totals),
    Migration(4, "console sessions", _console_sessions),
    Migration(5, "model products, versions and filings (DESIGN §11.3)", _model_products),
)


def migrate(engine: Engine, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply pending migrations in order, each in its own transaction.

    Returns the versions applied (empty when the store is current). Safe to run
    from several processes at once: a version already recorded is skipped. The
    audit log's tables are created by ``audit`` itself (it stands alone, so a
    regulator's copy of the log needs no code of ours).
    """
    try:
        # Several processes may start at once: schema creation reads, then writes.
        locking = engine.execution_options(**{IMMEDIATE_OPTION: True})
        with locking.begin() as conn:
            migrations_table_meta.create_all(conn)
        create_audit_tables(locking)
    except OperationalError as exc:
        # The store is down or unreachable: the platform's failure, not the caller's.
        raise Unavailable(f"cannot open the control-plane store: {exc.orig}") from None
    applied: list[int] = []
    for m in sorted(migrations, key=lambda m: m.version):
        with read_then_write(engine) as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7262001)")
            done = conn.execute(
                sa.select(schema_migrations.c.version).where(
                    schema_migrations.c.version == m.version
                )
            ).first()
            if done:
                continue
            m.apply(conn)
            conn.execute(
                schema_migrations.insert().values(
                    version=m.version, name=m.name, applied_at=datetime.now(UTC)
                )
            )
            applied.append(m.version)
    return applied


def current_version(engine: Engine) -> int:
    """Return the highest applied migration version (0 for an empty store)."""
    with engine.connect() as conn:
        v = conn.execute(sa.select(sa.func.max(schema_migrations.c.version))).scalar()
    return int(v or 0)


def engine_for(settings: Settings) -> Engine:
    """Return the control-plane engine for ``settings`` (creating the data dir for SQLite)."""
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return create_engine(
        settings.effective_database_url,
        sqlite_synchronous=settings.sqlite_synchronous,
        timeouts=StoreTimeouts(
            lock_s=settings.store_lock_timeout_s,
            idle_transaction_s=settings.store_idle_transaction_timeout_s,
            statement_s=settings.store_statement_timeout_s,
        ),
    )
