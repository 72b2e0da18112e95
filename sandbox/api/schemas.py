"""The answers of the HTTP contract (DESIGN §5), described for the OpenAPI document.

Request bodies and query parameters are described by the schemas that parse them
(``@blp.arguments`` with the domain's own schemas: ``GrantSchema``,
``PrincipalSchema``, ``QueryRequestSchema``...), so the document cannot drift from
the parsers. Answers are rendered by the actions; these schemas say what they hold.
"""

from __future__ import annotations

from marshmallow import Schema, fields

from products.manifest import ManifestSchema


class ErrorDetail(Schema):
    code = fields.String(
        required=True, metadata={"description": "DESIGN §5 code, e.g. budget_exhausted"}
    )
    message = fields.String(required=True)
    details = fields.Dict()


class Error(Schema):
    """Every refusal: ``{"error": {"code", "message", "details"}}``."""

    error = fields.Nested(ErrorDetail, required=True)


class Budget(Schema):
    epsilon = fields.Float()
    spent = fields.Float()
    remaining = fields.Float()
    delta = fields.Float()
    delta_spent = fields.Float()
    delta_remaining = fields.Float()


class ProductAnswer(ManifestSchema):
    owner = fields.String()
    status = fields.String()
    version = fields.Integer(allow_none=True)
    content_hash = fields.String(metadata={"description": "operators and regulators only"})
    row_count = fields.Integer(metadata={"description": "operators and regulators only"})
    created_at = fields.String()
    loaded_at = fields.String(allow_none=True)


class ClippedCounts(Schema):
    below = fields.Integer()
    above = fields.Integer()


class LoadReport(Schema):
    units = fields.Integer(metadata={"description": "privacy units in the loaded rows"})
    clipped = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(ClippedCounts),
        metadata={
            "description": "per bounded column, values below and above the manifest's "
            "bounds: stored as they are, clipped to the bounds in sums and averages"
        },
    )


class UploadAnswer(ProductAnswer):
    load_report = fields.Nested(LoadReport, data_key="load")


class ProductList(Schema):
    products = fields.List(fields.Nested(ProductAnswer))


class Sample(Schema):
    columns = fields.List(fields.String())
    rows = fields.List(fields.List(fields.Raw()))
    synthetic = fields.Boolean()


class KeyAnswer(Schema):
    kid = fields.String()
    alg = fields.String()
    status = fields.String()
    public_key = fields.String()
    jwk = fields.Dict()


class PrincipalAnswer(Schema):
    id = fields.String()
    role = fields.String()
    name = fields.String()
    keys = fields.List(fields.Nested(KeyAnswer))
    created_at = fields.String()
    disabled_at = fields.String(allow_none=True)


class ScopeAnswer(Schema):
    id = fields.String()
    enterprise = fields.String()
    product = fields.String()
    purpose = fields.String()
    operations = fields.Dict()
    epsilon = fields.Float()
    delta = fields.Float()
    max_epsilon_per_query = fields.Float()
    rate_per_minute = fields.Integer()
    daily_quota = fields.Integer()
    valid_from = fields.String()
    valid_until = fields.String()
    status = fields.String()
    status_reason = fields.String(allow_none=True)
    granted_by = fields.String()
    created_at = fields.String()
    budget = fields.Nested(Budget)


class ScopeList(Schema):
    scopes = fields.List(fields.Nested(ScopeAnswer))


class Charge(Schema):
    epsilon = fields.String()
    delta = fields.String()
    audit_index = fields.Integer(allow_none=True)
    request_id = fields.String(allow_none=True)
    time = fields.String()


class ChargesAnswer(Schema):
    scope = fields.String()
    budget = fields.Nested(Budget)
    charges = fields.List(fields.Nested(Charge))


class Accuracy(Schema):
    column = fields.String()
    ci95 = fields.Float(
        allow_none=True, metadata={"description": "95% half-width of every row's value"}
    )
    ci95_rows = fields.List(
        fields.Float(allow_none=True),
        metadata={"description": "per released row, where rows differ (COUNT, AVG)"},
    )


class Preview(Schema):
    epsilon = fields.Float()
    accuracy = fields.List(fields.Nested(Accuracy))


class QueryAnswer(Schema):
    columns = fields.List(fields.String())
    rows = fields.List(fields.List(fields.Raw()))
    epsilon_spent = fields.Float()
    budget = fields.Nested(Budget)
    accuracy = fields.List(fields.Nested(Accuracy))
    receipt = fields.String(metadata={"description": "compact JWS, typ pds-receipt+jwt"})


class VerificationResult(Schema):
    match = fields.Boolean(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.Boolean())


class VerificationAnswer(VerificationResult):
    receipt = fields.String()


class BatchAnswer(Schema):
    results = fields.List(fields.Nested(VerificationResult))
    receipt = fields.String()


class VerificationProductList(Schema):
    verification_products = fields.List(fields.Dict())


class Entry(Schema):
    index = fields.Integer()
    leaf_hash = fields.String(metadata={"description": "hex"})
    leaf = fields.String(metadata={"description": "base64 of the RFC 8785 leaf bytes"})
    entry = fields.Dict()


class EntryPage(Schema):
    entries = fields.List(fields.Nested(Entry))
    next_cursor = fields.Integer(allow_none=True)


class Checkpoint(Schema):
    tree_size = fields.Integer()
    root_hash = fields.String()
    time = fields.String()
    note = fields.String()
    cosigned_note = fields.String(allow_none=True)


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


class Cosignature(Schema):
    witness = fields.String()
    line = fields.String()
    created = fields.Boolean()
