"""marshmallow schemas of the HTTP contract (DESIGN §5), for the OpenAPI document.

Request bodies are validated by the domain parsers (which give field-level errors
with the domain's rules); these schemas describe the same shapes for clients.
"""

from __future__ import annotations

from typing import Any

from flask_smorest import Api
from marshmallow import Schema, fields

from products.manifest import ManifestSchema


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def ref_body(name: str) -> dict[str, Any]:
    """An OpenAPI requestBody pointing at a registered schema."""
    return {"required": True, "content": {"application/json": {"schema": ref(name)}}}


def ref_response(name: str, description: str = "OK") -> dict[str, Any]:
    """An OpenAPI response pointing at a registered schema."""
    return {"description": description, "content": {"application/json": {"schema": ref(name)}}}


class ErrorDetail(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict()


class Error(Schema):
    error = fields.Nested(ErrorDetail, required=True)


class Product(ManifestSchema):
    owner = fields.String()
    status = fields.String()
    version = fields.Integer(allow_none=True)
    content_hash = fields.String(allow_none=True)
    row_count = fields.Integer(metadata={"description": "operators and regulators only"})
    created_at = fields.String()
    loaded_at = fields.String(allow_none=True)


class ProductList(Schema):
    products = fields.List(fields.Nested(Product))


class KeySpec(Schema):
    kid = fields.String(metadata={"description": "default: RFC 7638 JWK thumbprint"})
    alg = fields.String(metadata={"enum": ["EdDSA", "ES256"]})
    public_key = fields.String(required=True, metadata={"description": "SPKI PEM"})


class PrincipalRequest(Schema):
    id = fields.String(required=True)
    role = fields.String(required=True, metadata={"enum": ["enterprise", "regulator", "operator"]})
    name = fields.String(required=True)
    keys = fields.List(fields.Nested(KeySpec), required=True)


class BudgetDoc(Schema):
    epsilon = fields.Float()
    spent = fields.Float()
    remaining = fields.Float()


class ScopeRequest(Schema):
    id = fields.String()
    enterprise = fields.String(required=True)
    product = fields.String(required=True)
    purpose = fields.String(required=True)
    operations = fields.Dict(
        required=True,
        metadata={"example": {"aggregate": {"columns": ["district"]}, "verify": ["vp-id"]}},
    )
    epsilon = fields.Float(required=True)
    delta = fields.Float(load_default=0)
    max_epsilon_per_query = fields.Float()
    rate_per_minute = fields.Integer(required=True)
    daily_quota = fields.Integer(required=True)
    valid_from = fields.String(required=True)
    valid_until = fields.String(required=True)


class Scope(ScopeRequest):
    status = fields.String()
    granted_by = fields.String()
    budget = fields.Nested(BudgetDoc)


class QueryRequest(Schema):
    scope = fields.String(required=True)
    sql = fields.String(required=True)
    epsilon = fields.Float(required=True)


class Accuracy(Schema):
    column = fields.String()
    ci95 = fields.Float(allow_none=True)


class Preview(Schema):
    epsilon = fields.Float()
    accuracy = fields.List(fields.Nested(Accuracy))


class QueryAnswer(Schema):
    columns = fields.List(fields.String())
    rows = fields.List(fields.List(fields.Raw()))
    epsilon_spent = fields.Float()
    budget = fields.Nested(BudgetDoc)
    accuracy = fields.List(fields.Nested(Accuracy))
    receipt = fields.String(metadata={"description": "compact JWS, typ pds-receipt+jwt"})


class VerificationRequest(Schema):
    scope = fields.String(required=True)
    subject = fields.Dict(required=True)
    params = fields.Dict()
    consent_ref = fields.String()
    request_id = fields.String()


class BatchItem(Schema):
    subject = fields.Dict(required=True)
    params = fields.Dict()
    consent_ref = fields.String()


class BatchRequest(Schema):
    scope = fields.String(required=True)
    items = fields.List(fields.Nested(BatchItem), required=True)
    request_id = fields.String()


class VerificationAnswer(Schema):
    match = fields.Boolean(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.Boolean())
    receipt = fields.String()


class Checkpoint(Schema):
    tree_size = fields.Integer()
    root_hash = fields.String()
    time = fields.String()
    note = fields.String()


class InclusionProof(Schema):
    index = fields.Integer()
    tree_size = fields.Integer()
    leaf_hash = fields.String()
    root_hash = fields.String()
    proof = fields.List(fields.String())


class ConsistencyProof(Schema):
    first = fields.Integer()
    second = fields.Integer()
    first_root = fields.String()
    second_root = fields.String()
    proof = fields.List(fields.String())


SCHEMAS: dict[str, type[Schema]] = {
    "ErrorResponse": Error,
    "Manifest": ManifestSchema,
    "Product": Product,
    "ProductList": ProductList,
    "PrincipalRequest": PrincipalRequest,
    "ScopeRequest": ScopeRequest,
    "Scope": Scope,
    "QueryRequest": QueryRequest,
    "Preview": Preview,
    "QueryAnswer": QueryAnswer,
    "VerificationRequest": VerificationRequest,
    "BatchRequest": BatchRequest,
    "VerificationAnswer": VerificationAnswer,
    "Checkpoint": Checkpoint,
    "InclusionProof": InclusionProof,
    "ConsistencyProof": ConsistencyProof,
}


def register_schemas(api: Api) -> None:
    """Add every schema above to the OpenAPI components."""
    for name, schema in SCHEMAS.items():
        api.spec.components.schema(name, schema=schema)
