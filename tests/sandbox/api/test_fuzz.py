"""Invariant 7: whatever JSON arrives, the answer is a JSON error with a 4xx code or a
success — never a 500, never a traceback. Hypothesis throws arbitrary JSON at every
endpoint that takes a body, as every role."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sandbox.conftest import Caller

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
FIELDS = [
    "id",
    "product",
    "scope",
    "sql",
    "epsilon",
    "subject",
    "params",
    "items",
    "keys",
    "role",
    "name",
    "operations",
    "columns",
    "checks",
    "key",
    "answer",
    "enterprise",
    "purpose",
    "valid_from",
    "valid_until",
    "note",
    "consent_ref",
    "request_id",
    "privacy_unit",
    "max_rows_per_unit",
    "title",
    "rate_per_minute",
    "daily_quota",
]
bodies = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8) | json_values

POSTS = [
    "/v1/products",
    "/v1/principals",
    "/v1/scopes",
    "/v1/queries",
    "/v1/queries/preview",
    "/v1/verification-products",
    "/v1/verifications/enterprise-check",
    "/v1/verifications/enterprise-check/batch",
    "/v1/audit/cosignatures",
    "/v1/scopes/x/suspend",
]


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, path=st.sampled_from(POSTS), who=st.sampled_from([0, 1, 2]))
def test_any_json_body_gets_a_clean_answer(
    operator: Caller, enterprise: Caller, regulator: Caller, body: Any, path: str, who: int
) -> None:
    caller = (operator, enterprise, regulator)[who]
    resp = caller.post(path, body)
    assert resp.status_code < 500, (path, body, resp.get_data(as_text=True)[:500])
    assert resp.is_json and "X-Audit-Index" in resp.headers
    if resp.status_code >= 400:
        error = resp.get_json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
