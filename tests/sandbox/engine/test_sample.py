"""Synthetic samples come from the manifest alone."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from products.manifest import DataProduct, parse_manifest
from sandbox.engine import synthetic_sample
from tests.sandbox.engine.test_query import REGISTRY


@pytest.fixture
def registry() -> DataProduct:
    return parse_manifest(REGISTRY)


def test_sample_respects_the_manifest(registry: DataProduct) -> None:
    columns, rows = synthetic_sample(registry, 200, seed=1)
    assert columns == list(registry.column_names) and len(rows) == 200
    by_name: list[dict[str, Any]] = [dict(zip(columns, row, strict=True)) for row in rows]
    assert [r["uscc"] for r in by_name[:2]] == ["SAMPLE-uscc-000001", "SAMPLE-uscc-000002"]
    for r in by_name:
        assert r["district"] in ("A", "B", "C", "D", None)
        assert r["founded"] in ("2020-01-01", "2021-01-01")
        assert r["active"] in (True, False, None)
        assert r["capital"] is None or 0 <= r["capital"] <= 1.0e6
        assert r["staff"] is None or (isinstance(r["staff"], int) and 0 <= r["staff"] <= 1000)
        assert r["sector"] is None or r["sector"].startswith("sample-sector-")
    assert any(r["capital"] is None for r in by_name)  # nullable columns get some NULLs


def test_sample_is_deterministic_and_never_reads_data(registry: DataProduct) -> None:
    assert synthetic_sample(registry, 20, seed=7) == synthetic_sample(registry, 20, seed=7)
    assert synthetic_sample(registry, 20, seed=7) != synthetic_sample(registry, 20, seed=8)


def test_sample_size_is_limited(registry: DataProduct) -> None:
    assert synthetic_sample(registry, 0, seed=1)[1] == []
    with pytest.raises(ValueError):
        synthetic_sample(registry, 100_000, seed=1)


def test_dates_without_public_values_are_iso(registry: DataProduct) -> None:
    product = parse_manifest(
        {**REGISTRY, "columns": [*REGISTRY["columns"][:3],
                                 {"name": "founded", "type": "date",
                                  "classification": "attribute", "nullable": False},
                                 *REGISTRY["columns"][4:]]}
    )  # fmt: skip
    _, rows = synthetic_sample(product, 50, seed=3)
    for row in rows:
        dt.date.fromisoformat(str(row[3]))
