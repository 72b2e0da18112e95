"""The catalogue endpoints: products' metadata, registration, data upload, samples."""

from __future__ import annotations

from flask import Response, request
from flask_smorest import Blueprint

from products.errors import InvalidRequest
from products.loader import DataFormat
from sandbox.actions import products
from sandbox.api.calls import caller, json_body, respond, respond_upload, runtime, upload_path
from sandbox.api.schemas import ref_body, ref_response
from sandbox.errors import UnsupportedMediaType

blp = Blueprint("products", __name__, url_prefix="/v1/products", description="Data products")

UPLOAD_TYPES = {
    "text/csv": DataFormat.CSV,
    "application/csv": DataFormat.CSV,
    "application/vnd.apache.parquet": DataFormat.PARQUET,
    "application/x-parquet": DataFormat.PARQUET,
    "application/parquet": DataFormat.PARQUET,
}


@blp.route("", methods=["GET"])
@blp.doc(summary="The catalogue: every product's metadata (never rows)")
@blp.doc(responses={"200": ref_response("ProductList")})
def list() -> Response:
    return respond(products.listing(runtime(), caller()))


@blp.route("", methods=["POST"])
@blp.doc(summary="Register a product from its manifest (operator)")
@blp.doc(requestBody=ref_body("Manifest"), responses={"201": ref_response("Product")})
def create() -> Response:
    return respond(products.register(runtime(), json_body(), caller().id))


@blp.route("/<product_id>", methods=["GET"])
@blp.doc(summary="One product's metadata", responses={"200": ref_response("Product")})
def show(product_id: str) -> Response:
    return respond(products.read(runtime(), caller(), product_id))


@blp.route("/<product_id>/sample", methods=["GET"])
@blp.doc(
    summary="Synthetic rows generated from the manifest alone, never from the data",
    parameters=[
        {"in": "query", "name": "n", "schema": {"type": "integer", "default": 20}},
        {"in": "query", "name": "seed", "schema": {"type": "integer", "default": 0}},
    ],
)
def sample(product_id: str) -> Response:
    n, seed = _int_param("n", 20), _int_param("seed", 0)
    return respond(products.sample(runtime(), product_id, n, seed))


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
