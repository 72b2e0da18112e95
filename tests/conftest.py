"""Fixtures shared by the whole suite: real stores in temp dirs, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import settings

# Timing is not what property tests check, and a loaded CI machine (two pytest workers,
# PostgreSQL, servers started by other tests) makes any deadline flaky.
settings.register_profile("sandbox", deadline=None)
settings.load_profile("sandbox")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SANDBOX_SHARED_DIR", REPO.parent / "shared"))
PG_URL = os.environ.get("SANDBOX_TEST_DATABASE_URL")


def pg_schema_url(base: str, schema: str) -> str:
    """Return ``base`` with every connection's search_path set to ``schema``."""
    url = sa.engine.make_url(base)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL on a fresh schema (skipped when SANDBOX_TEST_DATABASE_URL is unset)."""
    if not PG_URL:
        pytest.skip("SANDBOX_TEST_DATABASE_URL is not set: PostgreSQL tests skipped")
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield pg_schema_url(PG_URL, schema)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The control-plane URL for each supported store: every store test runs on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'control.sqlite3'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not found at {SHARED} (set SANDBOX_SHARED_DIR)")
    return SHARED
