"""FlagThrottle: which enumeration flags are written to the audit trail.

A scope whose window looks like enumeration stays flagged for as long as the window
does, and every commit batch of its calls is assessed again: writing a ``scope.flag``
entry each time would add one platform entry per batch (up to one per call) to the
trail, for the same finding. The throttle lets through a scope's first flag and then
at most one per enumeration bucket (``EnumerationPolicy.bucket_s``, a tenth of the
window by default) per process while the scope stays flagged; the entry's reason
carries the window's figures at that moment, so the trail still shows how the probing
grew. A suspension is always written (``due`` is not asked).
"""

from __future__ import annotations

import threading
from datetime import datetime

from sandbox.verification.enumeration import EnumerationPolicy


class FlagThrottle:
    """Remembers, per scope, the bucket of the last flag written by this process."""

    def __init__(self, policy: EnumerationPolicy) -> None:
        self._policy = policy
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()

    def due(self, scope_id: str, now: datetime) -> bool:
        """Whether a flag of ``scope_id`` at ``now`` should be written (and note it)."""
        bucket = int(now.timestamp()) // self._policy.bucket_s
        with self._lock:
            if self._last.get(scope_id) == bucket:
                return False
            self._last[scope_id] = bucket
            if len(self._last) > 10_000:  # forget scopes whose flags left every window
                oldest = bucket - self._policy.window_s // self._policy.bucket_s
                self._last = {s: b for s, b in self._last.items() if b >= oldest}
            return True
