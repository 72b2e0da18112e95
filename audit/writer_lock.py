"""WriterLock: queue SQLite audit writers of several processes in the kernel.

SQLite lets one writer in at a time; a process that finds the database locked sleeps
in its busy handler (1, 2, 5, 10, ... up to 100 ms between tries) and retries, so
under load from several gunicorn workers most of an append's time is spent asleep
while the lock is free. Taking an exclusive ``flock`` on a file beside the database
before ``BEGIN IMMEDIATE`` makes the next writer wake the moment the previous one
commits. SQLite's own lock still decides correctness; this only orders the waiting.
A thread lock in front of the file lock keeps threads of one process in line too
(``flock`` does not exclude two threads sharing one open file).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows; SQLite's busy handler alone
    fcntl = None  # type: ignore[assignment]

__all__ = ["WriterLock"]


class WriterLock:
    """An exclusive lock on ``path`` across threads and processes (created on demand)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid = os.getpid()

    def _file(self) -> int:
        if self._pid != os.getpid():  # a forked child opens its own file description
            self._pid, self._fd = os.getpid(), None
            self._thread_lock = threading.Lock()
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the body of the ``with`` block."""
        if fcntl is None:  # pragma: no cover
            yield
            return
        fd = self._file()
        with self._thread_lock:
            fcntl.flock(fd, fcntl.LOCK_EX)  # blocks without the GIL
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the lock file (the lock must not be held)."""
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
