"""Labels the console's Python code hands to its templates, translated per request."""

from __future__ import annotations

from flask_babel import gettext as _


def label(key: str) -> str:
    """The translated label of ``key`` (navigation, checks, roles, statuses)."""
    labels = {
        "nav.trail": _("Audit trail"),
        "nav.integrity": _("Log integrity"),
        "nav.budgets": _("Budgets"),
        "nav.oversight": _("Refusals and flags"),
        "nav.models": _("Model filing"),
        "nav.report": _("Disclosure report"),
        "nav.scopes": _("Scopes"),
        "nav.products": _("Products"),
        "nav.principals": _("Principals and keys"),
        "nav.usage": _("Usage"),
        "nav.my_scopes": _("My scopes"),
        "nav.query": _("Query"),
        "nav.synthetic": _("Synthetic data"),
        "nav.calls": _("My calls"),
        "nav.budget_history": _("Budget history"),
        "check.signature": _("Checkpoint signature (platform key)"),
        "check.root": _("Root recomputed from the store"),
        "check.cosignature": _("Witness cosignature"),
        "check.consistency": _("Consistency since the witnessed checkpoint"),
        "check.tail": _("Newest entries rehashed and chained"),
        "role.regulator": _("Regulator"),
        "role.operator": _("Operator"),
        "role.enterprise": _("Enterprise"),
        "role.platform": _("Platform"),
        "role.unauthenticated": _("Unauthenticated"),
        "status.active": _("active"),
        "status.suspended": _("suspended"),
        "status.revoked": _("revoked"),
        "model.draft": _("draft"),
        "model.filed": _("filed"),
        "model.withdrawn": _("withdrawn"),
        "event.define": _("defined"),
        "event.file": _("filed"),
        "event.withdraw": _("withdrawn"),
        "encoding.categorical": _("public values"),
        "encoding.boolean": _("true or false"),
        "encoding.bins": _("bins"),
        "decision.allow": _("allowed"),
        "decision.deny": _("refused"),
    }
    return str(labels.get(key, key.split(".", 1)[-1]))


def error_title(code: str) -> str:
    """A translated title for a DESIGN §5 error code."""
    titles = {
        "invalid_request": _("The request is not valid"),
        "invalid_sql": _("The SQL is not valid"),
        "unknown_column": _("Unknown column"),
        "column_not_allowed": _("Column not allowed"),
        "unsupported_query": _("Unsupported query"),
        "unauthenticated": _("Not signed in"),
        "bad_signature": _("The signature does not verify"),
        "token_expired": _("Expired"),
        "replayed": _("Already used"),
        "forbidden": _("Not allowed"),
        "scope_revoked": _("The scope is revoked"),
        "scope_suspended": _("The scope is suspended"),
        "scope_expired": _("The scope has expired"),
        "operation_not_allowed": _("Operation not allowed"),
        "budget_exhausted": _("Budget exhausted"),
        "model_not_filed": _("The model is not filed"),
        "not_found": _("Not found"),
        "conflict": _("Conflict"),
        "too_large": _("Too large"),
        "rate_limited": _("Too many calls"),
        "quota_exceeded": _("Daily quota used up"),
        "unavailable": _("Temporarily unavailable"),
        "internal": _("Internal error"),
    }
    return str(titles.get(code, code))
