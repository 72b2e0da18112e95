"""Shared fixtures for the audit tests: published vectors, keys, databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.note import NoteSigner

REPO = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """``$SANDBOX_SHARED_DIR``, else ``<repo>/../shared`` (vectors are never copied in)."""
    return Path(os.environ.get("SANDBOX_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def vectors() -> Path:
    path = shared_dir() / "vectors"
    if not (path / "merkle").is_dir():
        pytest.skip(f"published test vectors not found at {path} (set SANDBOX_SHARED_DIR)")
    return path


@pytest.fixture(scope="session")
def signer() -> NoteSigner:
    return NoteSigner.generate("public-data-sandbox/audit")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL with a fresh schema as search_path; skipped if not configured."""
    url = os.environ.get("SANDBOX_TEST_DATABASE_URL")
    if not url:
        pytest.skip("SANDBOX_TEST_DATABASE_URL is not set")
    import sqlalchemy as sa

    schema = f"audit_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        _dispose_created()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(autouse=True)
def _dispose_engines() -> Iterator[None]:
    """Close every connection the test's logs opened (warnings are errors)."""
    yield
    _dispose_created()


def _dispose_created() -> None:
    from audit_helpers import CREATED

    while CREATED:
        log = CREATED.pop()
        log.close()  # type: ignore[attr-defined]
        log.engine.dispose()  # type: ignore[attr-defined]
