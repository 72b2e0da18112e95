"""The catalogue endpoints: products' metadata, registration, data upload, samples."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from marshmallow import RAISE, Schema, fields, validate

from products.errors import InvalidRequest
from products.loader import DataFormat
from products.manifest import DataProduct, NewManifestSchema
from sandbox.actions import products
from sandbox.api.blueprint import Blueprint
from sandbox.api.calls import caller, respond, respond_upload, runtime, upload_path
from sandbox.api.schemas import ProductAnswer, ProductList, Sample, UploadAnswer
from sandbox.engine.sample import MAX_SAMPLE_ROWS
from sandbox.errors import UnsupportedMediaType

blp = Blueprint("products", __name__, url_prefix="/v1/products", description="Data products")

UPLOAD_TYPES = {
    "text/csv": DataFormat.CSV,
    "application/csv": DataFormat.CSV,
    "application/vnd.apache.parquet": DataFormat.PARQUET,
    "application/x-parquet": DataFormat.PARQUET,
    "application/parquet": DataFormat.PARQUET,
}


class SampleArgs(Schema):
    class Meta:
        unknown = RAISE

    n = fields.Integer(load_default=20, validate=validate.Range(min=0, max=MAX_SAMPLE_ROWS))
    seed = fields.Integer(load_default=0, validate=validate.Range(min=0, max=2**63 - 1))


@blp.route("", methods=["GET"])
@blp.response(200, ProductList)
@blp.doc(summary="The catalogue: every product's metadata (never rows)")
def list() -> Response:
    return respond(products.listing(runtime(), caller()))


@blp.route("", methods=["POST"])
@blp.arguments(NewManifestSchema)
@blp.response(201, ProductAnswer)
@blp.doc(summary="Register a product from its manifest (operator)")
def create(manifest: DataProduct) -> Response:
    return respond(products.register(runtime(), manifest, caller().id))


@blp.route("/<product_id>", methods=["GET"])
@blp.response(200, ProductAnswer)
@blp.doc(summary="One product's metadata")
def show(product_id: str) -> Response:
    return respond(products.read(runtime(), caller(), product_id))


@blp.route("/<product_id>/sample", methods=["GET"])
@blp.arguments(SampleArgs, location="query")
@blp.response(200, Sample)
@blp.doc(summary="Synthetic rows generated from the manifest alone, never from the data")
def sample(args: dict[str, Any], product_id: str) -> Response:
    return respond(products.sample(runtime(), product_id, args["n"], args["seed"]))


@blp.route("/<product_id>/data", methods=["PUT"])
@blp.response(200, UploadAnswer)
@blp.doc(
    summary="Upload the product's rows (CSV or Parquet body); creates a new version",
    requestBody={
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        },
    },
)
def upload(product_id: str) -> Response:
    fmt = UPLOAD_TYPES.get(request.mimetype)
    if fmt is None:
        raise UnsupportedMediaType(
            f"upload CSV (text/csv) or Parquet (application/vnd.apache.parquet), "
            f"not {request.mimetype or 'no Content-Type'!r}"
        )
    path = upload_path()
    if path is None or path.stat().st_size == 0:
        raise InvalidRequest("the request body is empty: send the rows")
    return respond_upload(products.upload(runtime(), caller().id, product_id, path, fmt))
