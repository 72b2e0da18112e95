"""Registering products and loading their data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from products.catalogue import ProductRecord
from products.errors import DomainError, Forbidden
from products.loader import DataFormat, Progress, load_file
from products.manifest import parse_manifest
from sandbox.runtime import Runtime


def register_product(rt: Runtime, manifest_data: Any, owner: str) -> ProductRecord:
    """Validate a manifest and register the product. Raises ``InvalidRequest``/``Conflict``."""
    manifest = parse_manifest(manifest_data)
    return rt.catalogue.register(manifest, owner)


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
