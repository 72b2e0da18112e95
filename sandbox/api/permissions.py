"""The endpoint table: which roles may call each endpoint, and the audit action it is
recorded as — checked before any handler runs, and used for every entry of the
endpoint, allowed or refused, so that a regulator filtering on an action sees both.

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

ENDPOINTS: dict[str, tuple[frozenset[Role], str]] = {
    "principals.create": (OPERATOR, "principal.register"),
    "principals.show": (ANY_SIGNED, "principal.read"),  # operator, regulator or self
    "principals.add_key": (OPERATOR, "principal.key_add"),
    "principals.disable_key": (OPERATOR, "principal.key_disable"),
    "products.list": (ANY_SIGNED, "product.list"),
    "products.create": (OPERATOR, "product.register"),
    "products.show": (ANY_SIGNED, "product.read"),
    "products.upload": (OPERATOR, "product.data"),
    "products.sample": (ANY_SIGNED, "product.sample"),
    "verification_products.list": (ANY_SIGNED, "verification_product.list"),
    "verification_products.create": (OPERATOR, "verification_product.register"),
    "verification_products.show": (ANY_SIGNED, "verification_product.read"),
    "scopes.list": (ANY_SIGNED, "scope.list"),  # enterprise: own only
    "scopes.create": (OPERATOR, "scope.grant"),
    "scopes.show": (ANY_SIGNED, "scope.read"),  # enterprise: own only
    "scopes.revoke": (OPERATOR, "scope.revoke"),
    "scopes.suspend": (OPERATOR, "scope.suspend"),
    "scopes.resume": (OPERATOR, "scope.resume"),
    "scopes.charges": (OPERATOR | REGULATOR, "scope.charges"),
    "queries.preview": (ENTERPRISE, "query.preview"),
    "queries.run": (ENTERPRISE, "query.aggregate"),
    "verifications.verify_one": (ENTERPRISE, "verify"),
    "verifications.batch": (ENTERPRISE, "verify.batch"),
    "synthetic.synthetic_preview": (ENTERPRISE, "synthetic.preview"),
    "synthetic.synthetic": (ENTERPRISE, "synthetic"),
    "training.train_preview": (ENTERPRISE, "model.train.preview"),
    "training.train": (ENTERPRISE, "model.train"),
    "model_products.create": (OPERATOR, "model_product.define"),
    "model_products.list": (ANY_SIGNED, "model_product.list"),
    "model_products.show": (ANY_SIGNED, "model_product.read"),
    "model_products.file": (REGULATOR, "model_product.file"),
    "model_products.withdraw": (OPERATOR | REGULATOR, "model_product.withdraw"),
    "model_products.score": (ENTERPRISE, "model.score"),
    "model_products.score_batch": (ENTERPRISE, "model.score.batch"),
    "audit.entries": (ANY_SIGNED, "audit.read"),  # enterprise/operator: own only
    "audit.checkpoint": (ANY_SIGNED, "audit.checkpoint"),
    "audit.inclusion": (ANY_SIGNED, "audit.proof"),
    "audit.consistency": (ANY_SIGNED, "audit.proof"),
    "audit.export": (REGULATOR, "audit.export"),
    "audit.cosign": (REGULATOR, "audit.cosign"),
}


def allowed(endpoint: str | None, role: Role) -> bool:
    """True if ``role`` may call ``endpoint`` (Flask endpoint name)."""
    entry = ENDPOINTS.get(endpoint or "")
    return entry is not None and role in entry[0]


def action_of(endpoint: str | None) -> str:
    """The audit action of ``endpoint``; unknown paths are ``http.unknown``."""
    entry = ENDPOINTS.get(endpoint or "")
    return entry[1] if entry else "http.unknown"
