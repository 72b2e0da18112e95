"""Authorisation scopes (DESIGN §4, §5): what one enterprise may do with one product.

A scope names its purpose, the operations it allows (aggregate over listed columns;
verify with listed verification products; DP synthetic data and DP model training
over the aggregate columns; scoring with listed model products — DESIGN §11), its
privacy budget and per-query cap, its
rate limit and daily quota, and its validity window. Suspension is reversible,
revocation is final; both, and expiry, refuse every call with their own code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from policies.errors import (
    BudgetExhausted,
    ScopeExpired,
    ScopeRevoked,
    ScopeSuspended,
)
from policies.tables import scopes
from products.errors import InvalidRequest, NotFound
from products.manifest import Classification, DataProduct
from products.parsing import parse

SCOPE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
NANO = Decimal("1e9")
ATTO = Decimal("1e18")
MAX_SCOPE_EPSILON = Decimal("10000")  # a scope's whole budget
MAX_QUERY_EPSILON = Decimal("100")  # one release
MAX_DELTA = Decimal("1e-4")
AGGREGATE_FUNCTIONS = ("count", "sum", "avg", "quantile", "histogram")
Clock = Callable[[], datetime]


# Prebuilt: a statement built per call is walked for its cache key on every call.
_STATUS = sa.select(scopes.c.status, scopes.c.status_reason).where(
    scopes.c.id == sa.bindparam("id")
)


class ScopeStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


def to_nano(value: Decimal) -> int:
    """Return ``value`` in units of 1e-9 (exact; callers validated the precision)."""
    return int((value * NANO).to_integral_value())


def from_nano(value: int) -> Decimal:
    """Return a nano-epsilon integer as a normalised Decimal (e.g. ``Decimal("0.5")``)."""
    d = (Decimal(value) / NANO).normalize()
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d


def to_atto(value: Decimal) -> int:
    """Return a delta in units of 1e-18 (exact; callers validated the precision)."""
    return int((value * ATTO).to_integral_value())


def from_atto(value: int) -> Decimal:
    """Return an atto-delta integer as a normalised Decimal."""
    return (Decimal(value) / ATTO).normalize()


def decimal_str(value: Decimal) -> str:
    """Return the plain decimal string used in JSON answers and audit entries."""
    text = format(value.normalize(), "f")
    return text


def parse_epsilon(
    value: Any, field: str, *, maximum: Decimal = MAX_QUERY_EPSILON, allow_zero: bool = False
) -> Decimal:
    """Parse a positive epsilon (number or decimal string, ≤ 9 decimals, ≤ ``maximum``).

    Raises ``InvalidRequest`` naming ``field``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest(f"{field} must be a number", {"fields": {field: ["not a number"]}})
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise InvalidRequest(
            f"{field} must be a number", {"fields": {field: ["not a number"]}}
        ) from None
    if not d.is_finite() or d < 0 or (d == 0 and not allow_zero):
        raise InvalidRequest(f"{field} must be positive", {"fields": {field: ["must be > 0"]}})
    if d > maximum:
        raise InvalidRequest(
            f"{field} {d} is absurd: at most {maximum}",
            {"fields": {field: [f"must be ≤ {maximum}"]}},
        )
    if d != d.quantize(Decimal("1e-9")):
        raise InvalidRequest(
            f"{field} has more than 9 decimal places",
            {"fields": {field: ["at most 9 decimal places"]}},
        )
    return d


@dataclass(frozen=True)
class Budget:
    epsilon: Decimal
    spent: Decimal
    delta: Decimal = Decimal(0)
    delta_spent: Decimal = Decimal(0)

    @property
    def remaining(self) -> Decimal:
        return max(self.epsilon - self.spent, Decimal(0))

    def to_dict(self) -> dict[str, float]:
        """DESIGN §5 ``{"epsilon", "spent", "remaining"}``; delta fields are added only
        for scopes granted a delta (extension)."""
        out = {
            "epsilon": float(self.epsilon),
            "spent": float(self.spent),
            "remaining": float(self.remaining),
        }
        if self.delta > 0:
            out["delta"] = float(self.delta)
            out["delta_spent"] = float(self.delta_spent)
            out["delta_remaining"] = float(max(self.delta - self.delta_spent, Decimal(0)))
        return out


