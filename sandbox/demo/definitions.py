"""The demo's published definitions: product manifests (YAML), verification
products and model products (JSON), shipped as package data next to this module,
and the training request behind the demo's trained model product.

They are what ``sandbox demo`` registers and what operators copy; tests parse every
one of them, so they cannot drift from the manifest and verification models.
"""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import yaml

from products.manifest import DataProduct, parse_manifest
from products.verification import VerificationProduct, parse_verification_product


def _files(folder: str, suffix: str) -> list[Traversable]:
    root = resources.files("sandbox.demo").joinpath(folder)
    return sorted((f for f in root.iterdir() if f.name.endswith(suffix)), key=lambda f: f.name)


def manifest_data() -> dict[str, dict[str, Any]]:
    """Return each demo manifest as decoded YAML (the body of POST /v1/products), by id."""
    out = {}
    for f in _files("manifests", ".yaml"):
        data = yaml.safe_load(f.read_text(encoding="utf-8"))
        out[data["id"]] = data
    return out


def manifests() -> dict[str, DataProduct]:
    """Return the parsed demo manifests by product id."""
    return {pid: parse_manifest(data) for pid, data in manifest_data().items()}


def verification_data() -> dict[str, dict[str, Any]]:
    """Return each demo verification product as decoded JSON (the body of
    POST /v1/verification-products), by id."""
    out = {}
    for f in _files("verification", ".json"):
        data = json.loads(f.read_text(encoding="utf-8"))
        out[data["id"]] = data
    return out


def verification_products() -> dict[str, VerificationProduct]:
    """Return the demo verification products parsed against the demo manifests, by id.

    Raises ``InvalidRequest`` if one does not fit its product (a packaging bug).
    """
    products = manifests()
    return {
        vid: parse_verification_product(data, products[data["product"]])
        for vid, data in verification_data().items()
    }


def model_product_data() -> dict[str, dict[str, Any]]:
    """Return each hand-written demo model product (the body of POST
    /v1/model-products), by id."""
    out = {}
    for f in _files("models", ".json"):
        data = json.loads(f.read_text(encoding="utf-8"))
        out[data["id"]] = data
    return out


#: The demo's scorecard training request (DESIGN §11.2): the risk of being put on the
#: abnormal-operation list (经营异常名录) from industry, district, registered-capital
#: band and age band (founding-date bins), on the scale banks use (600 points at
#: 20:1, 40 points to double the odds).
OPERATING_RISK_SPEC: dict[str, Any] = {
    "kind": "scorecard",
    "target": "abnormal_list",
    "features": [
        "industry",
        "district",
        "registered_capital",
        {
            "column": "founded_on",
            "bins": [
                "1992-01-01",
                "2006-01-01",
                "2012-01-01",
                "2016-01-01",
                "2019-01-01",
                "2021-01-01",
                "2023-01-01",
                "2026-01-01",
            ],
        },
    ],
    "scale": {"base_score": 600, "base_odds": 20, "pdo": 40},
    "score_bins": 20,
}
OPERATING_RISK_ID = "enterprise-operating-risk"
