"""A PUMS product (the real microdata of ``../shared/datasets/pums``, read at test time)
and an enterprise scope granting synthetic data and training on it."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from sandbox.runtime import Runtime
from sandbox.settings import Settings
from tests.sandbox.conftest import Caller

PUMS_MANIFEST: dict[str, Any] = {
    "id": "pums",
    "title": "PUMS sample (1,000 people)",
    "privacy_unit": "pid",
    "max_rows_per_unit": 1,
    "columns": [
        {"name": "pid", "type": "integer", "classification": "identifier", "nullable": False},
        {
            "name": "age",
            "type": "integer",
            "classification": "attribute",
            "bounds": [0, 100],
            "bins": [0, 20, 30, 40, 50, 60, 70, 100],
            "nullable": False,
        },
        {
            "name": "sex",
            "type": "integer",
            "classification": "attribute",
            "public_values": [0, 1],
            "bounds": [0, 1],
            "nullable": False,
        },
        {
            "name": "educ",
            "type": "integer",
            "classification": "attribute",
            "public_values": list(range(1, 17)),
            "bounds": [1, 16],
            "nullable": False,
        },
        {
            "name": "race",
            "type": "integer",
            "classification": "attribute",
            "public_values": [1, 2, 3, 4, 5, 6],
            "bounds": [1, 6],
            "nullable": False,
        },
        {
            "name": "income",
            "type": "float",
            "classification": "sensitive",
            "bounds": [0, 500000],
            "bins": [0, 10000, 25000, 50000, 100000, 500000],
            "nullable": False,
        },
        {
            "name": "married",
            "type": "integer",
            "classification": "attribute",
            "public_values": [0, 1],
            "bounds": [0, 1],
            "nullable": False,
        },
        {"name": "note", "type": "string", "classification": "attribute"},
        {"name": "hours", "type": "integer", "classification": "attribute", "aggregate": False},
    ],
}
COLUMNS = ["age", "sex", "educ", "race", "income", "married", "note", "hours"]


def pums_rows(shared: Path) -> list[dict[str, Any]]:
    """The real rows (PUMS_pid.csv), typed."""
    path = shared / "datasets" / "pums" / "PUMS_pid.csv"
    with path.open(encoding="utf-8") as f:
        return [
            {
                "pid": int(r["pid"]),
                "age": int(r["age"]),
                "sex": int(r["sex"]),
                "educ": int(r["educ"]),
                "race": int(r["race"]),
                "income": float(r["income"]),
                "married": int(r["married"]),
            }
            for r in csv.DictReader(f)
        ]


def pums_csv(shared: Path) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["pid", "age", "sex", "educ", "race", "income", "married", "note", "hours"])
    for r in pums_rows(shared):
        w.writerow(
            [r["pid"], r["age"], r["sex"], r["educ"], r["race"], r["income"], r["married"], "", ""]
        )
    return out.getvalue().encode()


def grant(
    operator: Caller, sid: str, *, epsilon: float = 1000, cap: float = 100, **ops: Any
) -> None:
    operations = {"aggregate": {"columns": COLUMNS}, "synthetic": True, "train": True, **ops}
    resp = operator.post(
        "/v1/scopes",
        {
            "id": sid,
            "enterprise": "ent-acme",
            "product": "pums",
            "purpose": "model development",
            "operations": operations,
            "epsilon": epsilon,
            "max_epsilon_per_query": cap,
            "rate_per_minute": 10000,
            "daily_quota": 1000000,
            "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": "2099-01-01T00:00:00Z",
        },
    )
    assert resp.status_code == 201, resp.get_json()


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One JAX compilation cache for the session: later fits of a shape skip compiling."""
    return tmp_path_factory.mktemp("jax-cache")


@pytest.fixture
def settings(tmp_path: Path, jax_cache: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        query_threads=1,
        query_memory_limit="1GB",
        model_cache_dir=jax_cache,
    )


@pytest.fixture
def pums(operator: Caller, enterprise: Caller, rt: Runtime, shared_dir: Path) -> str:
    assert operator.post("/v1/products", PUMS_MANIFEST).status_code == 201
    up = operator.call(
        "PUT", "/v1/products/pums/data", body=pums_csv(shared_dir), content_type="text/csv"
    )
    assert up.status_code == 200, up.get_json()
    grant(operator, "sc-pums")
    return "sc-pums"