@dataclass(frozen=True)
class Scope:
    id: str
    enterprise: str
    product: str
    purpose: str
    aggregate_columns: frozenset[str] | None  # None: no aggregate operation granted
    aggregate_functions: frozenset[str]
    verify: frozenset[str]
    epsilon_nano: int
    delta_atto: int
    delta_spent_atto: int
    max_epsilon_per_query_nano: int
    spent_nano: int
    rate_per_minute: int
    daily_quota: int
    valid_from: datetime
    valid_until: datetime
    status: ScopeStatus
    status_reason: str | None
    granted_by: str
    created_at: datetime
    synthetic: bool = False  # DP synthetic data over the aggregate columns (§11.1)
    train: bool = False  # DP model training over the aggregate columns (§11.2)
    score: frozenset[str] = frozenset()  # model products it may score with (§11.3)

    @property
    def delta(self) -> Decimal:
        return from_atto(self.delta_atto)

    @property
    def budget(self) -> Budget:
        return Budget(
            from_nano(self.epsilon_nano),
            from_nano(self.spent_nano),
            from_atto(self.delta_atto),
            from_atto(self.delta_spent_atto),
        )

    @property
    def max_epsilon_per_query(self) -> Decimal:
        return from_nano(self.max_epsilon_per_query_nano)

    def operations_dict(self) -> dict[str, Any]:
        ops: dict[str, Any] = {}
        if self.aggregate_columns is not None:
            ops["aggregate"] = {
                "columns": sorted(self.aggregate_columns),
                "functions": sorted(self.aggregate_functions),
            }
        if self.verify:
            ops["verify"] = sorted(self.verify)
        ops.update(_model_operations(self.synthetic, self.train, self.score))
        return ops

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "enterprise": self.enterprise,
            "product": self.product,
            "purpose": self.purpose,
            "operations": self.operations_dict(),
            "epsilon": float(from_nano(self.epsilon_nano)),
            "delta": float(self.delta),
            "max_epsilon_per_query": float(self.max_epsilon_per_query),
            "rate_per_minute": self.rate_per_minute,
            "daily_quota": self.daily_quota,
            "valid_from": _iso(self.valid_from),
            "valid_until": _iso(self.valid_until),
            "status": self.status.value,
            "status_reason": self.status_reason,
            "granted_by": self.granted_by,
            "created_at": _iso(self.created_at),
            "budget": self.budget.to_dict(),
        }

    @functools.cached_property
    def terms_hash(self) -> str:
        """Hex SHA-256 of the granted terms (everything but status and spending): the
        policy version an audit entry records. Terms never change after the grant."""
        terms = {
            k: v
            for k, v in self.to_dict().items()
            if k not in ("status", "status_reason", "budget")
        }
        return hashlib.sha256(json.dumps(terms, sort_keys=True).encode()).hexdigest()

    def check_epsilon(self, epsilon: Decimal) -> None:
        """Refuse a release asking for more than the scope's per-release cap: 400
        ``invalid_request`` naming ``epsilon`` (the same rule for queries, synthetic
        data and training)."""
        if epsilon > self.max_epsilon_per_query:
            cap = decimal_str(self.max_epsilon_per_query)
            raise InvalidRequest(
                f"epsilon {decimal_str(epsilon)} exceeds this scope's max_epsilon_per_query {cap}",
                {
                    "fields": {"epsilon": [f"at most {cap} (the scope's max_epsilon_per_query)"]},
                    "scope": self.id,
                    "max_epsilon_per_query": float(self.max_epsilon_per_query),
                },
            )

    def check_affordable(self, epsilon: Decimal, delta: Decimal = Decimal(0)) -> None:
        """Refuse, before any work, a release over the per-release cap or over what is
        left. Raises ``InvalidRequest`` or ``BudgetExhausted``. Only advisory: the
        binding check is the conditional charge at commit (``BudgetLedger.charge``)."""
        self.check_epsilon(epsilon)
        budget = self.budget
        if budget.spent + epsilon > budget.epsilon:
            raise BudgetExhausted(
                f"scope {self.id!r} has {decimal_str(budget.remaining)} epsilon left; "
                f"this release needs {decimal_str(epsilon)}",
                {"scope": self.id, "budget": budget.to_dict(), "requested": float(epsilon)},
            )
        if budget.delta_spent + delta > budget.delta:
            left = max(budget.delta - budget.delta_spent, Decimal(0))
            raise BudgetExhausted(
                f"scope {self.id!r} has delta {decimal_str(left)} left; this release needs "
                f"{decimal_str(delta)}",
                {"scope": self.id, "budget": budget.to_dict()},
            )

    def check_usable(self, now: datetime) -> None:
        """Raise ``ScopeRevoked``, ``ScopeSuspended`` or ``ScopeExpired`` unless usable now."""
        details = {"scope": self.id}
        if self.status is ScopeStatus.REVOKED:
            raise ScopeRevoked(f"scope {self.id!r} has been revoked", details)
        if self.status is ScopeStatus.SUSPENDED:
            raise ScopeSuspended(
                f"scope {self.id!r} is suspended"
                + (f": {self.status_reason}" if self.status_reason else ""),
                details,
            )
        if now < _aware(self.valid_from):
            raise ScopeExpired(
                f"scope {self.id!r} is not valid before {_iso(self.valid_from)}", details
            )
        if now >= _aware(self.valid_until):
            raise ScopeExpired(f"scope {self.id!r} expired at {_iso(self.valid_until)}", details)


