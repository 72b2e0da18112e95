"""Registering products and loading their data."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from products.catalogue import Catalogue, ProductRecord
from products.errors import Conflict, DomainError, Forbidden, NotFound
from products.loader import DataFormat, Progress, load_file
from products.manifest import DataProduct, parse_manifest
from sandbox.actions.at_commit import AtCommit, Render
from sandbox.actions.note import AuditNote
from sandbox.runtime import Runtime


def register_product(rt: Runtime, manifest_data: Any, owner: str) -> ProductRecord:
    """Validate a manifest and register the product. Raises ``InvalidRequest``/``Conflict``."""
    manifest = parse_manifest(manifest_data)
    return rt.catalogue.register(manifest, owner)


class ProductRegistration(AtCommit):
    """Registers a product when its audit entry commits (sandbox/actions/at_commit.py),
    or refuses the call with ``conflict`` if the id was taken meanwhile."""

    def __init__(self, manifest: DataProduct, owner: str, now: datetime, render: Render):
        super().__init__(render)
        self.manifest = manifest
        self.owner = owner
        self.now = now

    @classmethod
    def apply_all(cls, conn: Connection, effects: Sequence[Any]) -> None:
        for e in effects:
            if not Catalogue.register_in(conn, e.manifest, e.owner, e.now):
                e.refusal = Conflict(
                    f"product {e.manifest.id!r} is already registered",
                    {"product": e.manifest.id},
                )


def register_product_with_entry(
    rt: Runtime, manifest_data: Any, owner: str, note: AuditNote, render: Render
) -> ProductRecord:
    """``register_product``, committed with the call's audit entry; returns the record
    as it will be. Raises ``InvalidRequest``/``Conflict``."""
    manifest = parse_manifest(manifest_data)
    try:
        rt.catalogue.get(manifest.id)
    except NotFound:
        pass
    else:
        raise Conflict(f"product {manifest.id!r} is already registered", {"product": manifest.id})
    now = rt.clock()
    note.effect = ProductRegistration(manifest, owner, now, render)
    note.after_append.append(lambda _index: rt.catalogue.forget())
    return ProductRecord(manifest, owner, "active", now, None)


def load_product_data(
    rt: Runtime,
    product_id: str,
    source: Path,
    fmt: DataFormat,
    loaded_by: str,
    *,
    owner_only: bool = True,
    progress: Progress | None = None,
) -> ProductRecord:
    """Load ``source`` as the product's next version and make it current.

    Raises ``NotFound``, ``Forbidden`` (not the product's owner) or ``InvalidRequest``
    (rows that break the manifest; then no version becomes current).
    """
    record = rt.catalogue.get(product_id)
    if owner_only and record.owner != loaded_by:
        raise Forbidden(
            f"product {product_id!r} belongs to {record.owner!r}; only its owner loads data",
            {"product": product_id},
        )
    version, dest = rt.catalogue.begin_version(product_id, loaded_by)
    try:
        result = load_file(
            record.manifest, source, fmt, dest, limits=rt.load_limits, progress=progress
        )
    except DomainError:
        rt.catalogue.fail_version(product_id, version)
        raise
    except BaseException:
        rt.catalogue.fail_version(product_id, version)
        dest.unlink(missing_ok=True)
        raise
    return rt.catalogue.activate_version(product_id, version, result.row_count, result.content_hash)
