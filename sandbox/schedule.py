"""The platform's own periodic work, run by each server process (``Runtime.start_background``).

Every few seconds: sign a checkpoint when one is due (DESIGN §7), write the enumeration
review of a new period (``sandbox/actions/review.py``) and sweep counters that no
longer matter. Each step is idempotent across processes.
"""

from __future__ import annotations

from sandbox.actions.review import review
from sandbox.runtime import Runtime


def tick(rt: Runtime) -> None:
    """One round of the platform's periodic work."""
    rt.audit.maybe_checkpoint()
    review(rt)
    rt.sweep()