def _model_operations(synthetic: bool, train: bool, score: frozenset[str]) -> dict[str, Any]:
    # Only the operations granted: a scope granted before they existed keeps its
    # operations JSON, and so its terms hash (the policy version of its entries).
    ops: dict[str, Any] = {}
    if synthetic:
        ops["synthetic"] = True
    if train:
        ops["train"] = True
    if score:
        ops["score"] = sorted(score)
    return ops


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def _iso(t: datetime) -> str:
    return _aware(t).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ScopeGrant:
    """A validated grant request, not yet stored."""

    id: str
    enterprise: str
    product: str
    purpose: str
    aggregate_columns: frozenset[str] | None
    aggregate_functions: frozenset[str]
    verify: frozenset[str]
    epsilon: Decimal
    delta: Decimal
    max_epsilon_per_query: Decimal
    rate_per_minute: int
    daily_quota: int
    valid_from: datetime
    valid_until: datetime
    synthetic: bool = False
    train: bool = False
    score: frozenset[str] = frozenset()


class EpsilonField(fields.Field[Decimal]):
    """A privacy budget or cost: a JSON number or decimal string, > 0, at most 9 decimal
    places and at most ``maximum``; loaded as an exact ``Decimal``."""

    def __init__(self, *, maximum: Decimal, **kw: Any) -> None:
        kw.setdefault("metadata", {"type": "number", "maximum": float(maximum)})
        super().__init__(**kw)
        self.maximum = maximum

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kw: Any) -> Decimal:
        try:
            return parse_epsilon(value, attr or "epsilon", maximum=self.maximum)
        except InvalidRequest as exc:
            raise ValidationError(exc.message) from None


class DeltaField(fields.Field[Decimal]):
    """A delta budget: a number in [0, MAX_DELTA] with at most 18 decimal places."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kw: Any) -> Decimal:
        try:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise InvalidOperation
            delta = Decimal(str(value))
        except InvalidOperation:
            raise ValidationError("must be a number") from None
        if not delta.is_finite() or delta < 0 or delta > MAX_DELTA:
            raise ValidationError(f"must be in [0, {MAX_DELTA}]")
        if delta != delta.quantize(Decimal("1e-18")):
            raise ValidationError("at most 18 decimal places")
        return delta


class TimeField(fields.Field[datetime]):
    """An RFC 3339 time with its zone, between 1970 and 9998; loaded in UTC."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kw: Any) -> datetime:
        if not isinstance(value, str):
            raise ValidationError("an RFC 3339 time such as 2027-01-01T00:00:00Z")
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError("not an RFC 3339 time") from None
        if t.tzinfo is None:
            raise ValidationError("needs a time zone (e.g. Z)")
        try:
            utc = t.astimezone(UTC)
        except OverflowError:
            raise ValidationError("must lie between 1970 and 9998") from None
        if not 1970 <= utc.year <= 9998:
            raise ValidationError("must lie between 1970 and 9998")
        return utc


class AggregateSchema(Schema):
    class Meta:
        unknown = RAISE

    columns = fields.List(fields.String(), required=True)
    functions = fields.List(
        fields.String(validate=validate.OneOf(AGGREGATE_FUNCTIONS)),
        load_default=list(AGGREGATE_FUNCTIONS),
    )


