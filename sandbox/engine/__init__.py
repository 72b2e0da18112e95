"""The differential-privacy query engine (DESIGN §2, §8).

parse → resolve → plan (a tuple of pure rewrite rules) → isolation (the only
``duckdb.connect`` for reads) → noise (the only importer of OpenDP). The HTTP layer
calls ``prepare`` (preview: ``PreparedQuery.accuracy()``; the cost model refuses
what would cost the platform too much), then ``execute`` and charges the answer;
``synthetic_sample`` serves product samples from the manifest alone.

Exports are loaded lazily so that the engine's worker processes, which import only
``sandbox.engine.isolation``, start without sqlglot and OpenDP (they import the
release step's modules with their first query).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.engine.cost import CostLimits, QueryCost
    from sandbox.engine.isolation import (
        EngineLimits,
        QueryRunner,
        UnsafeInProcessRunner,
        WorkerPool,
        default_runner,
    )
    from sandbox.engine.query import Answer, PreparedQuery, execute, prepare
    from sandbox.engine.sample import synthetic_sample

_EXPORTS = {
    "CostLimits": "sandbox.engine.cost",
    "QueryCost": "sandbox.engine.cost",
    "EngineLimits": "sandbox.engine.isolation",
    "QueryRunner": "sandbox.engine.isolation",
    "UnsafeInProcessRunner": "sandbox.engine.isolation",
    "WorkerPool": "sandbox.engine.isolation",
    "default_runner": "sandbox.engine.isolation",
    "Answer": "sandbox.engine.query",
    "PreparedQuery": "sandbox.engine.query",
    "execute": "sandbox.engine.query",
    "prepare": "sandbox.engine.query",
    "synthetic_sample": "sandbox.engine.sample",
}

__all__ = [
    "Answer",
    "CostLimits",
    "EngineLimits",
    "PreparedQuery",
    "QueryCost",
    "QueryRunner",
    "UnsafeInProcessRunner",
    "WorkerPool",
    "default_runner",
    "execute",
    "prepare",
    "synthetic_sample",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sandbox.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
