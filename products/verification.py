"""Verification products (DESIGN §4, §5, §9): yes/no questions about one keyed record.

A verification product names a data product, the key columns that single out one
record (the caller must supply all of them: no wildcard, range or prefix), and named
checks over that record's columns. A check's parameter is either fixed by the
operator (``param``) or chosen by the caller from a finite, declared set
(``allowed_params``): a free threshold would let a caller binary-search the exact
value, so there is none.

Definitions are parsed once, at the edge, against the data product they query, into
frozen dataclasses. Every refusal is ``InvalidRequest`` with ``details.fields``
mapping each offending field path to its messages, as ``parse_manifest`` does.

Extension of the DESIGN §5 body (optional, so existing clients are unaffected):
``key_formats`` maps a string key column to the format its values must have
(``uscc``, ``prc_id``, ``enterprise_name``, ``person_name``); calls are then
normalised and validated before any lookup (``sandbox.verification.normalize``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from products.errors import InvalidRequest
from products.manifest import (
    Classification,
    ColumnType,
    DataProduct,
    Scalar,
    _typed,
)

# Defined with the manifest, whose string columns may declare a checked format too;
# re-exported here, where verification products' ``key_formats`` use it.
from products.manifest import KeyFormat as KeyFormat
from products.parsing import parse

VERIFICATION_ID = re.compile(r"^[a-z0-9_-]{1,64}\Z")
CHECK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
MAX_KEY_COLUMNS = 8
MAX_CHECKS = 32
MAX_ALLOWED_PARAMS = 100
MAX_LIST_PARAM = 100
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

Param = Scalar | tuple[Scalar, ...]


class Op(StrEnum):
    """What a check asks of the record's cell (NULL cells fail every check)."""

    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    IN = "in"  # param: a non-empty list of values
    BETWEEN = "between"  # param: [lo, hi], inclusive
    EXISTS = "exists"  # no param: the record exists and the cell is not NULL

    @property
    def ordered(self) -> bool:
        """True for ops that need an ordered column type (numbers and dates)."""
        return self in (Op.LT, Op.LE, Op.GT, Op.GE, Op.BETWEEN)


class AnswerShape(StrEnum):
    ALL = "all"  # {"match": bool}: every check holds
    EACH = "each"  # {"match": bool, "checks": {name: bool}}


KEY_TYPES = (ColumnType.STRING, ColumnType.INTEGER, ColumnType.DATE)


@dataclass(frozen=True)
class Check:
    """One named check; exactly one of ``param`` / ``allowed_params`` unless ``exists``."""

    name: str
    column: str
    op: Op
    param: Param | None = None
    allowed_params: tuple[Param, ...] | None = None

    @property
    def caller_supplied(self) -> bool:
        """True when the caller chooses the parameter (from ``allowed_params``)."""
        return self.allowed_params is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "column": self.column, "op": self.op.value}
        if self.param is not None:
            out["param"] = _jsonable(self.param)
        if self.allowed_params is not None:
            out["allowed_params"] = [_jsonable(p) for p in self.allowed_params]
        return out


@dataclass(frozen=True)
class VerificationProduct:
    """A parsed verification product, valid against its data product's manifest."""

    id: str
    product: str
    key: tuple[str, ...]
    checks: tuple[Check, ...]
    answer: AnswerShape = AnswerShape.ALL
    natural_person: bool = False
    description: str = ""
    key_formats: Mapping[str, KeyFormat] = field(default_factory=dict)

    def check(self, name: str) -> Check | None:
        """Return the check called ``name``, or None."""
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """Return the definition as JSON-ready data (round-trips through the parser)."""
        out: dict[str, Any] = {
            "id": self.id,
            "product": self.product,
            "key": list(self.key),
            "checks": [c.to_dict() for c in self.checks],
            "answer": self.answer.value,
            "natural_person": self.natural_person,
        }
        if self.description:
            out["description"] = self.description
        if self.key_formats:
            out["key_formats"] = {k: f.value for k, f in self.key_formats.items()}
        return out


def _jsonable(param: Param) -> Any:
    return list(param) if isinstance(param, tuple) else param


class CheckSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(
        required=True,
        validate=validate.Regexp(CHECK_NAME, error="must match [a-z][a-z0-9_]{{0,63}}"),
    )
    column = fields.String(required=True)
    op = fields.String(required=True, validate=validate.OneOf([o.value for o in Op]))
    param = fields.Raw()
    allowed_params = fields.List(
        fields.Raw(), validate=validate.Length(min=1, max=MAX_ALLOWED_PARAMS)
    )


