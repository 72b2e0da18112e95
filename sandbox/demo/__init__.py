"""Demo data and definitions: deterministic synthetic tables of a large Chinese city's
public data, with the manifests and verification products that publish them.

``write_all`` writes the three tables; ``manifests`` and ``verification_products``
return the definitions ``sandbox demo`` registers. See docs/demo-data.md.
"""

from sandbox.demo.definitions import (
    OPERATING_RISK_ID,
    OPERATING_RISK_SPEC,
    manifest_data,
    manifests,
    model_product_data,
    verification_data,
    verification_products,
)
from sandbox.demo.generator import (
    DEFAULT_SEED,
    PRODUCTS,
    DemoSizes,
    generate,
    header,
    iter_rows,
    write_all,
)

__all__ = [
    "DEFAULT_SEED",
    "OPERATING_RISK_ID",
    "OPERATING_RISK_SPEC",
    "PRODUCTS",
    "DemoSizes",
    "generate",
    "header",
    "iter_rows",
    "manifest_data",
    "manifests",
    "model_product_data",
    "verification_data",
    "verification_products",
    "write_all",
]
