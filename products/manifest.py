"""Data-product manifests (DESIGN §4, §5): the schema operators publish.

A manifest is parsed once at the edge with marshmallow into frozen dataclasses; the
rest of the code trusts those types. Field-level errors are reported as
``InvalidRequest`` with ``details`` mapping each bad field to its messages.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from products.parsing import parse

PRODUCT_ID = re.compile(r"^[a-z0-9_]{1,64}\Z")
# Checked when a product is registered, not when a stored manifest is read back (a
# product registered under earlier rules stays readable). Bounds: beyond these,
# sensitivities and noise scales overflow doubles (found by fuzzing: bounds of ±1e308
# or [0, 5e-324] failed queries and made quantiles answer Infinity; ±1e100 worked).
MAX_BOUND = 1e100
MIN_BOUNDS_WIDTH = 1e-100
# Columns the loader adds to the stored table or uses while loading (products/loader.py).
RESERVED_COLUMNS = frozenset({"_unit_rank", "_unit_key", "_draw", "_bad", "_bucket"})
COLUMN_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}\Z")
MAX_PUBLIC_VALUES = 10_000
MAX_ROWS_PER_UNIT = 10_000

Scalar = str | int | float | bool


class ColumnType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    DATE = "date"

    @property
    def numeric(self) -> bool:
        return self in (ColumnType.INTEGER, ColumnType.FLOAT)


class KeyFormat(StrEnum):
    """Formats of identifier strings. A verification product's ``key_formats`` may name
    any of them (they decide how call values are normalised and validated); a string
    column of a manifest may declare one that has a check character (``checked``), and
    the loader then refuses values whose check character is wrong."""

    USCC = "uscc"  # GB 32100-2015 unified social credit code
    PRC_ID = "prc_id"  # GB 11643-1999 citizen identity number
    ENTERPRISE_NAME = "enterprise_name"  # registered enterprise name
    PERSON_NAME = "person_name"  # a natural person's name

    @property
    def personal(self) -> bool:
        """True when values of this format identify a natural person."""
        return self in (KeyFormat.PRC_ID, KeyFormat.PERSON_NAME)

    @property
    def checked(self) -> bool:
        """True when values carry a check character the loader verifies
        (``products.check_characters``)."""
        return self in (KeyFormat.USCC, KeyFormat.PRC_ID)


CHECKED_FORMATS = tuple(f.value for f in KeyFormat if f.checked)


class Classification(StrEnum):
    """How sensitive a column is; decides what queries may do with it."""

    IDENTIFIER = "identifier"  # keys: never released, never grouped, never aggregated
    SENSITIVE = "sensitive"  # values protected by DP; not a group key unless declared
    ATTRIBUTE = "attribute"  # descriptive; may be a group key when its key set is public
    PUBLIC = "public"  # already public; usable everywhere


@dataclass(frozen=True)
class Column:
    """One column of a data product, with what the planner may do with it."""

    name: str
    type: ColumnType
    classification: Classification
    bounds: tuple[float, float] | None = None
    public_values: tuple[Scalar, ...] | None = None
    bins: tuple[float, ...] | None = None
    nullable: bool = True
    where: bool = True
    group_by: bool = False
    aggregate: bool = False
    description: str = ""
    format: KeyFormat | None = None  # a checked format (string columns only)

    def to_dict(self) -> dict[str, Any]:
        """Return the manifest form of this column (only non-default optional fields)."""
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type.value,
            "classification": self.classification.value,
        }
        if self.bounds is not None:
            out["bounds"] = list(self.bounds)
        if self.public_values is not None:
            out["public_values"] = list(self.public_values)
        if self.bins is not None:
            out["bins"] = list(self.bins)
        out["nullable"] = self.nullable
        out["where"] = self.where
        out["group_by"] = self.group_by
        out["aggregate"] = self.aggregate
        if self.description:
            out["description"] = self.description
        if self.format is not None:
            out["format"] = self.format.value
        return out


@dataclass(frozen=True)
class DataProduct:
    """A published table: its schema, classification, bounds and privacy unit."""

    id: str
    title: str
    description: str
    privacy_unit: str
    max_rows_per_unit: int
    columns: tuple[Column, ...]
    unique: tuple[tuple[str, ...], ...] = ()
    min_group_size: int | None = None
    _by_name: Mapping[str, Column] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {c.name: c for c in self.columns})

    def column(self, name: str) -> Column | None:
        """Return the column called ``name``, or None."""
        return self._by_name.get(name)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def is_unique_key(self, names: tuple[str, ...] | list[str]) -> bool:
        """True when ``names`` identify at most one row: the privacy unit with one row
        per unit, or a superset of a declared unique combination."""
        wanted = set(names)
        if self.privacy_unit in wanted and self.max_rows_per_unit == 1:
            return True
        return any(set(key) <= wanted for key in self.unique)

    def to_dict(self) -> dict[str, Any]:
        """Return the manifest as JSON-ready data (round-trips through ``parse_manifest``)."""
        out: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "privacy_unit": self.privacy_unit,
            "max_rows_per_unit": self.max_rows_per_unit,
            "columns": [c.to_dict() for c in self.columns],
        }
        if self.unique:
            out["unique"] = [list(k) for k in self.unique]
        if self.min_group_size is not None:
            out["min_group_size"] = self.min_group_size
        return out


class ColumnSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(
        required=True,
        validate=validate.Regexp(
            COLUMN_NAME, error="must match [a-z_][a-z0-9_]{{0,63}} (lower-case SQL identifier)"
        ),
    )
    type = fields.String(required=True, validate=validate.OneOf([t.value for t in ColumnType]))
    classification = fields.String(
        required=True, validate=validate.OneOf([c.value for c in Classification])
    )
    bounds = fields.List(fields.Raw(), validate=validate.Length(equal=2))
    public_values = fields.List(
        fields.Raw(), validate=validate.Length(min=1, max=MAX_PUBLIC_VALUES)
    )
    bins = fields.List(fields.Raw(), validate=validate.Length(min=2, max=1000))
    nullable = fields.Boolean()
    where = fields.Boolean()
    group_by = fields.Boolean()
    aggregate = fields.Boolean()
    description = fields.String(validate=validate.Length(max=2000))
    format = fields.String(
        validate=validate.OneOf(
            CHECKED_FORMATS,
            error="must be one of {choices}: the identifier formats with a check character",
        )
    )


class ManifestSchema(Schema):
    class Meta:
        unknown = RAISE

    id = fields.String(
        required=True,
        validate=validate.Regexp(PRODUCT_ID, error="must match [a-z0-9_]{{1,64}}"),
    )
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="", validate=validate.Length(max=5000))
    privacy_unit = fields.String(required=True)
    max_rows_per_unit = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=MAX_ROWS_PER_UNIT)
    )
    columns = fields.List(
        fields.Nested(ColumnSchema), required=True, validate=validate.Length(min=1, max=500)
    )
    unique = fields.List(fields.List(fields.String(), validate=validate.Length(min=1)))
    min_group_size = fields.Integer(strict=True, validate=validate.Range(min=1, max=1_000_000))

    @validates_schema(skip_on_field_errors=False)
    def _cross_field(self, data: dict[str, Any], **_: Any) -> None:
        errors: dict[str, Any] = {}
        columns = [c for c in data.get("columns", []) if isinstance(c, dict)]
        names = [c["name"] for c in columns if isinstance(c.get("name"), str)]
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                errors.setdefault("columns", {})[i] = {"name": [f"duplicate column {name!r}"]}
            seen.add(name)
        if data.get("privacy_unit") not in seen:
            errors["privacy_unit"] = [
                f"must name one of the columns ({', '.join(names) or 'none declared'})"
            ]
        for i, key in enumerate(data.get("unique", [])):
            if not isinstance(key, list):
                continue
            missing = [k for k in key if k not in seen]
            if missing:
                errors.setdefault("unique", {})[i] = [f"unknown column(s) {missing}"]
        for i, col in enumerate(data.get("columns", [])):
            if not isinstance(col, dict):
                continue
            problems = _column_problems(col)
            if problems:
                errors.setdefault("columns", {}).setdefault(i, {}).update(problems)
        if errors:
            raise ValidationError(errors)


def _typed(value: Any, ctype: ColumnType) -> Scalar:
    """Coerce a manifest literal to the column's type or raise ValueError."""
    if ctype is ColumnType.BOOLEAN:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{value!r} is not a boolean")
    if ctype is ColumnType.INTEGER:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not -(2**63) <= value < 2**63:  # integer columns are 64-bit in DuckDB
                raise ValueError(f"{value} is outside the 64-bit integer range")
            return value
        raise ValueError(f"{value!r} is not an integer")
    if ctype is ColumnType.FLOAT:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond the double range
                raise ValueError(f"{value} is too large for a float") from None
            if not math.isfinite(number):
                raise ValueError(f"{value!r} is not finite")
            return number
        raise ValueError(f"{value!r} is not a number")
    if ctype is ColumnType.DATE:
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, str):
            return dt.date.fromisoformat(value).isoformat()
        raise ValueError(f"{value!r} is not an ISO date")
    if isinstance(value, str):
        return value
    raise ValueError(f"{value!r} is not a string")


