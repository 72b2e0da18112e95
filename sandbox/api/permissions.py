"""Which roles may call which endpoint: the one table, checked before any handler runs.

Finer rules ("an enterprise sees only its own scopes") are applied by the handlers;
this table only decides whether the role may call the endpoint at all. An endpoint
missing from the table is refused (an empty allow-list allows nothing).
"""

from __future__ import annotations

from policies.principals import Role

OPERATOR = frozenset({Role.OPERATOR})
REGULATOR = frozenset({Role.REGULATOR})
ENTERPRISE = frozenset({Role.ENTERPRISE})
ANY_SIGNED = frozenset(Role)

PERMISSIONS: dict[str, frozenset[Role]] = {
    "principals.create": OPERATOR,
    "principals.show": ANY_SIGNED,  # operator, regulator, or the principal itself
    "principals.add_key": OPERATOR,
    "principals.disable_key": OPERATOR,
    "products.list": ANY_SIGNED,
    "products.create": OPERATOR,
    "products.show": ANY_SIGNED,
    "products.upload": OPERATOR,
    "products.sample": ANY_SIGNED,
    "verification_products.list": ANY_SIGNED,
    "verification_products.create": OPERATOR,
    "verification_products.show": ANY_SIGNED,
    "scopes.list": ANY_SIGNED,  # enterprise: own only
    "scopes.create": OPERATOR,
    "scopes.show": ANY_SIGNED,  # enterprise: own only
    "scopes.revoke": OPERATOR,
    "scopes.suspend": OPERATOR,
    "scopes.resume": OPERATOR,
    "scopes.charges": OPERATOR | REGULATOR,
    "queries.preview": ENTERPRISE,
    "queries.run": ENTERPRISE,
    "verifications.verify_one": ENTERPRISE,
    "verifications.batch": ENTERPRISE,
    "audit.entries": ANY_SIGNED,  # enterprise/operator: own only
    "audit.checkpoint": ANY_SIGNED,
    "audit.inclusion": ANY_SIGNED,
    "audit.consistency": ANY_SIGNED,
    "audit.export": REGULATOR,
    "audit.cosign": REGULATOR,
}


def allowed(endpoint: str | None, role: Role) -> bool:
    """True if ``role`` may call ``endpoint`` (Flask endpoint name)."""
    return endpoint is not None and role in PERMISSIONS.get(endpoint, frozenset())
