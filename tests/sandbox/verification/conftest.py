"""Real product files for verification tests: demo data generated, then loaded with
the production loader into DuckDB files, exactly as ``sandbox demo`` does."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from products.loader import DataFormat, load_file
from products.manifest import DataProduct
from products.verification import VerificationProduct
from sandbox.demo import DemoSizes, manifests, verification_products, write_all
from sandbox.verification.lookup import VerificationLimits, VerificationRunner

SIZES = DemoSizes(enterprises=400, social_insurance=1200, population=500)


@dataclass(frozen=True)
class DemoStore:
    products: dict[str, DataProduct]
    files: dict[str, Path]  # product id -> DuckDB file
    rows: dict[str, list[dict[str, str]]]  # product id -> CSV rows (the ground truth)
    vps: dict[str, VerificationProduct]


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> DemoStore:
    root = tmp_path_factory.mktemp("verification-demo")
    csvs = write_all(root / "csv", SIZES)
    products = manifests()
    files: dict[str, Path] = {}
    rows: dict[str, list[dict[str, str]]] = {}
    for pid, path in csvs.items():
        files[pid] = root / f"{pid}.duckdb"
        load_file(products[pid], path, DataFormat.CSV, files[pid])
        with path.open(encoding="utf-8", newline="") as f:
            rows[pid] = list(csv.DictReader(f))
    return DemoStore(products, files, rows, verification_products())


@pytest.fixture(params=["point-lookups", "answer-indexes"])
def runner(request: pytest.FixtureRequest) -> Iterator[VerificationRunner]:
    """Both ways of answering: DuckDB statements per call, and precomputed indexes
    (built on first use, synchronously). Every lookup test runs against each."""
    indexed = request.param == "answer-indexes"
    r = VerificationRunner(VerificationLimits(answer_indexes=indexed, build_in_background=False))
    yield r
    r.close()
