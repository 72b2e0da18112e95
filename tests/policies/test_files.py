"""Policy files: a plan that is idempotent and never silently rewrites granted terms."""

from __future__ import annotations

from typing import Any

import pytest

from policies.files import load_policy_file, plan
from products.errors import InvalidRequest

FILE = """
scopes:
  - id: sc-a
    enterprise: ent-acme
    product: enterprise_registry
    purpose: loan underwriting
    operations: {aggregate: {columns: [registered_capital, district]}}
    epsilon: 10
    max_epsilon_per_query: 1
    rate_per_minute: 600
    daily_quota: 100000
    valid_from: 2026-01-01T00:00:00Z
    valid_until: 2027-01-01T00:00:00Z
  - id: sc-b
    enterprise: ent-acme
    product: enterprise_registry
    purpose: KYC
    operations: {verify: [enterprise-check]}
    epsilon: 1
    rate_per_minute: 60
    daily_quota: 1000
    valid_from: 2026-01-01T00:00:00Z
    valid_until: 2027-01-01T00:00:00Z
    status: suspended
"""


def as_served(entry: dict[str, Any], status: str = "active") -> dict[str, Any]:
    """The scope as GET /v1/scopes would show it after granting ``entry``."""
    ops = dict(entry["operations"])
    if "aggregate" in ops:
        ops["aggregate"] = {
            "columns": sorted(ops["aggregate"]["columns"]),
            "functions": ["avg", "count", "histogram", "quantile", "sum"],
        }
    return {
        **entry,
        "operations": ops,
        "epsilon": float(entry["epsilon"]),
        "delta": 0.0,
        "max_epsilon_per_query": float(entry.get("max_epsilon_per_query", entry["epsilon"])),
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2027-01-01T00:00:00Z",
        "status": status,
    }


def test_first_apply_grants_then_nothing_changes() -> None:
    desired = load_policy_file(FILE)
    first = plan(desired, {})
    assert [(s.action, s.scope) for s in first] == [
        ("grant", "sc-a"),
        ("grant", "sc-b"),
        ("suspend", "sc-b"),
    ]
    assert first[0].body["valid_from"] == "2026-01-01T00:00:00Z"
    served = {
        d["id"]: as_served({k: v for k, v in d.items() if k != "status"}, d.get("status", "active"))
        for d in desired
    }
    assert [s.action for s in plan(desired, served)] == ["unchanged", "unchanged"]


def test_status_changes_are_steps_and_term_changes_are_conflicts() -> None:
    desired = load_policy_file(FILE)
    served = {d["id"]: as_served({k: v for k, v in d.items() if k != "status"}) for d in desired}
    served["sc-a"]["epsilon"] = 20.0
    steps = {s.scope: s for s in plan(desired, served)}
    assert steps["sc-a"].action == "conflict" and "epsilon" in steps["sc-a"].differences
    assert steps["sc-b"].action == "suspend"
    served["sc-b"]["status"] = "revoked"
    assert {s.scope: s.action for s in plan(desired, served)}["sc-b"] == "conflict"


@pytest.mark.parametrize(
    "text",
    [
        "scopes: {}",
        "- a",
        "scopes:\n  - {purpose: x}",
        "scopes:\n  - {id: a}\n  - {id: a}",
        "scopes:\n  - {id: a, status: paused}",
        "{{{",
    ],
)
def test_bad_files(text: str) -> None:
    with pytest.raises(InvalidRequest):
        load_policy_file(text)
