"""Identifier patterns match whole strings: ``$`` would also match before a final
newline, so ``"sc\\n"`` passed as a scope id (found by fuzzing the API)."""

from __future__ import annotations

import pytest

from policies.principals import KID, PRINCIPAL_ID
from policies.scopes import SCOPE_ID
from products.manifest import COLUMN_NAME, PRODUCT_ID
from products.verification import CHECK_NAME, VERIFICATION_ID
from sandbox.verification.request import REQUEST_ID

PATTERNS = {
    "scope id": (SCOPE_ID, "sc-1"),
    "principal id": (PRINCIPAL_ID, "ent-acme"),
    "kid": (KID, "k1"),
    "product id": (PRODUCT_ID, "enterprise_registry"),
    "column name": (COLUMN_NAME, "uscc"),
    "verification product id": (VERIFICATION_ID, "enterprise-check"),
    "check name": (CHECK_NAME, "active"),
    "request id": (REQUEST_ID, "req-42"),
}


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_a_trailing_newline_is_not_an_identifier(name: str) -> None:
    pattern, good = PATTERNS[name]
    assert pattern.match(good)
    assert not pattern.match(good + "\n")
