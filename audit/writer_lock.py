"""WriterLock: queue SQLite audit writers of several processes on a file lock.

SQLite lets one writer in at a time; a process that finds the database locked sleeps
in its busy handler (1, 2, 5, 10, ... up to 100 ms between tries) and retries, so
under load from several gunicorn workers most of an append's time is spent asleep
while the lock is free. Taking an exclusive ``flock`` on a file beside the database
before ``BEGIN IMMEDIATE`` makes the next writer find the lock free within half a
millisecond of the previous commit. SQLite's own lock still decides correctness; this
only orders the waiting, so when the lock file cannot be used (a read-only directory,
a file left by another user) writers go on without it.

A thread lock in front of the file lock keeps threads of one process in line too
(``flock`` does not exclude two threads sharing one open file). The wait is bounded
(``timeout_s``, as SQLite's busy timeout bounds its own): a writer stuck inside its
transaction cannot block the others for ever.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows; SQLite's busy handler alone
    fcntl = None  # type: ignore[assignment]

__all__ = ["WriterLock"]

_log = logging.getLogger(__name__)
_MAX_POLL_S = 0.0005


class WriterLock:
    """An exclusive lock on ``path`` across threads and processes (created on demand)."""

    def __init__(self, path: Path, timeout_s: float = 60.0) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._unusable = False
        self._pid = os.getpid()

    def _file(self) -> int | None:
        if self._pid != os.getpid():  # a forked child opens its own file description
            self._pid, self._fd, self._unusable = os.getpid(), None, False
            self._thread_lock = threading.Lock()
        if self._fd is None and not self._unusable:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                self._unusable = True
                _log.warning("audit writers go on without %s: %s", self.path, exc)
        return self._fd

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the body of the ``with`` block.

        Raises ``TimeoutError`` if another writer holds it for ``timeout_s``.
        """
        fd = self._file() if fcntl is not None else None
        with self._thread_lock:
            if fd is None:
                yield
                return
            self._acquire(fd)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _acquire(self, fd: int) -> None:
        # Short polls instead of a blocking flock, whose wait could not be bounded.
        deadline = time.monotonic() + self.timeout_s
        delay = 0.00005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another audit writer held {self.path} for {self.timeout_s:g} s"
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, _MAX_POLL_S)

    def close(self) -> None:
        """Close the lock file (the lock must not be held)."""
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
