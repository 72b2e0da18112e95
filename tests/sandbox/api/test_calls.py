"""Faults at every step of a call (sandbox/api/calls.py, sandbox/actions/call.py): never
two entries for one call, never an answer without its entry, and a store or disk that
fails answers 503 ``unavailable`` with ``Retry-After``."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from audit.log import StoreError
from policies.budget import BudgetLedger
from products.errors import DomainError
from sandbox.actions import products as products_actions
from sandbox.runtime import Runtime
from tests.sandbox.api.test_queries_api import COUNT_BY_DISTRICT, query, scope  # noqa: F401
from tests.sandbox.conftest import REGISTRY_ROWS, Caller, error_code


class Boom(RuntimeError):
    """The injected fault."""


def boom(*_: Any, **__: Any) -> Any:
    raise Boom("injected fault")


def store_down(*_: Any, **__: Any) -> Any:
    raise sa.exc.OperationalError("SELECT 1", {}, Exception("could not connect to server"))


def append_fails(*_: Any, **__: Any) -> Any:
    raise StoreError("audit store failed: disk I/O error")


# (step, what fails there, the status a caller gets, whether an entry records the call)
FAULTS: list[tuple[str, Callable[[pytest.MonkeyPatch, Runtime], None], int, bool]] = [
    (
        "in the action: the engine",
        lambda mp, rt: mp.setattr("sandbox.actions.queries.execute", boom),
        500,
        True,
    ),
    (
        "in the action: a store read",
        lambda mp, rt: mp.setattr(rt.ledger, "reused", store_down),
        503,
        True,
    ),
    (
        "at commit: the charge",
        lambda mp, rt: mp.setattr(BudgetLedger, "charge", staticmethod(boom)),
        500,
        True,
    ),
    (
        "at commit: the store under the charge",
        lambda mp, rt: mp.setattr(BudgetLedger, "charge", staticmethod(store_down)),
        503,
        True,
    ),
    (
        "at commit: the append itself",
        lambda mp, rt: mp.setattr(rt.audit, "append", append_fails),
        503,
        False,
    ),
    (
        "after commit: the receipt",
        lambda mp, rt: mp.setattr(rt.keys, "sign_receipt", boom),
        503,
        True,
    ),
]


@pytest.mark.parametrize(
    ("step", "fault", "status", "recorded"), FAULTS, ids=[f[0] for f in FAULTS]
)
def test_a_fault_at_any_step_leaves_one_entry_and_no_answer_without_it(
    scope: str,  # noqa: F811
    enterprise: Caller,
    regulator: Caller,
    rt: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    fault: Callable[[pytest.MonkeyPatch, Runtime], None],
    status: int,
    recorded: bool,
) -> None:
    before = rt.audit.size()
    with monkeypatch.context() as mp:
        fault(mp, rt)
        resp = query(enterprise, COUNT_BY_DISTRICT)
    assert resp.status_code == status, (step, resp.get_json())
    body = resp.get_json()
    assert "rows" not in body and "receipt" not in body, step  # no answer leaves
    if status == 503:
        assert error_code(resp) == "unavailable" and int(resp.headers["Retry-After"]) >= 1
    assert rt.audit.size() == before + (1 if recorded else 0), step  # never two entries
    if recorded:
        index = int(resp.headers["X-Audit-Index"])
        entry = rt.audit.entries(cursor=index, limit=1).entries[0].entry
        assert entry["action"] == "query.aggregate"
    else:
        assert "X-Audit-Index" not in resp.headers
    charges = rt.ledger.charges("sc-q")
    if step == "after commit: the receipt":
        # The answer was released and charged with its entry; its delivery failed. The
        # caller is told which entry holds it, and asking again costs nothing.
        assert [c["audit_index"] for c in charges] == [int(resp.headers["X-Audit-Index"])]
        assert body["error"]["details"] == {"audit_index": charges[0]["audit_index"],
                                            "recorded": True}  # fmt: skip
        again = query(enterprise, COUNT_BY_DISTRICT)
        assert again.status_code == 200 and again.get_json()["epsilon_spent"] == 0.0
    else:
        assert charges == [], step  # nothing released, nothing charged


def test_a_full_disk_during_an_upload_is_unavailable_and_leaves_no_version(
    rt: Runtime, operator: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.sandbox.conftest import REGISTRY_MANIFEST

    assert operator.post("/v1/products", REGISTRY_MANIFEST).status_code == 201

    def full(*_: Any, **__: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(products_actions, "load_file", full)
    resp = operator.call(
        "PUT",
        "/v1/products/enterprise_registry/data",
        body=REGISTRY_ROWS.encode(),
        content_type="text/csv",
    )
    assert resp.status_code == 503 and error_code(resp) == "unavailable"
    assert int(resp.headers["Retry-After"]) >= 1
    assert operator.get("/v1/products/enterprise_registry").get_json()["version"] is None
    staged = list((rt.settings.products_dir / "enterprise_registry").glob("load-*"))
    assert staged == []


def test_domain_errors_raised_anywhere_keep_their_code(
    rt: Runtime, enterprise: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Refusal(DomainError):
        code = "conflict"

    def refuse(*_: Any, **__: Any) -> Any:
        raise Refusal("refused deep inside")

    monkeypatch.setattr(rt.catalogue, "products", refuse)
    resp = enterprise.get("/v1/products")
    assert resp.status_code == 409 and error_code(resp) == "conflict"
