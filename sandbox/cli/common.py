"""What every CLI command shares: settings, the lazily opened runtime, local auditing."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from typing import Any

from audit.entry import request_hash, result_hash
from sandbox.runtime import Runtime
from sandbox.settings import Settings


class CliContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runtime: Runtime | None = None
        self._closers: list[Callable[[], None]] = []

    def on_close(self, closer: Callable[[], None]) -> None:
        """Run ``closer`` when the command ends, however it ends."""
        self._closers.append(closer)

    def runtime(self, *, create: bool = False) -> Runtime:
        """Open the deployment's stores (``create``: initialise them if needed)."""
        if self._runtime is None:
            self._runtime = Runtime.open(self.settings, create=create)
        return self._runtime

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None

    def audit_local(
        self,
        action: str,
        target: dict[str, str],
        argv: str,
        result: Any,
        *,
        actor: str | None = None,
        decision: str = "allow",
        reason: str | None = None,
    ) -> int:
        """Record a local (CLI) administrative action in the audit log; return its index.

        The actor is the operating-system account that ran the command, marked
        ``cli:`` so that a regulator can tell console actions from signed calls.
        """
        rt = self.runtime()
        appended = rt.audit.append(
            {
                "actor": actor or f"cli:{getpass.getuser()}",
                "role": "operator",
                "action": action,
                "target": target,
                "request_hash": request_hash("CLI", argv, b""),
                "decision": decision,
                "reason": reason,
                "epsilon": "0",
                "result_hash": result_hash(result) if result is not None else None,
                "jti": None,
                "client": f"cli@{socket.gethostname()}",
            }
        )
        return appended.index