def _column_problems(col: dict[str, Any]) -> dict[str, list[str]]:
    problems: dict[str, list[str]] = {}
    try:
        ctype = ColumnType(col["type"])
        cls = Classification(col["classification"])
    except (KeyError, ValueError):
        return problems  # already reported field-level
    bounds = col.get("bounds")
    if bounds is not None:
        if not ctype.numeric:
            problems["bounds"] = ["bounds are only for integer and float columns"]
        else:
            try:
                lo, hi = (_typed(b, ctype) for b in bounds)
                assert isinstance(lo, int | float) and isinstance(hi, int | float)
                if not lo < hi:
                    problems["bounds"] = ["must be [lo, hi] with lo < hi"]
            except ValueError as exc:
                problems["bounds"] = [str(exc)]
    elif ctype.numeric and cls is not Classification.IDENTIFIER and col.get("aggregate", True):
        problems["bounds"] = [
            "numeric columns need bounds [lo, hi] (contribution clipping); "
            "set aggregate: false to publish it without"
        ]
    values = col.get("public_values")
    if values is not None:
        if ctype is ColumnType.FLOAT:
            problems["public_values"] = ["float columns cannot declare public_values; use bins"]
        else:
            try:
                typed = [_typed(v, ctype) for v in values]
                if len(set(typed)) != len(typed):
                    problems["public_values"] = ["values must be distinct"]
            except ValueError as exc:
                problems["public_values"] = [str(exc)]
    bins = col.get("bins")
    if bins is not None:
        if not ctype.numeric:
            problems["bins"] = ["bins are only for integer and float columns"]
        else:
            try:
                edges = [float(_typed(b, ColumnType.FLOAT)) for b in bins]
                if any(b <= a for a, b in itertools.pairwise(edges)):
                    problems["bins"] = ["bin edges must be strictly increasing"]
            except ValueError as exc:
                problems["bins"] = [str(exc)]
    if cls is Classification.IDENTIFIER:
        for flag in ("where", "group_by", "aggregate"):
            if col.get(flag):
                problems[flag] = [
                    "identifier columns are only keys: never filtered, grouped or aggregated"
                ]
    if col.get("group_by") and ctype is ColumnType.FLOAT:
        problems["group_by"] = ["float columns cannot be group keys; declare bins instead"]
    if col.get("format") is not None and ctype is not ColumnType.STRING:
        problems["format"] = ["format is only for string columns"]
    return problems


