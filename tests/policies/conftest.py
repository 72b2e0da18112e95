"""Policy stores on a real control-plane store (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine

from sandbox.db import create_engine, migrate


@dataclass
class FakeClock:
    """An injected clock: tests move time instead of sleeping."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC))


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    eng = create_engine(store_url)
    migrate(eng)
    yield eng
    eng.dispose()
