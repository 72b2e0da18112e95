"""Changes decided when a call's audit entry commits, which may refuse the call there.

An action whose state change must not outlive a failed audit append (nor be recorded
without happening) hands the change to ``AuditLog.append`` as an ``AtCommit`` effect
instead of committing it first: the change is applied in the append transaction, and
when it turns out not to be possible after all (a replay, a limit, a scope that changed
status meanwhile) the effect records a refusal, its entry is rewritten into that
refusal, and the HTTP layer answers with it instead of the handler's response. When
the change succeeds with another answer than the handler foresaw (a query answered
from a concurrent identical release, a budget that others spent meanwhile), the
effect records a ``replacement`` answer, and the entry's ``result_hash`` and the
response (and its receipt) are those of the replacement.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any

from audit.entry import result_hash
from audit.log import Effect
from policies.scopes import Scope, ScopeStatus
from products.errors import DomainError

# Renders a refusal as the caller will receive it: (fields of the rewritten entry,
# response text, HTTP status). Supplied by the HTTP layer, which owns error bodies.
Render = Callable[[dict[str, Any], DomainError], tuple[dict[str, Any], str, int]]


class AtCommit(Effect):
    """An ``audit.log.Effect`` that may refuse its call; subclasses set ``refusal``."""

    def __init__(self, render: Render) -> None:
        self.render = render
        self.refusal: DomainError | None = None
        self.refusal_text = ""
        self.refusal_status = 0
        self.replacement: dict[str, Any] | None = None

    def entry_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        if self.refusal is not None:
            fields, self.refusal_text, self.refusal_status = self.render(fields, self.refusal)
        elif self.replacement is not None:
            fields = {**fields, "result_hash": result_hash(self.replacement)}
        return fields


def unusable(
    scope: Scope, status: ScopeStatus, reason: str | None, now: datetime
) -> DomainError | None:
    """The refusal of a call under ``scope`` if its status as read at commit (or its
    validity at ``now``) forbids it, else None."""
    try:
        dataclasses.replace(scope, status=status, status_reason=reason).check_usable(now)
    except DomainError as exc:
        return exc
    return None
