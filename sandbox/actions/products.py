"""Data products: registration, loading their data, and the catalogue's reads.

A registration commits with its audit entry. A data upload is loaded first, into a
fresh file no reader knows (``Catalogue.staging_path``); the transaction of the
upload's entry then records it as the product's next version and makes it current
(``Catalogue.add_version``). A load that fails, or an upload whose call is refused or
cannot be recorded, leaves no version behind and its file is removed.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

from audit.log import LogTransaction
from policies.principals import Principal, Role
from products.catalogue import Catalogue
from products.errors import Conflict, DomainError, Forbidden, InvalidRequest
from products.loader import DataFormat, LoadResult, Progress, load_file
from products.manifest import DataProduct
from sandbox.actions.call import Answer, Pending
from sandbox.engine.sample import MAX_SAMPLE_ROWS, synthetic_sample
from sandbox.runtime import Runtime


def register(rt: Runtime, manifest: DataProduct, owner: str) -> Pending:
    """``product.register``: a product from its parsed manifest (201). Refused with
    ``conflict`` if the id is taken."""

    def apply(tx: LogTransaction) -> Answer:
        record = Catalogue.register(tx.conn, manifest, owner, rt.clock())
        if record is None:
            raise Conflict(
                f"product {manifest.id!r} is already registered", {"product": manifest.id}
            )
        return Answer(record.to_dict(include_counts=True), status=201)

    return Pending(
        "product.register", target={"product": manifest.id}, apply=apply, changes_state=True
    )


@dataclasses.dataclass(frozen=True)
class Upload:
    """A data upload ready to commit, and the file it loaded (``None`` if it was
    refused before loading). The edge removes the file unless the call is allowed."""

    pending: Pending
    staged: Path | None

    def discard(self) -> None:
        """Remove the loaded file (the call was refused, or could not be recorded)."""
        if self.staged is not None:
            _remove(self.staged)


def upload(
    rt: Runtime,
    loaded_by: str,
    product_id: str,
    source: Path,
    fmt: DataFormat,
    *,
    owner_only: bool = True,
    progress: Progress | None = None,
) -> Upload:
    """``product.data``: load ``source`` as the product's next version, made current at
    commit. Refused with ``not_found``, ``forbidden`` (not the owner, when
    ``owner_only``) or ``invalid_request`` (rows that break the manifest)."""
    pending = Pending("product.data", target={"product": product_id}, changes_state=True)
    try:
        record = rt.catalogue.get(product_id)
        if owner_only and record.owner != loaded_by:
            raise Forbidden(
                f"product {product_id!r} belongs to {record.owner!r}; only its owner loads data",
                {"product": product_id},
            )
    except DomainError as exc:
        return Upload(pending.refused(exc), None)
    staged = rt.catalogue.staging_path(product_id)
    try:
        result = load_file(
            record.manifest, source, fmt, staged, limits=rt.load_limits, progress=progress
        )
    except DomainError as exc:
        _remove(staged)
        return Upload(pending.refused(exc), None)
    except BaseException:
        _remove(staged)
        raise
    fields = {"content_hash": result.content_hash, "rows": result.row_count}
    return Upload(
        dataclasses.replace(
            pending, fields=fields, apply=_version(rt, product_id, staged, result, loaded_by)
        ),
        staged,
    )


def _version(
    rt: Runtime, product_id: str, staged: Path, result: LoadResult, loaded_by: str
) -> Callable[[LogTransaction], Answer]:
    def apply(tx: LogTransaction) -> Answer:
        record = Catalogue.add_version(
            tx.conn,
            product_id,
            staged,
            row_count=result.row_count,
            content_hash=result.content_hash,
            loaded_by=loaded_by,
            now=rt.clock(),
            products_dir=rt.settings.products_dir,
        )
        assert record.current is not None
        # For the loading operator: how many values lie outside the manifest's bounds
        # (stored as they are, clipped in sums and averages; DESIGN §8).
        load = {"units": result.units, "clipped": result.clipped}
        return Answer(
            {**record.to_dict(include_counts=True), "load": load},
            fields={"product_version": record.current.version},
        )

    return apply


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _counts_visible(caller: Principal) -> bool:
    # Exact row counts and content hashes are exact functions of the data: operators
    # and regulators only (DESIGN §2.1).
    return caller.role in (Role.OPERATOR, Role.REGULATOR)


def listing(rt: Runtime, caller: Principal) -> Pending:
    """``product.list``: every product's metadata (never rows)."""
    counts = _counts_visible(caller)
    body = {"products": [r.to_dict(include_counts=counts) for r in rt.catalogue.products()]}
    return Pending("product.list", answer=Answer(body))


def read(rt: Runtime, caller: Principal, product_id: str) -> Pending:
    """``product.read``: one product's metadata."""
    pending = Pending("product.read", target={"product": product_id})
    return pending.attempt(
        lambda: dataclasses.replace(
            pending,
            answer=Answer(
                rt.catalogue.get(product_id).to_dict(include_counts=_counts_visible(caller))
            ),
        )
    )


def sample(rt: Runtime, product_id: str, n: int, seed: int) -> Pending:
    """``product.sample``: ``n`` synthetic rows generated from the manifest alone,
    never from the data."""
    pending = Pending("product.sample", target={"product": product_id})

    def build() -> Pending:
        record = rt.catalogue.get(product_id)
        if not 0 <= n <= MAX_SAMPLE_ROWS:
            raise InvalidRequest(
                f"n must be between 0 and {MAX_SAMPLE_ROWS}",
                {"fields": {"n": [f"0..{MAX_SAMPLE_ROWS}"]}},
            )
        columns, rows = synthetic_sample(record.manifest, n, seed)
        return dataclasses.replace(
            pending, answer=Answer({"columns": columns, "rows": rows, "synthetic": True})
        )

    return pending.attempt(build)