class VerificationSchema(Schema):
    class Meta:
        unknown = RAISE

    id = fields.String(
        required=True,
        validate=validate.Regexp(VERIFICATION_ID, error="must match [a-z0-9_-]{{1,64}}"),
    )
    product = fields.String(required=True)
    key = fields.List(
        fields.String(), required=True, validate=validate.Length(min=1, max=MAX_KEY_COLUMNS)
    )
    checks = fields.List(
        fields.Nested(CheckSchema), required=True, validate=validate.Length(min=1, max=MAX_CHECKS)
    )
    answer = fields.String(
        load_default=AnswerShape.ALL.value,
        validate=validate.OneOf([a.value for a in AnswerShape]),
    )
    natural_person = fields.Boolean(load_default=False)
    description = fields.String(load_default="", validate=validate.Length(max=5000))
    key_formats = fields.Dict(
        keys=fields.String(),
        values=fields.String(validate=validate.OneOf([f.value for f in KeyFormat])),
    )


def typed_param(op: Op, value: Any, ctype: ColumnType) -> Param:
    """Return ``value`` as a parameter of ``op`` on a column of type ``ctype``.

    Typing is strict JSON typing, as for manifest literals: an integer column takes
    integers (``12``, or ``12.0``) but not the string ``"12"``; a float column takes any
    finite number; a date column takes an ISO date string; a boolean column takes
    ``true``/``false``. ``in`` takes a non-empty list of distinct values, ``between``
    a list ``[lo, hi]`` with ``lo <= hi``. Raises ``ValueError`` explaining the rule.
    """
    if op is Op.EXISTS:
        raise ValueError("exists takes no parameter")
    if op in (Op.IN, Op.BETWEEN):
        if not isinstance(value, list | tuple):
            raise ValueError(f"{op.value} takes a list")
        items = tuple(_scalar(v, ctype) for v in value)
        if op is Op.IN:
            if not 1 <= len(items) <= MAX_LIST_PARAM:
                raise ValueError(f"in takes 1 to {MAX_LIST_PARAM} values")
            if len(set(items)) != len(items):
                raise ValueError("in takes distinct values")
            return items
        if len(items) != 2:
            raise ValueError("between takes exactly [lo, hi]")
        lo, hi = items
        if not lo <= hi:  # type: ignore[operator]  # same type, ordered (numbers, ISO dates)
            raise ValueError("between takes [lo, hi] with lo <= hi")
        return items
    if isinstance(value, list | tuple | dict):
        raise ValueError(f"{op.value} takes a single value")
    return _scalar(value, ctype)


def _scalar(value: Any, ctype: ColumnType) -> Scalar:
    typed = _typed(value, ctype)
    if ctype is ColumnType.INTEGER and not INT64_MIN <= typed <= INT64_MAX:  # type: ignore[operator]
        raise ValueError(f"{value!r} is outside the 64-bit integer range")
    return typed


def same_param(a: Param, b: Param, op: Op) -> bool:
    """True when two typed parameters are the same choice (``in``: as sets)."""
    if op is Op.IN and isinstance(a, tuple) and isinstance(b, tuple):
        return set(a) == set(b)
    return a == b


def _check_problems(check: dict[str, Any], product: DataProduct) -> dict[str, list[str]]:
    problems: dict[str, list[str]] = {}
    col = product.column(check["column"])
    if col is None:
        return {"column": [f"no column {check['column']!r} in product {product.id!r}"]}
    op = Op(check["op"])
    if op.ordered and not (col.type.numeric or col.type is ColumnType.DATE):
        problems["op"] = [f"{op.value} needs a numeric or date column, not {col.type.value}"]
    if col.classification is Classification.IDENTIFIER and op is not Op.EXISTS:
        problems["op"] = [
            "identifier columns are matched through the key; a check may only ask exists"
        ]
    has_param = "param" in check
    has_allowed = "allowed_params" in check
    if op is Op.EXISTS:
        if has_param or has_allowed:
            problems["param"] = ["exists takes neither param nor allowed_params"]
        return problems
    if has_param == has_allowed:
        problems["param"] = [
            "give exactly one of param (fixed by the product) or allowed_params "
            "(the finite set a caller chooses from)"
        ]
        return problems
    if problems:
        return problems
    if has_param:
        try:
            typed_param(op, check["param"], col.type)
        except ValueError as exc:
            problems["param"] = [str(exc)]
        return problems
    typed: list[Param] = []
    for i, value in enumerate(check["allowed_params"]):
        try:
            typed.append(typed_param(op, value, col.type))
        except ValueError as exc:
            problems.setdefault("allowed_params", []).append(f"[{i}]: {exc}")
    if "allowed_params" not in problems:
        for i, p in enumerate(typed):
            if any(same_param(p, q, op) for q in typed[:i]):
                problems["allowed_params"] = [f"[{i}]: values must be distinct"]
                break
    return problems