class OperationsSchema(Schema):
    class Meta:
        unknown = RAISE

    aggregate = fields.Nested(AggregateSchema)
    verify = fields.List(fields.String())
    synthetic = fields.Boolean(
        metadata={"description": "DP synthetic data over the aggregate columns (DESIGN §11)"}
    )
    train = fields.Boolean(
        metadata={"description": "DP model training over the aggregate columns (DESIGN §11)"}
    )
    score = fields.List(
        fields.String(), metadata={"description": "model products it may score with"}
    )

    @validates_schema
    def _some(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ValidationError(
                "grant at least one operation: aggregate, verify, synthetic, train or score"
            )
        for name in ("synthetic", "train"):
            if data.get(name) and "aggregate" not in data:
                raise ValidationError(
                    {name: ["works over the aggregate columns: grant aggregate too"]}
                )


class GrantSchema(Schema):
    """A scope grant request (DESIGN §5) → :class:`ScopeGrant`, before the references
    (enterprise, product, columns, verification products) are checked against the
    catalogue (``check_grant``)."""

    class Meta:
        unknown = RAISE

    id = fields.String(validate=validate.Regexp(SCOPE_ID, error="must match [A-Za-z0-9_-]{{1,64}}"))
    enterprise = fields.String(required=True, validate=validate.Length(min=1, max=128))
    product = fields.String(required=True, validate=validate.Length(min=1, max=64))
    purpose = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    operations = fields.Nested(OperationsSchema, required=True)
    epsilon = EpsilonField(required=True, maximum=MAX_SCOPE_EPSILON)
    delta = DeltaField(load_default=Decimal(0))
    max_epsilon_per_query = EpsilonField(maximum=MAX_QUERY_EPSILON)
    rate_per_minute = fields.Integer(
        strict=True, required=True, validate=validate.Range(min=1, max=1_000_000)
    )
    daily_quota = fields.Integer(
        strict=True, required=True, validate=validate.Range(min=1, max=1_000_000_000)
    )
    valid_from = TimeField(required=True)
    valid_until = TimeField(required=True)

    @post_load
    def _grant(self, data: dict[str, Any], **_: Any) -> ScopeGrant:
        errors: dict[str, list[str]] = {}
        if not data["purpose"].strip():
            errors["purpose"] = ["required: the purpose of use, in words"]
        epsilon: Decimal = data["epsilon"]
        max_q: Decimal = data.get("max_epsilon_per_query", min(epsilon, MAX_QUERY_EPSILON))
        if max_q > epsilon:
            errors["max_epsilon_per_query"] = ["cannot exceed the scope's epsilon"]
        if data["valid_until"] <= data["valid_from"]:
            errors["valid_until"] = ["must be after valid_from"]
        if errors:
            raise ValidationError(errors)
        ops = data["operations"]
        agg = ops.get("aggregate")
        return ScopeGrant(
            id=data.get("id") or "sc_" + secrets.token_hex(8),
            enterprise=data["enterprise"],
            product=data["product"],
            purpose=data["purpose"].strip(),
            aggregate_columns=frozenset(agg["columns"]) if agg is not None else None,
            aggregate_functions=frozenset(agg["functions"]) if agg is not None else frozenset(),
            verify=frozenset(ops.get("verify", [])),
            synthetic=bool(ops.get("synthetic", False)),
            train=bool(ops.get("train", False)),
            score=frozenset(ops.get("score", [])),
            epsilon=epsilon,
            delta=data["delta"],
            max_epsilon_per_query=max_q,
            rate_per_minute=data["rate_per_minute"],
            daily_quota=data["daily_quota"],
            valid_from=data["valid_from"],
            valid_until=data["valid_until"],
        )


#: The fields of a grant request (the policy files compare them).
GRANT_FIELDS = frozenset(GrantSchema().fields)


def check_grant(
    grant: ScopeGrant,
    *,
    product_of: Callable[[str], DataProduct | None],
    enterprise_exists: Callable[[str], bool],
    verification_product_of: Callable[[str], str | None],
    model_product_of: Callable[[str], str | None] | None = None,
) -> ScopeGrant:
    """Check a parsed grant's references against the catalogue: the enterprise
    exists, the product exists, the aggregate columns are its non-identifier columns,
    the verification products and model products are defined on it.
    ``verification_product_of`` (``model_product_of``) maps a verification-product
    (model-product) id to its data product id (None if unknown; without
    ``model_product_of`` no model product is known). Returns the grant; raises
    ``InvalidRequest`` whose ``details.fields`` name each bad field."""
    errors: dict[str, list[str]] = {}
    if not enterprise_exists(grant.enterprise):
        errors["enterprise"] = [f"no enterprise principal {grant.enterprise!r}"]
    product = product_of(grant.product)
    if product is None:
        errors["product"] = [f"no product {grant.product!r}"]
    problems = []
    for c in sorted(grant.aggregate_columns or ()):
        col = product.column(c) if product else None
        if product is not None and col is None:
            problems.append(f"unknown column {c!r} of product {product.id!r}")
        elif col is not None and col.classification is Classification.IDENTIFIER:
            problems.append(f"{c!r} is an identifier column: never allowed for aggregation")
    if problems:
        errors["operations.aggregate.columns"] = problems
    problems = []
    for vp in sorted(grant.verify):
        owner = verification_product_of(vp)
        if owner is None:
            problems.append(f"no verification product {vp!r}")
        elif owner != grant.product:
            problems.append(
                f"verification product {vp!r} is defined on {owner!r}, not on {grant.product!r}"
            )
    if problems:
        errors["operations.verify"] = problems
    problems = []
    for mp in sorted(grant.score):
        owner = model_product_of(mp) if model_product_of is not None else None
        if owner is None:
            problems.append(f"no model product {mp!r}")
        elif owner != grant.product:
            problems.append(f"model product {mp!r} is defined on {owner!r}, not {grant.product!r}")
    if problems:
        errors["operations.score"] = problems
    if errors:
        raise InvalidRequest("invalid scope", {"fields": errors})
    return grant


def parse_grant(
    data: Any,
    *,
    product_of: Callable[[str], DataProduct | None],
    enterprise_exists: Callable[[str], bool],
    verification_product_of: Callable[[str], str | None],
    model_product_of: Callable[[str], str | None] | None = None,
) -> ScopeGrant:
    """Parse a grant request (``GrantSchema``) and check its references
    (``check_grant``): for local commands and policy files. Raises ``InvalidRequest``."""
    grant: ScopeGrant = parse(GrantSchema, data, "scope")
    return check_grant(
        grant,
        product_of=product_of,
        enterprise_exists=enterprise_exists,
        verification_product_of=verification_product_of,
        model_product_of=model_product_of,
    )


class ScopeStore:
    """Scopes in the control-plane store."""

    def __init__(self, engine: Engine, clock: Clock, cache_ttl_s: float = 1.0) -> None:
        self._engine = engine
        self._clock = clock
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[float, Scope]] = {}

    def cached(self, scope_id: str) -> Scope:
        """Return the scope as read at most ``cache_ttl_s`` seconds ago (this process's
        own status changes clear it at once). Granted terms never change; a status read
        here may be stale, so a call's status is confirmed (``status``) in the
        transaction that commits it. Raises ``NotFound``."""
        now = time.monotonic()
        hit = self._cache.get(scope_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        scope = self.get(scope_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[scope_id] = (now + self._ttl, scope)
        return scope

    @staticmethod
    def status(conn: Connection, scope_id: str) -> tuple[ScopeStatus, str | None]:
        """Return the scope's status and reason as stored now, read on ``conn`` (a
        missing scope reads as revoked)."""
        row = conn.execute(_STATUS, {"id": scope_id}).first()
        if row is None:
            return ScopeStatus.REVOKED, None
        return ScopeStatus(row.status), row.status_reason

    @staticmethod
    def grant(conn: Connection, grant: ScopeGrant, granted_by: str, now: datetime) -> Scope | None:
        """Store ``grant`` on ``conn``: returns the new scope, or None if the id is taken
        (nothing is written then, and the transaction can go on)."""
        values = _grant_values(grant, granted_by, now)
        insert = _INSERT_IF_NEW[conn.dialect.name]
        if conn.execute(insert, values).first() is None:  # the id was taken
            return None
        return _scope(SimpleNamespace(**values))

    def get(self, scope_id: str) -> Scope:
        """Return the scope. Raises ``NotFound``."""
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(scopes).where(scopes.c.id == scope_id)).first()
        if row is None:
            raise NotFound(f"no scope {scope_id!r}", {"scope": scope_id})
        return _scope(row)

    def list(self, *, enterprise: str | None = None) -> list[Scope]:
        """Return scopes (all, or one enterprise's), ordered by id."""
        q = sa.select(scopes).order_by(scopes.c.id)
        if enterprise is not None:
            q = q.where(scopes.c.enterprise == enterprise)
        with self._engine.connect() as conn:
            return [_scope(r) for r in conn.execute(q)]

    @staticmethod
    def set_status(
        conn: Connection,
        scope_id: str,
        status: ScopeStatus,
        reason: str | None,
        *,
        allowed_from: Iterable[ScopeStatus],
        now: datetime,
    ) -> Scope | None:
        """Move the scope to ``status`` on ``conn`` if it is in one of ``allowed_from``;
        return it as changed, or None (nothing written) if it was not."""
        allowed = [s.value for s in allowed_from]
        n = conn.execute(
            scopes.update()
            .where(scopes.c.id == scope_id, scopes.c.status.in_(allowed))
            .values(status=status.value, status_reason=reason, updated_at=now)
        ).rowcount
        if not n:
            return None
        return _scope(conn.execute(sa.select(scopes).where(scopes.c.id == scope_id)).one())

    def forget(self) -> None:
        """Drop this process's cached copies (after a change committed here)."""
        self._cache.clear()


def _grant_values(grant: ScopeGrant, granted_by: str, now: datetime) -> dict[str, Any]:
    ops: dict[str, Any] = {}
    if grant.aggregate_columns is not None:
        ops["aggregate"] = {
            "columns": sorted(grant.aggregate_columns),
            "functions": sorted(grant.aggregate_functions),
        }
    if grant.verify:
        ops["verify"] = sorted(grant.verify)
    ops.update(_model_operations(grant.synthetic, grant.train, grant.score))
    return {
        "id": grant.id,
        "enterprise": grant.enterprise,
        "product": grant.product,
        "purpose": grant.purpose,
        "operations": json.dumps(ops, sort_keys=True),
        "epsilon_nano": to_nano(grant.epsilon),
        "delta_atto": to_atto(grant.delta),
        "delta_spent_atto": 0,
        "max_epsilon_per_query_nano": to_nano(grant.max_epsilon_per_query),
        "spent_nano": 0,
        "rate_per_minute": grant.rate_per_minute,
        "daily_quota": grant.daily_quota,
        "valid_from": grant.valid_from,
        "valid_until": grant.valid_until,
        "status": ScopeStatus.ACTIVE.value,
        "status_reason": None,
        "granted_by": granted_by,
        "created_at": now,
        "updated_at": now,
    }


# An id already taken inserts nothing instead of failing, so that a grant applied in
# a shared transaction (the audit append's) cannot abort the others.
# (Whether a row was inserted is read from RETURNING: psycopg reports no rowcount here.)
_INSERT_IF_NEW = {
    name: insert(scopes).on_conflict_do_nothing(index_elements=["id"]).returning(scopes.c.id)
    for name, insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert))
}


def _scope(row: Any) -> Scope:
    ops = json.loads(row.operations)
    agg = ops.get("aggregate")
    return Scope(
        id=row.id,
        enterprise=row.enterprise,
        product=row.product,
        purpose=row.purpose,
        aggregate_columns=frozenset(agg["columns"]) if agg is not None else None,
        aggregate_functions=frozenset(agg.get("functions", [])) if agg else frozenset(),
        verify=frozenset(ops.get("verify", [])),
        epsilon_nano=int(row.epsilon_nano),
        delta_atto=int(row.delta_atto),
        delta_spent_atto=int(row.delta_spent_atto),
        max_epsilon_per_query_nano=int(row.max_epsilon_per_query_nano),
        spent_nano=int(row.spent_nano),
        rate_per_minute=int(row.rate_per_minute),
        daily_quota=int(row.daily_quota),
        valid_from=_aware(row.valid_from),
        valid_until=_aware(row.valid_until),
        status=ScopeStatus(row.status),
        status_reason=row.status_reason,
        granted_by=row.granted_by,
        created_at=_aware(row.created_at),
        synthetic=bool(ops.get("synthetic", False)),
        train=bool(ops.get("train", False)),
        score=frozenset(ops.get("score", [])),
    )
