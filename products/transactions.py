"""Control-plane transactions that read, then write on what they read.

On SQLite (WAL) a plain transaction takes no lock until its first write, so readers
never wait; but a transaction that reads first and writes afterwards would fail if
another writer committed in between. Such transactions ask for the write lock up
front (``BEGIN IMMEDIATE``, emitted by ``sandbox.db``'s engine for connections carrying
this option). PostgreSQL ignores the option: there, row locks and constraints decide.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine

IMMEDIATE_OPTION = "sqlite_immediate"


@contextmanager
def read_then_write(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the write lock from its first statement; commits on exit."""
    with engine.connect() as conn:
        conn.execution_options(**{IMMEDIATE_OPTION: True})
        with conn.begin():
            yield conn
