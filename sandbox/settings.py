"""Settings: every knob of the service, read once into one frozen object.

This module is the only reader of ``os.environ`` (``SANDBOX_*`` variables); CLI flags
override the environment; everything else receives a ``Settings``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from products.errors import InvalidRequest

DEFAULT_AUDIENCE = "public-data-sandbox"
DEFAULT_ORIGIN = "public-data-sandbox/audit"
AUTO = "auto"
# Of the node's memory, the share the query workers of one server process may use
# together (the rest: the server, the OS page cache that DuckDB's reads go through).
ENGINE_MEMORY_SHARE = 0.6


def node_cpus() -> int:
    """The CPUs this process may use: its affinity set, within a cgroup CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def node_memory_bytes() -> int:
    """The memory this process may use: physical memory, within a cgroup limit."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        total = 4 << 30
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            total = min(total, int(limit))
    except (OSError, ValueError):
        pass
    return int(total)


@dataclass(frozen=True)
class Settings:
    """The configuration of one deployment (one data dir, one control-plane store)."""

    data_dir: Path = Path("var")
    database_url: str | None = None  # None: SQLite file inside data_dir
    audience: str = DEFAULT_AUDIENCE
    audit_origin: str = DEFAULT_ORIGIN
    # The cryptographic suite (DESIGN §13) asked for at ``sandbox init --suite``; the
    # deployment stores its suite under the keys dir, and every process runs that one
    # (a different value here is refused, never applied).
    suite: str | None = None
    # Request limits (DESIGN invariant 7: oversized bodies get 413, not a crash).
    max_json_bytes: int = 1 << 20
    max_upload_bytes: int = 8 << 30
    # Signed calls (DESIGN §6).
    max_token_lifetime_s: int = 300
    clock_skew_s: int = 60
    # Query engine isolation. "auto" / 0: from the node's resources (``__post_init__``):
    # every worker may use all the node's CPUs (concurrent queries share them through
    # the OS scheduler, docs/engine.md "Resources"), and the workers together 60% of
    # its memory. Set them explicitly when several server processes share a node.
    query_timeout_s: float = 30.0
    query_memory_limit: str = AUTO
    query_threads: int = 0
    query_workers: int = 2  # isolated worker processes per server process
    # Stored releases (DESIGN §8): their size, and how long identical requests reuse them.
    max_release_bytes: int = 4_000_000
    release_retention_days: int = 365
    # Sandbox model development (DESIGN §11): synthetic-data fits and training run in
    # the same isolated workers, under their own (longer) time limit.
    model_timeout_s: float = 600.0
    model_cache_dir: Path | None = None  # JAX compilation cache (None: <data_dir>/cache/jax)
    # Control-plane store (DESIGN §2.9: no process can stall the others for longer).
    store_lock_timeout_s: float = 5.0
    store_idle_transaction_timeout_s: float = 2.0
    store_statement_timeout_s: float = 30.0
    # Loading data (products/loader.py): the temporary-disk budget of one load (a size
    # such as "200GB"; "auto": the free space of its file system less 1 GiB) and where
    # the load's temporary files go (default: beside the product's files).
    load_temp_disk_limit: str = AUTO
    load_temp_dir: Path | None = None
    # Audit log.
    checkpoint_interval_s: float = 60.0
    checkpoint_every_entries: int = 10_000
    sqlite_synchronous: str = "NORMAL"  # FULL also survives power loss (docs/audit.md)
    # Verification.
    max_batch_items: int = 1000
    enumeration_window_s: int = 600
    enumeration_min_keys: int = 200
    enumeration_miss_ratio: float = 0.8
    enumeration_suspend_keys: int = 500
    enumeration_unknown_keys: int = 100
    enumeration_suspend_unknown_keys: int = 300
    enumeration_review_s: int = 60
    # Console (DESIGN §12): sign-in challenges and sessions.
    console_challenge_s: int = 300
    console_session_s: int = 1800
    # Client side (``sandbox call``, ``scopes apply``, ``audit witness``).
    api_url: str = "http://127.0.0.1:8000"
    principal: str | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if self.query_threads <= 0:
            object.__setattr__(self, "query_threads", node_cpus())
        if self.query_memory_limit.strip().lower() == AUTO:
            workers = max(1, self.query_workers)
            share = int(node_memory_bytes() * ENGINE_MEMORY_SHARE / workers)
            object.__setattr__(self, "query_memory_limit", f"{max(share >> 20, 256)}MB")

    @property
    def load_temp_disk_bytes(self) -> int | None:
        """The load's temporary-disk budget in bytes (None: free space less 1 GiB).

        Raises ``InvalidRequest`` if the setting is not a size.
        """
        if self.load_temp_disk_limit.strip().lower() == AUTO:
            return None
        from products.loader import parse_size

        return parse_size(self.load_temp_disk_limit)

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "control.sqlite3"

    @property
    def effective_database_url(self) -> str:
        """Return the SQLAlchemy URL of the control-plane store."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.sqlite_path.resolve()}"

    @property
    def products_dir(self) -> Path:
        return self.data_dir / "products"

    @property
    def jax_cache_dir(self) -> Path:
        return self.model_cache_dir or self.data_dir / "cache" / "jax"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy with the non-None ``overrides`` applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``SANDBOX_<FIELD>`` variables, then ``overrides``.

        Raises ``InvalidRequest`` naming the variable when a value does not parse.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"SANDBOX_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f.name, raw, f.type)
        return cls(**values).with_overrides(**overrides)


def _coerce(name: str, raw: str, annotation: Any) -> Any:
    kind = str(annotation)
    try:
        if kind.startswith("Path"):
            return Path(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise InvalidRequest(f"SANDBOX_{name.upper()}={raw!r} is not a valid {kind}") from None
    return raw