def _column(col: dict[str, Any]) -> Column:
    ctype = ColumnType(col["type"])
    cls = Classification(col["classification"])
    is_id = cls is Classification.IDENTIFIER
    bounds = None
    if "bounds" in col:
        lo, hi = (_typed(b, ctype) for b in col["bounds"])
        assert isinstance(lo, int | float) and isinstance(hi, int | float)
        bounds = (lo, hi)
    public_values = None
    if "public_values" in col:
        public_values = tuple(_typed(v, ctype) for v in col["public_values"])
    elif ctype is ColumnType.BOOLEAN and not is_id:
        public_values = (False, True)
    bins = tuple(float(b) for b in col["bins"]) if "bins" in col else None
    categorical = ctype in (ColumnType.STRING, ColumnType.INTEGER, ColumnType.BOOLEAN)
    categorical = categorical or ctype is ColumnType.DATE
    default_group = (
        not is_id
        and categorical
        and (cls is not Classification.SENSITIVE or public_values is not None)
    )
    return Column(
        name=col["name"],
        type=ctype,
        classification=cls,
        bounds=bounds,
        public_values=public_values,
        bins=bins,
        nullable=col.get("nullable", True),
        where=col.get("where", not is_id),
        group_by=col.get("group_by", default_group),
        aggregate=col.get("aggregate", not is_id),
        description=col.get("description", ""),
        format=KeyFormat(col["format"]) if "format" in col else None,
    )


