"""What every CLI command shares: settings, the lazily opened runtime, local calls."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from typing import Any

from marshmallow import Schema

from products.errors import InvalidRequest
from products.parsing import parse
from sandbox.actions.call import Caller, Outcome, Pending, commit
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

    def parse(self, schema: type[Schema], data: Any, what: str, action: str) -> Any:
        """Parse a local command's input with the API's schema (``products.parsing``);
        a refusal is recorded as the command's ``action`` before it is raised."""
        try:
            return parse(schema, data, what)
        except InvalidRequest as exc:
            self.call(Pending(action, refusal=exc))
            raise

    def call(self, pending: Pending) -> Outcome:
        """Commit a local command's action with its audit entry, exactly as the API
        commits a signed call (``sandbox/actions/call.py``); the actor is the
        operating-system account that ran the command (``cli:USER``), so a regulator
        can tell local commands from signed calls. Returns the outcome; raises the
        refusal (after it is recorded), which the ``sandbox`` command prints as one
        line."""
        argv = shlex.join(["sandbox", *sys.argv[1:]])
        rt = self.runtime()
        outcome = commit(rt, Caller.local(argv, rt.suite.digest), pending)
        if outcome.error is not None:
            raise outcome.error
        return outcome
