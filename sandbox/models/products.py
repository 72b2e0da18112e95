"""Model products (模型产品) and their filing (算法备案), DESIGN §11.3.

A model product publishes a scoring model over a data product: a scorecard (points
per bin) or a linear model (coefficients), and output bands. A caller names a subject
by its full key and gets a band label — never an input value, never a score.

Definitions are parsed at the edge (``ModelProductSchema``) and checked against the
data product (``definition_from``); each distinct definition is a *version* whose id
is the SHA-256 of its RFC 8785 canonical JSON, so a regulator holding the definition
can recompute the id an audit entry names.

Scoring reuses verification wholesale (``scorer``): a model's inputs become a
verification product over the same key — for a scorecard, one boolean check per bin
(``eq``/``in`` for values, ``ge`` per inner edge for ranges, ``exists`` for missing),
answered by the verification runner's keyed lookups or answer indexes; for a linear
model, the runner's keyed value lookups. Subjects are parsed and normalised as
verification keys are (``parse_item``), natural-person models need ``consent_ref``,
and the band is computed here, in the service.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import rfc8785
import sqlalchemy as sa
from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from products.catalogue import ProductRecord
from products.errors import Conflict, InvalidRequest, NotFound
from products.manifest import Classification, Column, ColumnType, DataProduct
from products.verification import KeyFormat, VerificationProduct, verification_from
from sandbox.models.tables import model_filings, model_products, model_versions
from sandbox.verification.lookup import Outcome

MODEL_PRODUCT_ID = re.compile(r"^[a-z0-9_-]{1,64}\Z")
MAX_FEATURES = 32
MAX_BINS = 100
MAX_BANDS = 20


class Status(StrEnum):
    DRAFT = "draft"
    FILED = "filed"
    WITHDRAWN = "withdrawn"


def _bad(path: str, message: str) -> InvalidRequest:
    return InvalidRequest("invalid model product", {"fields": {path: [message]}})


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(path, "a finite number")
    if abs(value) > 1e12:
        raise _bad(path, "at most 1e12 in magnitude")
    return float(value)


class BandSchema(Schema):
    class Meta:
        unknown = RAISE

    label = fields.String(required=True, validate=validate.Length(min=1, max=64))
    min_score = fields.Float(required=True, allow_nan=False)


class OutputSchema(Schema):
    class Meta:
        unknown = RAISE

    bands = fields.List(
        fields.Nested(BandSchema), required=True, validate=validate.Length(min=1, max=MAX_BANDS)
    )


class ModelProductSchema(Schema):
    """``{id, product, key, model | from_release, output: {bands}, natural_person}``
    (DESIGN §11.3); ``key_formats`` and ``description`` as for verification products."""

    class Meta:
        unknown = RAISE

    id = fields.String(
        required=True,
        validate=validate.Regexp(MODEL_PRODUCT_ID, error="must match [a-z0-9_-]{{1,64}}"),
    )
    product = fields.String(required=True, validate=validate.Length(min=1, max=64))
    key = fields.List(fields.String(), required=True, validate=validate.Length(min=1, max=8))
    key_formats = fields.Dict(
        keys=fields.String(),
        values=fields.String(validate=validate.OneOf([f.value for f in KeyFormat])),
    )
    model = fields.Dict(metadata={"description": "scorecard or linear model (as trained)"})
    from_release = fields.String(
        validate=validate.Length(min=1, max=64),
        metadata={"description": "the release id of a /v1/models/train answer"},
    )
    output = fields.Nested(OutputSchema, required=True)
    natural_person = fields.Boolean(load_default=False)
    description = fields.String(load_default="", validate=validate.Length(max=5000))

    @post_load
    def _one_model(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if ("model" in data) == ("from_release" in data):
            raise ValidationError({"model": ["give exactly one of model or from_release"]})
        return data


class NoteSchema(Schema):
    """``{note?}``: the body of a filing or withdrawal (the note is recorded in the
    version's history and in the audit entry)."""

    class Meta:
        unknown = RAISE

    note = fields.String(validate=validate.Length(max=2000))


@dataclass(frozen=True)
class Band:
    label: str
    min_score: float


@dataclass(frozen=True)
class ModelDefinition:
    """A checked definition: what one version is."""

    id: str
    product: str
    key: tuple[str, ...]
    key_formats: Mapping[str, str]
    natural_person: bool
    description: str
    model: Mapping[str, Any]
    bands: tuple[Band, ...]
    score_range: tuple[float, float]

    def canonical(self) -> dict[str, Any]:
        """The JSON whose RFC 8785 encoding is hashed into the version id."""
        return {
            "id": self.id,
            "product": self.product,
            "key": list(self.key),
            "key_formats": dict(self.key_formats),
            "natural_person": self.natural_person,
            "description": self.description,
            "model": dict(self.model),
            "output": {"bands": [{"label": b.label, "min_score": b.min_score} for b in self.bands]},
        }

    @property
    def version(self) -> str:
        return version_of(self.canonical())

    def band(self, score: float) -> str:
        """The label of the first band whose ``min_score`` the score reaches (the last
        band covers everything below)."""
        for b in self.bands:
            if score >= b.min_score:
                return b.label
        return self.bands[-1].label


def version_of(canonical: Mapping[str, Any]) -> str:
    """SHA-256 hex of the RFC 8785 (JCS) encoding of a definition."""
    return hashlib.sha256(rfc8785.dumps(dict(canonical))).hexdigest()


def definition_from(
    loaded: Mapping[str, Any], product: DataProduct, model: Mapping[str, Any]
) -> ModelDefinition:
    """Check a definition (loaded by ``ModelProductSchema``; ``model`` given or taken
    from its training release) against the data product. Raises ``InvalidRequest``
    naming the field."""
    if loaded["product"] != product.id:
        raise _bad("product", f"must name the data product {product.id!r}")
    kind = model.get("kind")
    if kind == "scorecard":
        score_range = _check_scorecard(model, product)
    elif kind == "linear":
        score_range = _check_linear(model, product)
    else:
        raise _bad("model.kind", "scorecard or linear")
    bands = tuple(Band(b["label"], float(b["min_score"])) for b in loaded["output"]["bands"])
    labels = [b.label for b in bands]
    if len(set(labels)) != len(labels):
        raise _bad("output.bands", "labels must be distinct")
    if any(b.min_score >= a.min_score for a, b in itertools.pairwise(bands)):
        raise _bad("output.bands", "order bands by strictly decreasing min_score")
    if bands[-1].min_score > score_range[0]:
        raise _bad(
            "output.bands",
            f"the bands must cover the score range {list(score_range)}: the last band's "
            f"min_score must be at most {score_range[0]}",
        )
    definition = ModelDefinition(
        id=loaded["id"],
        product=loaded["product"],
        key=tuple(loaded["key"]),
        key_formats=dict(loaded.get("key_formats") or {}),
        natural_person=bool(loaded["natural_person"]),
        description=loaded.get("description", ""),
        model=json.loads(json.dumps(model)),
        bands=bands,
        score_range=score_range,
    )
    try:
        definition.version  # noqa: B018 - the version is the hash of the canonical form
    except rfc8785.CanonicalizationError:
        # Fields the checks above leave free (a scorecard's target, scale, WoE, ...)
        # may hold NaN, infinities or integers beyond 2^53, which RFC 8785 cannot encode.
        raise _bad(
            "model", "numbers must be finite, and integers within ±2^53 (RFC 8785)"
        ) from None
    scorer(definition, product)  # the key, formats and bins as a verification product
    return definition


def _feature_column(product: DataProduct, name: Any, path: str) -> Column:
    if not isinstance(name, str):
        raise _bad(path, "a column name")
    column = product.column(name)
    if column is None:
        raise _bad(path, f"no column {name!r} in product {product.id!r}")
    if column.classification is Classification.IDENTIFIER:
        raise _bad(path, f"{name!r} is an identifier column: never a model input")
    return column


def _check_scorecard(model: Mapping[str, Any], product: DataProduct) -> tuple[float, float]:
    allowed = {"kind", "target", "scale", "base_points", "features", "score_range"}
    extra = sorted(set(model) - allowed)
    if extra:
        raise _bad(f"model.{extra[0]}", "unknown field")
    base = _number(model.get("base_points", 0), "model.base_points")
    features = model.get("features")
    if not isinstance(features, list) or not 1 <= len(features) <= MAX_FEATURES:
        raise _bad("model.features", f"a list of 1 to {MAX_FEATURES} features")
    lo = hi = base
    seen: set[str] = set()
    for i, f in enumerate(features):
        path = f"model.features.{i}"
        if not isinstance(f, dict) or set(f) - {"column", "bins", "missing_points"}:
            raise _bad(path, "{column, bins, missing_points}")
        column = _feature_column(product, f.get("column"), f"{path}.column")
        if column.name in seen:
            raise _bad(f"{path}.column", "each column once")
        seen.add(column.name)
        bins = f.get("bins")
        if not isinstance(bins, list) or not 1 <= len(bins) <= MAX_BINS:
            raise _bad(f"{path}.bins", f"a list of 1 to {MAX_BINS} bins")
        points = []
        ranged = None
        for j, b in enumerate(bins):
            bpath = f"{path}.bins.{j}"
            if not isinstance(b, dict):
                raise _bad(bpath, "{value | values | range, points}")
            kinds = [k for k in ("value", "values", "range") if k in b]
            if len(kinds) != 1 or set(b) - {"value", "values", "range", "points", "woe"}:
                raise _bad(bpath, "exactly one of value, values or range, and points")
            is_range = kinds[0] == "range"
            if ranged is None:
                ranged = is_range
            elif ranged != is_range:
                raise _bad(bpath, "a feature's bins are all ranges or all values")
            points.append(_number(b.get("points"), f"{bpath}.points"))
        if ranged:
            _check_ranges(column, bins, f"{path}.bins")
        missing = _number(f.get("missing_points", 0), f"{path}.missing_points")
        lo += min([*points, missing])
        hi += max([*points, missing])
    return lo, hi


def _edge(value: Any, column: Column, path: str) -> float | str:
    if column.type is ColumnType.DATE:
        if not isinstance(value, str):
            raise _bad(path, "ISO dates")
        try:
            return datetime.fromisoformat(value).date().isoformat()
        except ValueError:
            raise _bad(path, f"{value!r} is not an ISO date") from None
    return _number(value, path)


def _check_ranges(column: Column, bins: Sequence[Mapping[str, Any]], path: str) -> None:
    if column.type not in (ColumnType.INTEGER, ColumnType.FLOAT, ColumnType.DATE):
        raise _bad(path, f"ranges need an integer, float or date column, not {column.type.value}")
    previous: float | str | None = None
    for j, b in enumerate(bins):
        r = b["range"]
        if not isinstance(r, list) or len(r) != 2:
            raise _bad(f"{path}.{j}.range", "[lo, hi]")
        lo, hi = _edge(r[0], column, f"{path}.{j}.range"), _edge(r[1], column, f"{path}.{j}.range")
        if not lo < hi:  # type: ignore[operator]
            raise _bad(f"{path}.{j}.range", "lo < hi")
        if previous is not None and lo != previous:
            raise _bad(f"{path}.{j}.range", "ranges must be contiguous and increasing")
        previous = hi


def _check_linear(model: Mapping[str, Any], product: DataProduct) -> tuple[float, float]:
    extra = sorted(set(model) - {"kind", "target", "intercept", "features"})
    if extra:
        raise _bad(f"model.{extra[0]}", "unknown field")
    intercept = _number(model.get("intercept"), "model.intercept")
    features = model.get("features")
    if not isinstance(features, list) or not 1 <= len(features) <= MAX_FEATURES:
        raise _bad("model.features", f"a list of 1 to {MAX_FEATURES} features")
    lo = hi = intercept
    seen: set[str] = set()
    for i, f in enumerate(features):
        path = f"model.features.{i}"
        if not isinstance(f, dict) or set(f) - {"column", "coefficient", "bounds", "missing_value"}:
            raise _bad(path, "{column, coefficient, bounds?, missing_value?}")
        column = _feature_column(product, f.get("column"), f"{path}.column")
        if column.name in seen:
            raise _bad(f"{path}.column", "each column once")
        seen.add(column.name)
        if column.type not in (ColumnType.INTEGER, ColumnType.FLOAT) or column.bounds is None:
            raise _bad(f"{path}.column", f"{column.name!r} is not a bounded numeric column")
        coef = _number(f.get("coefficient"), f"{path}.coefficient")
        a, b = _bounds(f, column, path)
        if "missing_value" in f:
            m = _number(f["missing_value"], f"{path}.missing_value")
            if not a <= m <= b:
                raise _bad(f"{path}.missing_value", "within the bounds")
        lo += min(coef * a, coef * b)
        hi += max(coef * a, coef * b)
    return lo, hi


def _bounds(f: Mapping[str, Any], column: Column, path: str) -> tuple[float, float]:
    assert column.bounds is not None
    dlo, dhi = float(column.bounds[0]), float(column.bounds[1])
    if "bounds" not in f:
        return dlo, dhi
    b = f["bounds"]
    if not isinstance(b, list) or len(b) != 2:
        raise _bad(f"{path}.bounds", "[lo, hi]")
    lo, hi = _number(b[0], f"{path}.bounds"), _number(b[1], f"{path}.bounds")
    if not (dlo <= lo < hi <= dhi):
        raise _bad(f"{path}.bounds", f"lo < hi within the declared bounds [{dlo}, {dhi}]")
    return lo, hi


# --- scoring -------------------------------------------------------------------------


@dataclass(frozen=True)
class Scorer:
    """A version compiled for scoring: the verification product its lookups use, and
    how a lookup's outcome (or values) becomes a score."""

    definition: ModelDefinition
    version: str
    vp: VerificationProduct
    kind: str
    columns: tuple[str, ...] = ()  # linear: the feature columns looked up
    missing_score: float = 0.0  # the score of a record whose every input is missing
    _features: tuple[Any, ...] = field(default=(), repr=False)

    def band_of_outcome(self, outcome: Outcome) -> str:
        """Scorecard: the band of a verification outcome (an unknown subject gets the
        band of an all-missing record)."""
        if not outcome.found:
            return self.definition.band(self.missing_score)
        checks: Mapping[str, bool] = outcome.answer["checks"]
        score = float(self.definition.model.get("base_points", 0))
        for names, points, missing, exists, ranged in self._features:
            if exists is not None and not checks[exists]:
                score += missing
            elif ranged:
                score += points[sum(1 for n in names if checks[n])]
            else:
                hit = next((p for n, p in zip(names, points, strict=True) if checks[n]), None)
                score += missing if hit is None else hit
        return self.definition.band(score)

    def band_of_values(self, values: Sequence[Any] | None) -> str:
        """Linear: the band of a record's feature values (None: unknown subject)."""
        if values is None:
            return self.definition.band(self.missing_score)
        score = float(self.definition.model["intercept"])
        for (coef, lo, hi, missing), v in zip(self._features, values, strict=True):
            x = missing if v is None else min(max(float(v), lo), hi)
            score += coef * x
        return self.definition.band(score)


def scorer(definition: ModelDefinition, product: DataProduct) -> Scorer:
    """Compile ``definition`` (checked) into a ``Scorer``. Raises ``InvalidRequest``
    for a key or format the verification rules refuse, naming the field."""
    model = definition.model
    version = definition.version
    checks: list[dict[str, Any]] = []
    features: list[Any] = []
    if model["kind"] == "scorecard":
        missing_score = float(model.get("base_points", 0))
        for i, f in enumerate(model["features"]):
            column = product.column(f["column"])
            assert column is not None
            missing = float(f.get("missing_points", 0))
            missing_score += missing
            points = [float(b["points"]) for b in f["bins"]]
            ranged = "range" in f["bins"][0]
            names = []
            exists = None
            if ranged:
                for j, b in enumerate(f["bins"][1:]):
                    names.append(f"f{i}_{j}")
                    checks.append(
                        {
                            "name": names[-1],
                            "column": column.name,
                            "op": "ge",
                            "param": _param(b["range"][0], column),
                        }
                    )
                if column.nullable:
                    exists = f"f{i}_x"
                    checks.append({"name": exists, "column": column.name, "op": "exists"})
            else:
                for j, b in enumerate(f["bins"]):
                    names.append(f"f{i}_{j}")
                    if "values" in b:
                        check = {"op": "in", "param": b["values"]}
                    else:
                        check = {"op": "eq", "param": b["value"]}
                    checks.append({"name": names[-1], "column": column.name, **check})
            features.append((tuple(names), tuple(points), missing, exists, ranged))
        columns: tuple[str, ...] = ()
    else:
        missing_score = float(model["intercept"])
        for f in model["features"]:
            column = product.column(f["column"])
            assert column is not None
            lo, hi = _bounds(f, column, "model.features")
            missing = float(f.get("missing_value", (lo + hi) / 2))
            coef = float(f["coefficient"])
            missing_score += coef * missing
            features.append((coef, lo, hi, missing))
        columns = tuple(f["column"] for f in model["features"])
        checks.append({"name": "f0_x", "column": columns[0], "op": "exists"})
    loaded = {
        "id": f"model-{definition.id}-{version[:16]}",
        "product": definition.product,
        "key": list(definition.key),
        "checks": checks,
        "answer": "each",
        "natural_person": definition.natural_person,
        "description": "",
        "key_formats": dict(definition.key_formats),
    }
    try:
        vp = verification_from(loaded, product)
    except InvalidRequest as exc:
        raise InvalidRequest(
            "invalid model product", {"fields": _renamed(exc.details.get("fields", {}))}
        ) from None
    return Scorer(definition, version, vp, model["kind"], columns, missing_score, tuple(features))


def _renamed(errors: Mapping[str, Any]) -> dict[str, Any]:
    # The verification product's fields are the model product's, except its checks,
    # which are the model's bins.
    return {("model.features" if k == "checks" else k): v for k, v in errors.items()}


def _param(edge: Any, column: Column) -> Any:
    if column.type is ColumnType.INTEGER:
        return math.ceil(float(edge))  # x >= 20.5 <=> x >= 21 for integers
    if column.type is ColumnType.FLOAT:
        return float(edge)
    return edge


# --- the store -----------------------------------------------------------------------


_INSERT_PRODUCT = {
    name: insert(model_products)
    .on_conflict_do_nothing(index_elements=["id"])
    .returning(model_products.c.id)
    for name, insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert))
}
_INSERT_VERSION = {
    name: insert(model_versions)
    .on_conflict_do_nothing(index_elements=["model_product", "version"])
    .returning(model_versions.c.version)
    for name, insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert))
}
_COUNT = (
    model_versions.update()
    .where(
        model_versions.c.model_product == sa.bindparam("mp"),
        model_versions.c.version == sa.bindparam("v"),
        model_versions.c.status == Status.FILED.value,
    )
    .values(calls=model_versions.c.calls + sa.bindparam("n"))
)


