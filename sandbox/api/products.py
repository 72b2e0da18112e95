"""The catalogue endpoints: products' metadata, registration, data upload, samples."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_smorest import Blueprint

from policies.principals import Role
from products.errors import InvalidRequest
from products.loader import DataFormat
from sandbox.actions.products import load_product_data_with_entry, register_product_with_entry
from sandbox.api.context import caller, note, state
from sandbox.api.lifecycle import json_body, render_refusal, runtime
from sandbox.api.schemas import ref_body, ref_response
from sandbox.engine.sample import MAX_SAMPLE_ROWS, synthetic_sample
from sandbox.errors import UnsupportedMediaType

blp = Blueprint("products", __name__, url_prefix="/v1/products", description="Data products")

UPLOAD_TYPES = {
    "text/csv": DataFormat.CSV,
    "application/csv": DataFormat.CSV,
    "application/vnd.apache.parquet": DataFormat.PARQUET,
    "application/x-parquet": DataFormat.PARQUET,
    "application/parquet": DataFormat.PARQUET,
}


def _include_counts() -> bool:
    return caller().role in (Role.OPERATOR, Role.REGULATOR)


@blp.route("", methods=["GET"])
@blp.doc(summary="The catalogue: every product's metadata (never rows)")
@blp.doc(responses={"200": ref_response("ProductList")})
def list() -> dict[str, Any]:
    note()
    counts = _include_counts()
    return {"products": [r.to_dict(include_counts=counts) for r in runtime().catalogue.products()]}


@blp.route("", methods=["POST"])
@blp.doc(summary="Register a product from its manifest (operator)")
@blp.doc(requestBody=ref_body("Manifest"), responses={"201": ref_response("Product")})
def create() -> tuple[dict[str, Any], int]:
    data = json_body()
    n = note(product=str(data.get("id")) if "id" in data else None)
    record = register_product_with_entry(runtime(), data, caller().id, n, render_refusal)
    return record.to_dict(include_counts=True), 201


@blp.route("/<product_id>", methods=["GET"])
@blp.doc(summary="One product's metadata", responses={"200": ref_response("Product")})
def show(product_id: str) -> dict[str, Any]:
    note(product=product_id)
    return runtime().catalogue.get(product_id).to_dict(include_counts=_include_counts())


@blp.route("/<product_id>/sample", methods=["GET"])
@blp.doc(
    summary="Synthetic rows generated from the manifest alone, never from the data",
    parameters=[
        {"in": "query", "name": "n", "schema": {"type": "integer", "default": 20}},
        {"in": "query", "name": "seed", "schema": {"type": "integer", "default": 0}},
    ],
)
def sample(product_id: str) -> dict[str, Any]:
    note(product=product_id)
    record = runtime().catalogue.get(product_id)
    n, seed = _int_param("n", 20), _int_param("seed", 0)
    if not 0 <= n <= MAX_SAMPLE_ROWS:
        raise InvalidRequest(
            f"n must be between 0 and {MAX_SAMPLE_ROWS}",
            {"fields": {"n": [f"0..{MAX_SAMPLE_ROWS}"]}},
        )
    columns, rows = synthetic_sample(record.manifest, n, seed)
    return {"columns": columns, "rows": rows, "synthetic": True}


def _int_param(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(
            f"{name} must be an integer", {"fields": {name: ["not an integer"]}}
        ) from None


@blp.route("/<product_id>/data", methods=["PUT"])
@blp.doc(
    summary="Upload the product's rows (CSV or Parquet body); creates a new version",
    requestBody={
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        }
    },
)
def upload(product_id: str) -> dict[str, Any]:
    n = note(product=product_id)
    fmt = UPLOAD_TYPES.get(request.mimetype)
    if fmt is None:
        raise UnsupportedMediaType(
            f"upload CSV (text/csv) or Parquet (application/vnd.apache.parquet), "
            f"not {request.mimetype or 'no Content-Type'!r}"
        )
    upload_path = state().upload
    if upload_path is None or upload_path.stat().st_size == 0:
        raise InvalidRequest("the request body is empty: send the rows")
    record = load_product_data_with_entry(
        runtime(), product_id, upload_path, fmt, caller().id, n, render_refusal
    )
    if record.current is not None:
        n.extra["product_version"] = record.current.version
        n.extra["content_hash"] = record.current.content_hash
    return record.to_dict(include_counts=True)
