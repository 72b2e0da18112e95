"""Requests for sandbox model development (DESIGN §11.1, §11.2), parsed at the edge.

``SyntheticRequestSchema`` and ``TrainRequestSchema`` load bodies into frozen
requests; ``synthetic_plan`` / ``training_plan`` check them against the product and
the scope and return the data-free plans the isolated worker runs. Every refusal is
``InvalidRequest`` (or ``ColumnNotAllowed``) whose ``details.fields`` names the field.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

from policies.scopes import MAX_QUERY_EPSILON, EpsilonField, Scope, decimal_str
from products.errors import InvalidRequest
from products.manifest import Classification, Column, ColumnType, DataProduct
from sandbox.errors import ColumnNotAllowed
from sandbox.models.encoding import MAX_CELLS, Encoding, Target, encode, joint_size
from sandbox.models.linear import LinearPlan
from sandbox.models.scorecard import DEFAULT_SCORE_BINS, MAX_SCORE_BINS, Scale, ScorecardPlan

MAX_SYNTHETIC_ROWS = 50_000  # a stored release is bounded in size (DESIGN §4)
MAX_SYNTHETIC_COLUMNS = 16
MAX_FEATURES = 16
METHODS = ("mst", "aim")
KINDS = ("linear_regression", "scorecard")


def _fields(errors: dict[str, Any]) -> InvalidRequest:
    return InvalidRequest("invalid request", {"fields": errors})


@dataclass(frozen=True)
class SyntheticRequest:
    scope: str
    epsilon: Decimal
    columns: tuple[str, ...]
    rows: int
    method: str = "mst"
    bins: dict[str, list[Any]] = field(default_factory=dict)

    def key(self, product: str, version: int) -> str:
        """The reuse key: the same request on the same data version is one release."""
        return _key(
            "synthetic",
            product,
            version,
            decimal_str(self.epsilon),
            list(self.columns),
            self.rows,
            self.method,
            self.bins,
        )


class SyntheticRequestSchema(Schema):
    """``{scope, epsilon, columns, rows, method?, bins?}`` (DESIGN §11.1)."""

    class Meta:
        unknown = RAISE

    scope = fields.String(required=True, validate=validate.Length(min=1, max=64))
    epsilon = EpsilonField(required=True, maximum=MAX_QUERY_EPSILON)
    columns = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        required=True,
        validate=validate.Length(min=1, max=MAX_SYNTHETIC_COLUMNS),
    )
    rows = fields.Integer(
        strict=True, required=True, validate=validate.Range(min=1, max=MAX_SYNTHETIC_ROWS)
    )
    method = fields.String(load_default="mst", validate=validate.OneOf(METHODS))
    bins = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.Raw(), validate=validate.Length(min=2, max=101)),
        metadata={"description": "bin edges per numeric or date column (else the manifest's)"},
    )

    @post_load
    def _request(self, data: dict[str, Any], **_: Any) -> SyntheticRequest:
        if len(set(data["columns"])) != len(data["columns"]):
            raise ValidationError({"columns": ["each column once"]})
        return SyntheticRequest(
            data["scope"],
            data["epsilon"],
            tuple(data["columns"]),
            data["rows"],
            data["method"],
            dict(data.get("bins") or {}),
        )


@dataclass(frozen=True)
class TrainRequest:
    scope: str
    product: str
    epsilon: Decimal
    spec: dict[str, Any]

    def key(self, version: int) -> str:
        return _key("train", self.product, version, decimal_str(self.epsilon), self.spec)


class TrainRequestSchema(Schema):
    """``{scope, product, epsilon, spec}`` (DESIGN §11.2)."""

    class Meta:
        unknown = RAISE

    scope = fields.String(required=True, validate=validate.Length(min=1, max=64))
    product = fields.String(required=True, validate=validate.Length(min=1, max=64))
    epsilon = EpsilonField(required=True, maximum=MAX_QUERY_EPSILON)
    spec = fields.Dict(required=True, metadata={"description": "kind, target, features..."})

    @post_load
    def _request(self, data: dict[str, Any], **_: Any) -> TrainRequest:
        return TrainRequest(data["scope"], data["product"], data["epsilon"], data["spec"])


def _key(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _column(product: DataProduct, scope: Scope, name: Any, field: str) -> Column:
    if not isinstance(name, str):
        raise _fields({field: ["a column name"]})
    column = product.column(name)
    if column is None:
        raise _fields({field: [f"unknown column {name!r} of product {product.id!r}"]})
    allowed = scope.aggregate_columns or frozenset()
    if column.classification is Classification.IDENTIFIER or name not in allowed:
        raise ColumnNotAllowed(
            f"column {name!r} is not among this scope's aggregate columns",
            {"column": name, "fields": {field: ["not granted by the scope"]}},
        )
    return column


def _check_cells(encodings: list[Encoding], field: str) -> None:
    if joint_size(encodings) > MAX_CELLS:
        raise _fields(
            {field: [f"{joint_size(encodings)} joint cells: at most {MAX_CELLS}; use fewer bins"]}
        )


def synthetic_plan(
    product: DataProduct, scope: Scope, req: SyntheticRequest
) -> tuple[Encoding, ...]:
    """The encodings of the requested columns. Raises ``InvalidRequest`` /
    ``ColumnNotAllowed`` naming the field."""
    scope.check_epsilon(req.epsilon)
    unknown = sorted(set(req.bins) - set(req.columns))
    if unknown:
        raise _fields({"bins": [f"not a requested column: {', '.join(unknown)}"]})
    encodings = []
    for i, name in enumerate(req.columns):
        column = _column(product, scope, name, f"columns.{i}")
        encodings.append(encode(column, f"columns.{i}", bins=req.bins.get(name)))
    _check_cells(encodings, "columns")
    return tuple(encodings)


def training_plan(
    product: DataProduct, scope: Scope, req: TrainRequest
) -> tuple[LinearPlan | ScorecardPlan, Target | None]:
    """The plan of a training request. Raises ``InvalidRequest`` / ``ColumnNotAllowed``
    naming the ``spec.*`` field."""
    scope.check_epsilon(req.epsilon)
    spec = req.spec
    kind = spec.get("kind")
    if kind not in KINDS:
        raise _fields({"spec.kind": [f"one of {', '.join(KINDS)}"]})
    allowed = {"kind", "target", "features"} | (
        {"scale", "score_bins"} if kind == "scorecard" else set()
    )
    extra = sorted(set(spec) - allowed)
    if extra:
        raise _fields({f"spec.{e}": ["unknown field"] for e in extra})
    features = spec.get("features")
    if not isinstance(features, list) or not 1 <= len(features) <= MAX_FEATURES:
        raise _fields({"spec.features": [f"a list of 1 to {MAX_FEATURES} features"]})
    k = product.max_rows_per_unit
    epsilon = float(req.epsilon)
    if kind == "linear_regression":
        target = _numeric(product, scope, spec.get("target"), "spec.target")
        cols = [_numeric(product, scope, f, f"spec.features.{i}") for i, f in enumerate(features)]
        if len({c.name for c in cols} | {target.name}) != len(cols) + 1:
            raise _fields({"spec.features": ["each column once, and not the target"]})
        return LinearPlan(tuple(cols), target, k, epsilon), None
    target_t = _target(product, scope, spec.get("target"))
    encodings = []
    for i, f in enumerate(features):
        where = f"spec.features.{i}"
        if isinstance(f, dict):
            unknown_keys = sorted(set(f) - {"column", "bins"})
            if unknown_keys or "column" not in f:
                raise _fields({where: ["a column name, or {column, bins}"]})
            column = _column(product, scope, f["column"], f"{where}.column")
            encodings.append(encode(column, f"{where}.bins", bins=f.get("bins")))
        else:
            encodings.append(encode(_column(product, scope, f, where), where))
    names = [e.name for e in encodings]
    if len(set(names)) != len(names) or target_t.column.name in names:
        raise _fields({"spec.features": ["each column once, and not the target"]})
    _check_cells([*encodings], "spec.features")
    score_bins = spec.get("score_bins", DEFAULT_SCORE_BINS)
    if (
        isinstance(score_bins, bool)
        or not isinstance(score_bins, int)
        or not 2 <= score_bins <= MAX_SCORE_BINS
    ):
        raise _fields({"spec.score_bins": [f"an integer from 2 to {MAX_SCORE_BINS}"]})
    return ScorecardPlan(
        tuple(encodings), k, epsilon, _scale(spec.get("scale")), score_bins
    ), target_t


def _numeric(product: DataProduct, scope: Scope, name: Any, field: str) -> Column:
    column = _column(product, scope, name, field)
    if column.type not in (ColumnType.INTEGER, ColumnType.FLOAT):
        raise _fields({field: [f"{column.name!r} is not numeric"]})
    if column.bounds is None:
        raise _fields({field: [f"{column.name!r} has no bounds: a feature must be bounded"]})
    return column


def _target(product: DataProduct, scope: Scope, spec: Any) -> Target:
    field = "spec.target"
    if isinstance(spec, str):
        column = _column(product, scope, spec, field)
        if column.type is not ColumnType.BOOLEAN:
            raise _fields(
                {field: [f"{spec!r} is not boolean: name the positive values ({{column, equals}})"]}
            )
        return Target(column, (True,))
    if not isinstance(spec, dict) or "column" not in spec:
        raise _fields({field: ["a boolean column, or {column, equals} / {column, in}"]})
    extra = sorted(set(spec) - {"column", "equals", "in"})
    if extra or ("equals" in spec) == ("in" in spec):
        raise _fields({field: ["exactly one of equals or in, besides column"]})
    column = _column(product, scope, spec["column"], f"{field}.column")
    values = [spec["equals"]] if "equals" in spec else spec["in"]
    if not isinstance(values, list) or not values or len(values) > 100:
        raise _fields({f"{field}.in": ["a list of 1 to 100 values"]})
    if column.type is ColumnType.FLOAT or (
        column.public_values is None and column.type is not ColumnType.BOOLEAN
    ):
        raise _fields(
            {
                field: [
                    f"{column.name!r} is not binary: the target needs a boolean column or "
                    "one with public values"
                ]
            }
        )
    domain = (True, False) if column.type is ColumnType.BOOLEAN else column.public_values or ()
    bad = [
        v for v in values if v not in domain or isinstance(v, bool) != isinstance(domain[0], bool)
    ]
    if bad:
        raise _fields({field: [f"not values of {column.name!r}: {bad!r}"]})
    if len(set(map(str, values))) == len({str(v) for v in domain if v is not None}):
        raise _fields({field: ["every value is positive: the target would not be binary"]})
    return Target(column, tuple(values))


def _scale(spec: Any) -> Scale:
    if spec is None:
        return Scale()
    if not isinstance(spec, dict) or set(spec) - {"base_score", "base_odds", "pdo"}:
        raise _fields({"spec.scale": ["{base_score, base_odds, pdo}"]})
    values = {}
    for name, default in (("base_score", 600.0), ("base_odds", 50.0), ("pdo", 20.0)):
        v = spec.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise _fields({f"spec.scale.{name}": ["a number"]})
        values[name] = float(v)
    if values["base_odds"] <= 0 or values["pdo"] <= 0 or abs(values["base_score"]) > 1e6:
        raise _fields({"spec.scale": ["base_odds and pdo > 0, |base_score| <= 1e6"]})
    return Scale(**values)