@dataclass(frozen=True)
class VersionRecord:
    version: str
    seq: int
    status: Status
    definition: dict[str, Any]
    training: dict[str, Any] | None
    calls: int
    defined_by: str
    created_at: datetime
    history: tuple[dict[str, Any], ...]

    def to_dict(self, *, full: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "seq": self.seq,
            "status": self.status.value,
            "created_at": _iso(self.created_at),
        }
        if full:
            out["definition"] = self.definition
            out["training"] = self.training
            out["calls"] = self.calls
            out["defined_by"] = self.defined_by
            out["history"] = list(self.history)
        return out


@dataclass(frozen=True)
class ModelProductRecord:
    id: str
    product: str
    defined_by: str
    versions: tuple[VersionRecord, ...]  # by seq

    @property
    def current(self) -> VersionRecord | None:
        """The newest filed version (DESIGN §11.3), or None."""
        filed = [v for v in self.versions if v.status is Status.FILED]
        return max(filed, key=lambda v: v.seq) if filed else None

    def version(self, version: str) -> VersionRecord:
        for v in self.versions:
            if v.version == version:
                return v
        raise NotFound(
            f"model product {self.id!r} has no version {version!r}",
            {"model_product": self.id, "version": version},
        )

    def to_dict(self, *, full: bool) -> dict[str, Any]:
        """Operators and regulators (``full``) see every version with its definition,
        training release, filing history and call counts; enterprises see what a
        caller needs: key, bands and the current version's id."""
        current = self.current
        latest = self.versions[-1].definition if self.versions else {}
        out: dict[str, Any] = {
            "id": self.id,
            "product": self.product,
            "key": latest.get("key", []),
            "natural_person": latest.get("natural_person", False),
            "current_version": current.version if current else None,
        }
        shown = current.definition if current else latest
        out["bands"] = [b["label"] for b in shown.get("output", {}).get("bands", [])]
        if full:
            out["defined_by"] = self.defined_by
            out["versions"] = [v.to_dict(full=True) for v in self.versions]
        return out


