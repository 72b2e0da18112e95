"""Engine and loader settings: node-sized defaults, still overridable."""

from __future__ import annotations

import pytest

from products.errors import InvalidRequest
from sandbox.settings import Settings, node_cpus, node_memory_bytes


def test_engine_defaults_come_from_the_node() -> None:
    s = Settings()
    assert s.query_threads == node_cpus() >= 1
    mb = int(s.query_memory_limit.removesuffix("MB"))
    assert 256 <= mb <= node_memory_bytes() // (1 << 20) // s.query_workers


def test_engine_settings_stay_overridable() -> None:
    s = Settings.from_env({"SANDBOX_QUERY_THREADS": "3", "SANDBOX_QUERY_MEMORY_LIMIT": "1GB"})
    assert (s.query_threads, s.query_memory_limit) == (3, "1GB")
    more = Settings(query_workers=4)
    assert int(more.query_memory_limit[:-2]) < int(
        Settings(query_workers=1).query_memory_limit[:-2]
    )


def test_load_temp_disk_budget() -> None:
    assert Settings().load_temp_disk_bytes is None
    s = Settings.from_env({"SANDBOX_LOAD_TEMP_DISK_LIMIT": "2GiB", "SANDBOX_LOAD_TEMP_DIR": "/x"})
    assert s.load_temp_disk_bytes == 2 << 30 and str(s.load_temp_dir) == "/x"
    with pytest.raises(InvalidRequest):
        _ = Settings(load_temp_disk_limit="lots").load_temp_disk_bytes