def _registration_problems(columns: list[dict[str, Any]]) -> dict[str, Any]:
    """Rules for new products only (see ``MAX_BOUND``), as field paths to messages."""
    errors: dict[str, Any] = {}
    for i, col in enumerate(columns):
        problems: dict[str, list[str]] = {}
        if col["name"] in RESERVED_COLUMNS:
            problems["name"] = [
                f"{col['name']!r} is reserved for the loader's own columns "
                f"({', '.join(sorted(RESERVED_COLUMNS))})"
            ]
        bounds = col.get("bounds")
        if bounds is not None:
            lo, hi = (float(b) for b in bounds)
            if max(abs(lo), abs(hi)) > MAX_BOUND or hi - lo < MIN_BOUNDS_WIDTH:
                problems["bounds"] = [
                    f"must lie within ±{MAX_BOUND:g} and be at least {MIN_BOUNDS_WIDTH:g} "
                    "apart: noise scales and sums of clipped values must stay finite doubles"
                ]
        if problems:
            errors.setdefault("columns", {})[i] = problems
    return errors


class NewManifestSchema(ManifestSchema):
    """A manifest to register (DESIGN §5) → :class:`DataProduct`, with the rules that
    apply to new products (stored manifests are read under the rules of their day)."""

    registering = True

    @post_load
    def _product(self, data: dict[str, Any], **_: Any) -> DataProduct:
        if self.registering:
            problems = _registration_problems(data["columns"])
            if problems:
                raise ValidationError(problems)
        return DataProduct(
            id=data["id"],
            title=data["title"],
            description=data["description"],
            privacy_unit=data["privacy_unit"],
            max_rows_per_unit=data["max_rows_per_unit"],
            columns=tuple(_column(c) for c in data["columns"]),
            unique=tuple(tuple(k) for k in data.get("unique", [])),
            min_group_size=data.get("min_group_size"),
        )


class StoredManifestSchema(NewManifestSchema):
    registering = False


def parse_manifest(data: Any, *, registering: bool = True) -> DataProduct:
    """Validate manifest data (already decoded from JSON or YAML).

    ``registering`` False reads back a stored manifest: the rules for new products
    (``_registration_problems``) are not applied again. Returns the frozen
    ``DataProduct``. Raises ``InvalidRequest`` whose ``details`` map each offending
    field path to its messages.
    """
    schema = NewManifestSchema if registering else StoredManifestSchema
    product: DataProduct = parse(schema, data, "product manifest")
    return product