def _cross_problems(data: Mapping[str, Any], product: DataProduct) -> dict[str, Any]:
    errors: dict[str, Any] = {}
    if data["product"] != product.id:
        errors["product"] = [f"must name the data product {product.id!r}"]
    key: list[str] = data["key"]
    for i, name in enumerate(key):
        col = product.column(name)
        if col is None:
            errors.setdefault("key", {})[i] = [f"no column {name!r} in product {product.id!r}"]
        elif col.type not in KEY_TYPES:
            errors.setdefault("key", {})[i] = [
                f"key columns must be string, integer or date, not {col.type.value}"
            ]
        elif name in key[:i]:
            errors.setdefault("key", {})[i] = [f"duplicate key column {name!r}"]
    if "key" not in errors and not product.is_unique_key(key):
        declared = [list(k) for k in product.unique] or "none"
        errors["key"] = [
            f"({', '.join(key)}) may match several rows: a key must contain the privacy "
            f"unit {product.privacy_unit!r} (with max_rows_per_unit 1) or a unique "
            f"combination declared by the manifest (declared: {declared})"
        ]
    seen: set[str] = set()
    for i, check in enumerate(data["checks"]):
        problems = _check_problems(check, product)
        if check["name"] in seen:
            problems.setdefault("name", []).append(f"duplicate check name {check['name']!r}")
        seen.add(check["name"])
        if problems:
            errors.setdefault("checks", {})[i] = problems
    for name, fmt in data.get("key_formats", {}).items():
        col = product.column(name)
        if name not in key:
            errors.setdefault("key_formats", {})[name] = ["must name a key column"]
        elif col is not None and col.type is not ColumnType.STRING:
            errors.setdefault("key_formats", {})[name] = ["formats apply to string columns"]
        elif KeyFormat(fmt).personal and not data["natural_person"]:
            errors["natural_person"] = [
                f"must be true: the key {name!r} identifies a natural person ({fmt}), "
                "so every call must carry the data subject's consent_ref"
            ]
    return errors


def parse_verification_product(data: Any, product: DataProduct) -> VerificationProduct:
    """Validate a verification-product definition (``VerificationSchema``) against its
    data product (``verification_from``). Raises ``InvalidRequest``."""
    return verification_from(parse(VerificationSchema, data, "verification product"), product)


def verification_from(loaded: Mapping[str, Any], product: DataProduct) -> VerificationProduct:
    """Check a definition loaded by ``VerificationSchema`` against its data product.

    Returns the frozen ``VerificationProduct``. Raises ``InvalidRequest`` whose
    ``details.fields`` map each offending field path to its messages.
    """
    errors = _cross_problems(loaded, product)
    if errors:
        raise InvalidRequest("invalid verification product", {"fields": errors})
    checks = []
    for c in loaded["checks"]:
        col = product.column(c["column"])
        assert col is not None  # checked above
        op = Op(c["op"])
        checks.append(
            Check(
                name=c["name"],
                column=c["column"],
                op=op,
                param=typed_param(op, c["param"], col.type) if "param" in c else None,
                allowed_params=(
                    tuple(typed_param(op, p, col.type) for p in c["allowed_params"])
                    if "allowed_params" in c
                    else None
                ),
            )
        )
    return VerificationProduct(
        id=loaded["id"],
        product=loaded["product"],
        key=tuple(loaded["key"]),
        checks=tuple(checks),
        answer=AnswerShape(loaded["answer"]),
        natural_person=loaded["natural_person"],
        description=loaded["description"],
        key_formats={k: KeyFormat(v) for k, v in loaded.get("key_formats", {}).items()},
    )


def bind_params(
    vp: VerificationProduct, product: DataProduct, params: Any
) -> dict[str, Param | None]:
    """Return the parameter of every check for one call (``None`` for ``exists``).

    ``params`` is the call's ``params`` object (``None`` when absent). The caller must
    give a value for every check with ``allowed_params`` and for no other check; each
    value must equal, with its JSON type, one of the allowed values (``12`` matches an
    allowed ``12`` on an integer column, ``"12"`` does not). Raises ``InvalidRequest``
    whose ``details.fields.params`` names each offending check.
    """
    given: Mapping[str, Any]
    if params is None:
        given = {}
    elif isinstance(params, Mapping):
        given = params
    else:
        raise InvalidRequest(
            "params must be an object mapping check names to values",
            {"fields": {"params": ["must be an object"]}},
        )
    errors: dict[str, list[str]] = {}
    bound: dict[str, Param | None] = {}
    for name in given:
        check = vp.check(name) if isinstance(name, str) else None
        if check is None:
            errors[str(name)] = [f"no check {name!r} in verification product {vp.id!r}"]
        elif not check.caller_supplied:
            errors[name] = ["this check's parameter is fixed by the product"]
    for check in vp.checks:
        if not check.caller_supplied:
            bound[check.name] = check.param
            continue
        assert check.allowed_params is not None
        allowed = [_jsonable(p) for p in check.allowed_params]
        if check.name not in given:
            errors[check.name] = [f"required: one of {allowed}"]
            continue
        col = product.column(check.column)
        assert col is not None
        try:
            value = typed_param(check.op, given[check.name], col.type)
        except ValueError:
            value = None
        choice = next(
            (
                p
                for p in check.allowed_params
                if value is not None and same_param(value, p, check.op)
            ),
            None,
        )
        if choice is None:
            errors[check.name] = [f"must be one of {allowed} ({col.type.value} values)"]
            continue
        bound[check.name] = choice
    if errors:
        raise InvalidRequest("invalid verification parameters", {"fields": {"params": errors}})
    return bound