def _iso(t: datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ModelStore:
    """Model products, versions and filings in the control-plane store. Writes take
    the call's connection (the transaction of its audit entry)."""

    def __init__(self, engine: Engine, cache_ttl_s: float = 1.0) -> None:
        self._engine = engine
        self._ttl = cache_ttl_s
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, ModelProductRecord]] = {}
        self._scorers: dict[tuple[str, str], Scorer] = {}
        self._scoring: dict[str, tuple[float, tuple[ModelProductRecord, ProductRecord]]] = {}

    def get(self, mp_id: str) -> ModelProductRecord:
        """Raises ``NotFound``."""
        with self._engine.connect() as conn:
            return self.read(conn, mp_id)

    @staticmethod
    def read(conn: Connection, mp_id: str) -> ModelProductRecord:
        row = conn.execute(sa.select(model_products).where(model_products.c.id == mp_id)).first()
        if row is None:
            raise NotFound(f"no model product {mp_id!r}", {"model_product": mp_id})
        history: dict[str, list[dict[str, Any]]] = {}
        for h in conn.execute(
            sa.select(model_filings)
            .where(model_filings.c.model_product == mp_id)
            .order_by(model_filings.c.id)
        ):
            history.setdefault(h.version, []).append(
                {
                    "event": h.event,
                    "actor": h.actor,
                    "note": h.note,
                    "audit_index": h.audit_index,
                    "time": _iso(h.created_at),
                }
            )
        versions = tuple(
            VersionRecord(
                version=v.version,
                seq=v.seq,
                status=Status(v.status),
                definition=json.loads(v.definition),
                training=json.loads(v.training) if v.training else None,
                calls=int(v.calls),
                defined_by=v.defined_by,
                created_at=v.created_at,
                history=tuple(history.get(v.version, ())),
            )
            for v in conn.execute(
                sa.select(model_versions)
                .where(model_versions.c.model_product == mp_id)
                .order_by(model_versions.c.seq)
            )
        )
        return ModelProductRecord(row.id, row.product, row.defined_by, versions)

    def cached(self, mp_id: str) -> ModelProductRecord:
        """As ``get``, read at most ``cache_ttl_s`` ago (a filing's effect is confirmed
        at commit, ``count``)."""
        now = time.monotonic()
        hit = self._cache.get(mp_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = self.get(mp_id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[mp_id] = (now + self._ttl, record)
        return record

    def scoring(
        self, mp_id: str, product_of: Callable[[str], ProductRecord]
    ) -> tuple[ModelProductRecord, ProductRecord]:
        """The model product and its data product (with the current data version), as
        read at most ``cache_ttl_s`` ago: the hot path of scoring reads no store (the
        version's filing is confirmed at commit, ``count``; a new data version is seen
        within the TTL, as verification's ``verification_cached``)."""
        now = time.monotonic()
        hit = self._scoring.get(mp_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = self.get(mp_id)
        found = (record, product_of(record.product))
        with self._lock:
            if len(self._scoring) > 10_000:
                self._scoring.clear()
            self._scoring[mp_id] = (now + self._ttl, found)
        return found

    def scorer(
        self, record: ModelProductRecord, version: VersionRecord, product: DataProduct
    ) -> Scorer:
        """The compiled scorer of a stored version (definitions never change)."""
        slot = (record.id, version.version)
        hit = self._scorers.get(slot)
        if hit is not None:
            return hit
        d = version.definition
        definition = definition_from(
            {**d, "output": {"bands": d["output"]["bands"]}}, product, d["model"]
        )
        compiled = scorer(definition, product)
        with self._lock:
            if len(self._scorers) > 10_000:
                self._scorers.clear()
            self._scorers[slot] = compiled
        return compiled

    def ids(self) -> list[str]:
        with self._engine.connect() as conn:
            return list(
                conn.execute(sa.select(model_products.c.id).order_by(model_products.c.id)).scalars()
            )

    def owner(self, mp_id: str) -> str | None:
        """The data product of a model product (None if unknown): for scope grants."""
        with self._engine.connect() as conn:
            return conn.execute(
                sa.select(model_products.c.product).where(model_products.c.id == mp_id)
            ).scalar()

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()
            self._scoring.clear()

    @staticmethod
    def define(
        conn: Connection,
        definition: ModelDefinition,
        training: Mapping[str, Any] | None,
        actor: str,
        audit_index: int,
        now: datetime,
    ) -> tuple[str, bool]:
        """Store ``definition`` as a new draft version on ``conn``; return (version,
        created). The same definition again creates nothing. Raises ``Conflict`` if
        the id is taken by a model product over another data product."""
        inserted = conn.execute(
            _INSERT_PRODUCT[conn.dialect.name],
            {
                "id": definition.id,
                "product": definition.product,
                "defined_by": actor,
                "created_at": now,
            },
        ).first()
        if inserted is None:
            product = conn.execute(
                sa.select(model_products.c.product).where(model_products.c.id == definition.id)
            ).scalar()
            if product != definition.product:
                raise Conflict(
                    f"model product {definition.id!r} is defined on {product!r}",
                    {"model_product": definition.id},
                )
        version = definition.version
        seq = conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(model_versions.c.seq), 0)).where(
                model_versions.c.model_product == definition.id
            )
        ).scalar_one()
        created = conn.execute(
            _INSERT_VERSION[conn.dialect.name],
            {
                "model_product": definition.id,
                "version": version,
                "seq": int(seq) + 1,
                "definition": json.dumps(
                    definition.canonical(), sort_keys=True, ensure_ascii=False
                ),
                "training": json.dumps(training, sort_keys=True) if training else None,
                "status": Status.DRAFT.value,
                "calls": 0,
                "defined_by": actor,
                "created_at": now,
            },
        ).first()
        if created is None:
            return version, False
        _history(conn, definition.id, version, "define", actor, None, audit_index, now)
        return version, True

    @staticmethod
    def transition(
        conn: Connection,
        mp_id: str,
        version: str,
        to: Status,
        allowed_from: Sequence[Status],
        actor: str,
        note: str | None,
        audit_index: int,
        now: datetime,
    ) -> bool:
        """Move a version to ``to`` if it is in ``allowed_from``; False (nothing
        written) otherwise."""
        changed = conn.execute(
            model_versions.update()
            .where(
                model_versions.c.model_product == mp_id,
                model_versions.c.version == version,
                model_versions.c.status.in_([s.value for s in allowed_from]),
            )
            .values(status=to.value)
        ).rowcount
        if changed != 1:
            return False
        event = "file" if to is Status.FILED else "withdraw"
        _history(conn, mp_id, version, event, actor, note, audit_index, now)
        return True

    @staticmethod
    def count(conn: Connection, mp_id: str, version: str, n: int) -> bool:
        """Count ``n`` scored subjects against a version, if it is still filed;
        False (nothing written) if it is not."""
        return conn.execute(_COUNT, {"mp": mp_id, "v": version, "n": n}).rowcount == 1


def _history(
    conn: Connection,
    mp_id: str,
    version: str,
    event: str,
    actor: str,
    note: str | None,
    audit_index: int,
    now: datetime,
) -> None:
    conn.execute(
        model_filings.insert().values(
            model_product=mp_id,
            version=version,
            event=event,
            actor=actor,
            note=note,
            audit_index=audit_index,
            created_at=now,
        )
    )


ProductOf = Callable[[str], DataProduct | None]
