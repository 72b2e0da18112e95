"""What an action wants recorded about its call: the fields of its audit entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.actions.admission import CallAdmission
    from sandbox.actions.at_commit import AtCommit


@dataclass
class AuditNote:
    """What the handler wants recorded about this call (DESIGN §7 entry fields)."""

    action: str
    target: dict[str, str] = field(default_factory=dict)
    epsilon: str = "0"
    extra: dict[str, Any] = field(default_factory=dict)
    receipt: bool = False
    request_id: str | None = None
    after_append: list[Callable[[int], None]] = field(default_factory=list)
    # Verification calls: bookkeeping decided when the entry commits (admission.py).
    admission: CallAdmission | None = None
    # Other calls whose change is applied with their entry (at_commit.py).
    effect: AtCommit | None = None
