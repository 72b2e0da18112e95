"""The catalogue: registered data products, their versions and current data file.

A product's data is replaced by loading a new version: the DuckDB file is written
under a fresh name no reader knows (``staging_path``), and only then does the
transaction of the upload's audit entry record it as the next version and move
``current_version`` to it (``add_version``). Readers resolve the current version
through the control plane, so they never see half a load, and a load that fails or
whose call is refused leaves no version behind.

Writes take the caller's connection: they commit in the transaction of the call's
audit entry (``sandbox/actions/call.py``) and never open their own.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from products.errors import NotFound
from products.manifest import DataProduct, parse_manifest
from products.tables import product_versions, products, verification_products
from products.verification import VerificationProduct, parse_verification_product

Clock = Callable[[], datetime]

STAGED_PREFIX = "load-"
# Older than any commit a finished load can wait for (the audit store's lock timeout
# is seconds): an unrecorded staged file this old was left by a killed process.
ORPHAN_AGE_S = 3600.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ProductVersion:
    version: int
    row_count: int
    content_hash: str
    data_file: str
    loaded_by: str
    finished_at: datetime


# Inserts that write nothing for a taken id instead of failing, so that they can run in
# a shared transaction (the audit append's); RETURNING tells whether they wrote.
_INSERT_PRODUCT = {
    name: insert(products).on_conflict_do_nothing(index_elements=["id"]).returning(products.c.id)
    for name, insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert))
}
_INSERT_VERIFICATION = {
    name: insert(verification_products)
    .on_conflict_do_nothing(index_elements=["id"])
    .returning(verification_products.c.id)
    for name, insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert))
}


@dataclass(frozen=True)
class ProductRecord:
    """A registered product with its current data version (None before the first load)."""

    manifest: DataProduct
    owner: str
    status: str
    created_at: datetime
    current: ProductVersion | None

    @property
    def id(self) -> str:
        return self.manifest.id

    def to_dict(self, *, include_counts: bool) -> dict[str, Any]:
        """Return catalogue metadata: the manifest plus version facts.

        The exact row count is an exact aggregate of the data, and the content hash
        an exact function of it (knowing the rest of the file, one row can be
        recovered), so both are only included for operators and regulators
        (``include_counts``).
        """
        out = self.manifest.to_dict()
        out["owner"] = self.owner
        out["status"] = self.status
        out["created_at"] = _iso(self.created_at)
        if self.current is None:
            out["version"] = None
            out["loaded_at"] = None
        else:
            out["version"] = self.current.version
            out["loaded_at"] = _iso(self.current.finished_at)
            if include_counts:
                out["row_count"] = self.current.row_count
                out["content_hash"] = self.current.content_hash
        return out


def _iso(t: datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@functools.lru_cache(maxsize=256)
def _manifest(text: str) -> DataProduct:
    # Stored manifests never change (a product's schema is fixed at registration), so
    # the validated object can be shared; parsing on every call showed in profiles.
    return parse_manifest(json.loads(text), registering=False)


@functools.lru_cache(maxsize=1024)
def _verification(text: str, manifest: DataProduct) -> VerificationProduct:
    return parse_verification_product(json.loads(text), manifest)


def manifest_json(manifest: DataProduct) -> str:
    return json.dumps(manifest.to_dict(), sort_keys=True, separators=(",", ":"))


class Catalogue:
    """Registered products in the control-plane store."""

    def __init__(self, engine: Engine, products_dir: Path, clock: Clock = _utcnow) -> None:
        self._engine = engine
        self.products_dir = products_dir
        self._clock = clock
        self.cache_ttl_s = 1.0
        self._cache: dict[str, tuple[float, tuple[VerificationProduct, ProductRecord]]] = {}

    @staticmethod
    def register(
        conn: Connection, manifest: DataProduct, owner: str, now: datetime
    ) -> ProductRecord | None:
        """Register a new product on ``conn``: returns its record, or None, writing
        nothing, if the id is taken."""
        values = {
            "id": manifest.id,
            "owner": owner,
            "manifest": manifest_json(manifest),
            "status": "active",
            "current_version": None,
            "created_at": now,
            "updated_at": now,
        }
        if conn.execute(_INSERT_PRODUCT[conn.dialect.name], values).first() is None:
            return None
        return ProductRecord(manifest, owner, "active", now, None)

    def forget(self) -> None:
        """Drop this process's cached definitions (after a change committed elsewhere)."""
        self._cache.clear()

    # One query per read: the product joined with its current version (on the hot path
    # of every query and verification call).
    _WITH_CURRENT = sa.select(
        products,
        product_versions.c.version,
        product_versions.c.row_count,
        product_versions.c.content_hash,
        product_versions.c.data_file,
        product_versions.c.loaded_by,
        product_versions.c.finished_at,
    ).select_from(
        products.outerjoin(
            product_versions,
            sa.and_(
                product_versions.c.product_id == products.c.id,
                product_versions.c.version == products.c.current_version,
            ),
        )
    )

    def get(self, product_id: str) -> ProductRecord:
        """Return the product. Raises ``NotFound``."""
        with self._engine.connect() as conn:
            row = conn.execute(self._WITH_CURRENT.where(products.c.id == product_id)).first()
        if row is None:
            raise NotFound(f"no product {product_id!r}", {"product": product_id})
        return self._record(row)

    def products(self) -> list[ProductRecord]:
        """Return every product, ordered by id."""
        with self._engine.connect() as conn:
            rows = conn.execute(self._WITH_CURRENT.order_by(products.c.id)).all()
        return [self._record(r) for r in rows]

    @staticmethod
    def _record(row: Any) -> ProductRecord:
        current = None
        if row.current_version is not None:
            current = ProductVersion(
                version=row.version,
                row_count=int(row.row_count),
                content_hash=row.content_hash,
                data_file=row.data_file,
                loaded_by=row.loaded_by,
                finished_at=row.finished_at,
            )
        return ProductRecord(
            manifest=_manifest(row.manifest),
            owner=row.owner,
            status=row.status,
            created_at=row.created_at,
            current=current,
        )

    def staging_path(self, product_id: str) -> Path:
        """Return a fresh path, under the product's directory, for loading a new version
        into (nothing is recorded: a load that fails, or whose call is refused, leaves
        no version behind; its file is removed by whoever made it). Files of loads
        that finished but never committed (the process was killed in between) are
        removed first (``remove_orphans``)."""
        directory = self.products_dir / product_id
        directory.mkdir(parents=True, exist_ok=True)
        self.remove_orphans(product_id)
        return directory / f"{STAGED_PREFIX}{uuid.uuid4().hex}.duckdb"

    def remove_orphans(self, product_id: str, *, older_than_s: float = ORPHAN_AGE_S) -> list[str]:
        """Remove the product's staged files that no version records and that were
        last written more than ``older_than_s`` ago; return their names.

        A finished load waits for its call's commit only briefly (the audit store's
        lock timeout), so a staged file that old and unrecorded belongs to a process
        that died between its load and its commit. Younger ones may still be
        committing elsewhere and are left alone.
        """
        directory = self.products_dir / product_id
        staged = sorted(directory.glob(f"{STAGED_PREFIX}*.duckdb"))
        if not staged:
            return []
        with self._engine.connect() as conn:
            recorded = set(
                conn.execute(
                    sa.select(product_versions.c.data_file).where(
                        product_versions.c.product_id == product_id
                    )
                ).scalars()
            )
        cutoff = time.time() - older_than_s
        removed = []
        for path in staged:
            name = path.relative_to(self.products_dir).as_posix()
            lock = path.with_name(path.name + ".lock")
            try:
                old = path.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            if name in recorded or lock.exists() or not old:
                continue
            path.unlink(missing_ok=True)
            removed.append(path.name)
        return removed

    @classmethod
    def add_version(
        cls,
        conn: Connection,
        product_id: str,
        data_file: Path,
        *,
        row_count: int,
        content_hash: str,
        loaded_by: str,
        now: datetime,
        products_dir: Path,
    ) -> ProductRecord:
        """Record ``data_file`` (loaded and complete) as the product's next version and
        make it current, on ``conn``; return the product as it then is.

        The version number is the next free one, allocated under the product row's
        lock, so concurrent loads get consecutive numbers.
        """
        # Locks the product row (PostgreSQL; SQLite writers are serialised already).
        conn.execute(products.update().where(products.c.id == product_id).values(updated_at=now))
        latest = conn.execute(
            sa.select(sa.func.max(product_versions.c.version)).where(
                product_versions.c.product_id == product_id
            )
        ).scalar()
        version = int(latest or 0) + 1
        conn.execute(
            product_versions.insert().values(
                product_id=product_id,
                version=version,
                status="active",
                row_count=row_count,
                content_hash=content_hash,
                data_file=data_file.relative_to(products_dir).as_posix(),
                loaded_by=loaded_by,
                started_at=now,
                finished_at=now,
            )
        )
        conn.execute(
            products.update()
            .where(products.c.id == product_id)
            .values(current_version=version, updated_at=now)
        )
        row = conn.execute(cls._WITH_CURRENT.where(products.c.id == product_id)).one()
        return cls._record(row)

    def data_path(self, record: ProductRecord) -> Path:
        """Return the current data file. Raises ``NotFound`` if no data is loaded yet."""
        if record.current is None:
            raise NotFound(f"product {record.id!r} has no data loaded yet", {"product": record.id})
        return self.products_dir / record.current.data_file

    @staticmethod
    def register_verification(
        conn: Connection, vp: VerificationProduct, created_by: str, now: datetime
    ) -> bool:
        """Store a validated verification product on ``conn``: False, writing nothing,
        if the id is taken."""
        values = {
            "id": vp.id,
            "product_id": vp.product,
            "definition": json.dumps(vp.to_dict(), sort_keys=True),
            "created_by": created_by,
            "status": "active",
            "created_at": now,
        }
        return conn.execute(_INSERT_VERIFICATION[conn.dialect.name], values).first() is not None

    def verification(self, vp_id: str) -> tuple[VerificationProduct, ProductRecord]:
        """Return a verification product and the data product it is defined on.

        Raises ``NotFound``.
        """
        vp = verification_products
        with self._engine.connect() as conn:
            row = conn.execute(
                self._WITH_CURRENT.add_columns(vp.c.definition)
                .join_from(products, vp, vp.c.product_id == products.c.id)
                .where(vp.c.id == vp_id)
            ).first()
        if row is None:
            raise NotFound(f"no verification product {vp_id!r}", {"verification_product": vp_id})
        record = self._record(row)
        return _verification(row.definition, record.manifest), record

    def verification_cached(self, vp_id: str) -> tuple[VerificationProduct, ProductRecord]:
        """``verification`` as read at most ``cache_ttl_s`` seconds ago (this process's
        own catalogue writes clear it at once): after another process activates a new
        data version, calls may be answered from the previous, complete version for
        that long. Raises ``NotFound`` (not cached)."""
        now = time.monotonic()
        hit = self._cache.get(vp_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = self.verification(vp_id)
        if len(self._cache) > 1_000:
            self._cache.clear()
        self._cache[vp_id] = (now + self.cache_ttl_s, found)
        return found

    def versions(self, product_id: str) -> list[dict[str, Any]]:
        """Return every data version of a product, newest first, with its load facts
        (for operators and regulators: row counts are exact aggregates)."""
        v = product_versions
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(v).where(v.c.product_id == product_id).order_by(v.c.version.desc())
            ).all()
        return [
            {
                "version": int(r.version),
                "status": r.status,
                "row_count": r.row_count,
                "content_hash": r.content_hash,
                "loaded_by": r.loaded_by,
                "started_at": _iso(r.started_at),
                "finished_at": _iso(r.finished_at) if r.finished_at is not None else None,
            }
            for r in rows
        ]

    def verification_ids(self, product_id: str | None = None) -> list[str]:
        """Return the ids of verification products (of one data product), ordered."""
        q = sa.select(verification_products.c.id).order_by(verification_products.c.id)
        if product_id is not None:
            q = q.where(verification_products.c.product_id == product_id)
        with self._engine.connect() as conn:
            return [str(r) for r in conn.execute(q).scalars()]

    def verification_product_owner(self, vp_id: str) -> str | None:
        """Return the data product a verification product is defined on, or None."""
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(verification_products.c.product_id).where(
                    verification_products.c.id == vp_id
                )
            ).first()
        return None if row is None else str(row.product_id)
