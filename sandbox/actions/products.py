"""Registering products and loading their data."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from products.catalogue import Catalogue, ProductRecord, ProductVersion
from products.errors import Conflict, DomainError, Forbidden, NotFound
from products.loader import DataFormat, LoadResult, Progress, load_file
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


def _load_version(
    rt: Runtime,
    product_id: str,
    source: Path,
    fmt: DataFormat,
    loaded_by: str,
    owner_only: bool,
    progress: Progress | None,
) -> tuple[ProductRecord, int, Path, LoadResult]:
    """Load ``source`` into the product's next version file (not yet current)."""
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
    return record, version, dest, result


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
    _, version, _, result = _load_version(
        rt, product_id, source, fmt, loaded_by, owner_only, progress
    )
    return rt.catalogue.activate_version(product_id, version, result.row_count, result.content_hash)


class VersionActivation(AtCommit):
    """Makes a loaded version current when its audit entry commits: until then (and
    for ever, if the append fails) the file is loaded but no call reads it."""

    def __init__(
        self,
        product_id: str,
        version: int,
        result: LoadResult,
        now: datetime,
        predicted: dict[str, Any],
        render: Render,
    ) -> None:
        super().__init__(render)
        self.product_id = product_id
        self.version = version
        self.result = result
        self.now = now
        self.predicted = predicted

    @classmethod
    def apply_all(cls, conn: Connection, effects: Sequence[Any]) -> None:
        for e in effects:
            record = Catalogue.activate_version_in(
                conn, e.product_id, e.version, e.result.row_count, e.result.content_hash, e.now
            )
            final = record.to_dict(include_counts=True)
            if final != e.predicted:  # a newer version became current meanwhile
                e.replacement = final


def load_product_data_with_entry(
    rt: Runtime,
    product_id: str,
    source: Path,
    fmt: DataFormat,
    loaded_by: str,
    note: AuditNote,
    render: Render,
) -> ProductRecord:
    """``load_product_data``, with the new version made current in the transaction of
    the call's audit entry; returns the product as it will be."""
    record, version, dest, result = _load_version(
        rt, product_id, source, fmt, loaded_by, True, None
    )
    now = rt.clock()
    loaded = ProductVersion(
        version=version,
        row_count=result.row_count,
        content_hash=result.content_hash,
        data_file=dest.relative_to(rt.settings.products_dir).as_posix(),
        loaded_by=loaded_by,
        finished_at=now,
    )
    predicted = dataclasses.replace(record, current=loaded)
    note.effect = VersionActivation(
        product_id, version, result, now, predicted.to_dict(include_counts=True), render
    )
    note.after_append.append(lambda _index: rt.catalogue.forget())
    return predicted
