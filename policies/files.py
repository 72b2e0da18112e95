"""Scopes kept as YAML policy files in an operator's own repository.

A file lists the scopes that should exist::

    scopes:
      - id: sc-acme-loans
        enterprise: ent-acme
        product: enterprise_registry
        purpose: loan underwriting
        operations: {aggregate: {columns: [district]}, verify: [enterprise-good-standing]}
        epsilon: 10
        max_epsilon_per_query: 1
        rate_per_minute: 600
        daily_quota: 100000
        valid_from: 2026-01-01T00:00:00Z
        valid_until: 2027-01-01T00:00:00Z
        status: active            # optional: active | suspended | revoked

``plan`` compares it with the scopes that exist and returns the steps that make
them match. Granted terms (budget, columns, validity) are immutable by design —
changing them would rewrite what the enterprise was authorised to do — so a
difference there is reported as a conflict to resolve by revoking and granting a
new scope, never applied silently. Applying the same file twice does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from policies.scopes import GRANT_FIELDS
from products.errors import InvalidRequest
from products.yamlfile import load_yaml

STATUS_STEPS = {
    ("active", "suspended"): "suspend",
    ("suspended", "active"): "resume",
    ("active", "revoked"): "revoke",
    ("suspended", "revoked"): "revoke",
}
# Every granted term (everything of a grant request but its id).
COMPARED = tuple(sorted(GRANT_FIELDS - {"id"}))


@dataclass(frozen=True)
class Step:
    action: str  # grant | suspend | resume | revoke | unchanged | conflict
    scope: str
    body: dict[str, Any] = field(default_factory=dict)
    differences: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the dry-run diff."""
        if self.action == "grant":
            return (
                f"+ grant   {self.scope} ({self.body.get('enterprise')} on "
                f"{self.body.get('product')}, epsilon {self.body.get('epsilon')})"
            )
        if self.action == "conflict":
            diffs = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in self.differences.items())
            return (
                f"! conflict {self.scope}: granted terms differ ({diffs}); revoke it and "
                "grant a new scope id"
            )
        if self.action == "unchanged":
            return f"= unchanged {self.scope}"
        return f"~ {self.action:<8}{self.scope}"


def _json_safe(value: Any) -> Any:
    """YAML parses timestamps into datetimes; the API wants RFC 3339 strings."""
    if isinstance(value, datetime):
        v = value if value.tzinfo else value.replace(tzinfo=UTC)
        return v.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def load_policy_file(text: str) -> list[dict[str, Any]]:
    """Parse a policy file. Returns its scopes. Raises ``InvalidRequest``."""
    data = load_yaml(text, "policy file")
    if not isinstance(data, Mapping) or not isinstance(data.get("scopes"), list):
        raise InvalidRequest("a policy file is a mapping with a 'scopes:' list")
    scopes = []
    seen: set[str] = set()
    for i, entry in enumerate(data["scopes"]):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str):
            raise InvalidRequest(f"scopes[{i}] needs an 'id' (stable across applies)")
        if entry["id"] in seen:
            raise InvalidRequest(f"scope id {entry['id']!r} appears twice")
        seen.add(entry["id"])
        status = entry.get("status", "active")
        if status not in ("active", "suspended", "revoked"):
            raise InvalidRequest(f"scopes[{i}].status must be active, suspended or revoked")
        scopes.append(_json_safe(dict(entry)))
    return scopes


def _norm(key: str, value: Any) -> Any:
    if key in ("epsilon", "delta", "max_epsilon_per_query") and value is not None:
        return Decimal(str(value)).normalize()
    if key in ("valid_from", "valid_until") and isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    if key == "operations" and isinstance(value, Mapping):
        out: dict[str, Any] = {}
        agg = value.get("aggregate")
        if isinstance(agg, Mapping):
            funcs = agg.get("functions", ["avg", "count", "histogram", "quantile", "sum"])
            out["aggregate"] = {
                "columns": sorted(agg.get("columns", [])),
                "functions": sorted(funcs),
            }
        if value.get("verify"):
            out["verify"] = sorted(value["verify"])
        return out
    return value


def plan(
    desired: Sequence[Mapping[str, Any]], current: Mapping[str, Mapping[str, Any]]
) -> list[Step]:
    """Return the steps that make ``current`` (id → scope as the API shows it) match
    ``desired`` (scopes from a policy file). Scopes absent from the file are left alone."""
    steps: list[Step] = []
    for want in desired:
        sid = want["id"]
        status = want.get("status", "active")
        body = {k: v for k, v in want.items() if k != "status"}
        have = current.get(sid)
        if have is None:
            steps.append(Step("grant", sid, body=body))
            if status != "active":
                steps.append(Step(STATUS_STEPS[("active", status)], sid))
            continue
        body.setdefault("delta", 0)
        body.setdefault("max_epsilon_per_query", body.get("epsilon"))
        diffs = {
            k: (have.get(k), body.get(k))
            for k in COMPARED
            if _norm(k, have.get(k)) != _norm(k, body.get(k))
        }
        if diffs:
            steps.append(Step("conflict", sid, differences=diffs))
            continue
        now = str(have.get("status"))
        if now == status:
            steps.append(Step("unchanged", sid))
        elif (now, status) in STATUS_STEPS:
            steps.append(Step(STATUS_STEPS[(now, status)], sid))
        else:
            steps.append(Step("conflict", sid, differences={"status": (now, status)}))
    return steps
