"""Policy stores on a real control-plane store (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine

from policies.principals import (
    Principal,
    PrincipalStore,
    PublicKey,
    Role,
    generate_keypair,
    parse_key,
)
from policies.scopes import Scope, ScopeGrant, ScopeStatus, ScopeStore
from products.catalogue import Catalogue
from products.manifest import DataProduct
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


def add_principal(
    engine: Engine, clock: FakeClock, pid: str, role: Role, keys: Sequence[PublicKey]
) -> Principal:
    """Store a principal in a transaction of its own (as a call's commit would)."""
    principal = Principal(pid, role, pid, tuple(keys), clock())
    with engine.begin() as conn:
        assert PrincipalStore.add(conn, principal, None) is not None
    return principal


def store_grant(engine: Engine, grant: ScopeGrant, now: datetime) -> Scope | None:
    """Store a grant in a transaction of its own; None if the id is taken."""
    with engine.begin() as conn:
        return ScopeStore.grant(conn, grant, "op", now)


def move_scope(
    engine: Engine, scope_id: str, status: ScopeStatus, allowed_from: Sequence[ScopeStatus]
) -> Scope | None:
    """Move a scope's status in a transaction of its own; None if not allowed."""
    with engine.begin() as conn:
        return ScopeStore.set_status(
            conn, scope_id, status, None, allowed_from=allowed_from, now=datetime.now(UTC)
        )


def seed(engine: Engine, clock: FakeClock, product: DataProduct, enterprise: str) -> None:
    """Register ``product`` (owner ``op``) and an enterprise principal with one key."""
    with engine.begin() as conn:
        Catalogue.register(conn, product, "op", clock())
    add_principal(
        engine,
        clock,
        enterprise,
        Role.ENTERPRISE,
        [parse_key({"public_key": generate_keypair()[1].decode()})],
    )
