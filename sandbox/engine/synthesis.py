"""DP synthetic data with OpenDP's ``mbi`` integration (DESIGN §11.1).

The second module that imports OpenDP (after ``noise``): it needs the optional
``opendp[mbi]`` extra (Private-PGM, Polars, jax), so it is imported only inside the
isolated worker that runs the release, never by the API process.

The worker receives the exact joint cells of the encoded columns (codes and row
counts over the contribution-bounded rows, DESIGN §8) and expands them into the Polars
frame OpenDP measures. ``make_contingency_table`` builds the whole mechanism — MST
(default) or AIM — under pure DP (``max_divergence``) at the request's epsilon with
``d_in = Bound(per_group=k)``: each unit adds or removes at most ``k`` rows.
OpenDP's own privacy map is checked against the epsilon before anything is released.
Only the synthetic codes leave the worker (and the noise scale OpenDP chose); the
graphical model is fitted by Private-PGM on OpenDP's noisy marginals, and rows are
drawn from it — post-processing.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sandbox.engine.isolation import Deadline, Row

_log = logging.getLogger(__name__)


class SynthesisUnavailable(RuntimeError):
    """``opendp[mbi]`` is not installed (its extra is an optional dependency)."""


FIT_ITERATIONS = 250  # mirror-descent steps per model fit (Private-PGM's default: 1000)


@dataclass(frozen=True)
class SynthesisPlan:
    sizes: tuple[int, ...]  # codes per column (the last one *missing* where ``missing``)
    missing: tuple[bool, ...]  # columns whose last code is *missing* (NULL)
    k: int
    epsilon: float
    rows: int
    method: str  # "mst" | "aim"
    seed: int
    cache_dir: str | None = None  # JAX's persistent compilation cache


@dataclass(frozen=True)
class Synthesis:
    codes: tuple[tuple[int | None, ...], ...]  # per synthetic row; None: OpenDP's null
    # category of a column that declares no missing code (noise can give it mass)
    scale: float | None  # OpenDP's noise scale of the one-way marginals


def available() -> bool:
    """True if OpenDP's mbi integration can be imported here."""
    try:
        import mbi  # noqa: F401
        import polars  # noqa: F401
    except ImportError:
        return False
    return True


def synthesize(plan: SynthesisPlan, rows: list[Row], deadline: Deadline) -> Synthesis:
    """Run in the isolated worker on ``(codes..., n)`` cells (module docstring)."""
    started = time.monotonic()
    _log_to_stderr()
    _configure_jax(plan.cache_dir)
    try:
        import numpy as np
        import opendp.prelude as prelude
        import polars as pl
    except ImportError as exc:  # pragma: no cover - installation problem
        raise SynthesisUnavailable(str(exc)) from None
    if not available():  # pragma: no cover
        raise SynthesisUnavailable("opendp[mbi] is not installed")
    dp: Any = prelude
    dp.enable_features("contrib")
    d = len(plan.sizes)
    names = [f"c{i}" for i in range(d)]
    if rows:
        cols = list(zip(*rows, strict=True))
        counts = np.asarray(cols[d], dtype=np.int64)
        data = {
            n: np.repeat(np.asarray(cols[i], dtype=np.int64), counts) for i, n in enumerate(names)
        }
    else:
        data = {n: np.zeros(0, dtype=np.int64) for n in names}
    frame = pl.DataFrame(data, schema={n: pl.Int64 for n in names})
    # *missing* is OpenDP's null category (it adds one to every key set).
    frame = frame.with_columns(
        pl.when(pl.col(n) == size - 1).then(None).otherwise(pl.col(n)).alias(n)
        for n, size, nullable in zip(names, plan.sizes, plan.missing, strict=True)
        if nullable
    )
    categories = [
        size - 1 if nullable else size
        for size, nullable in zip(plan.sizes, plan.missing, strict=True)
    ]
    _log.info("synthetic data: %d cells, %d rows expanded", len(rows), frame.height)
    domain = dp.lazyframe_domain([dp.series_domain(n, dp.atom_domain(T=dp.i64)) for n in names])
    estimator = _estimator(started)
    algorithm: Any = (
        dp.mbi.AIM(estimator=estimator) if plan.method == "aim" else dp.mbi.MST(estimator=estimator)
    )
    d_in = [dp.polars.Bound(per_group=plan.k)]
    meas, scale, _ = dp.mbi.make_contingency_table(
        domain,
        dp.frame_distance(dp.symmetric_distance()),
        dp.max_divergence(),
        d_in=d_in,
        d_out=plan.epsilon,
        keys={n: list(range(c)) for n, c in zip(names, categories, strict=True)},
        algorithm=algorithm,
    )
    if meas.map(d_in) > plan.epsilon:  # OpenDP's own accounting, checked before release
        raise RuntimeError("the contingency-table measurement exceeds its epsilon")
    _log.info("synthetic data: mechanism built in %.1f s", time.monotonic() - started)
    deadline.check()
    table = meas(frame.lazy())
    _log.info(
        "synthetic data: marginals measured and model fitted in %.1f s", time.monotonic() - started
    )
    deadline.check()
    np.random.seed(plan.seed)  # Private-PGM samples with numpy's global generator
    synthetic = table.synthesize(rows=plan.rows)
    out = tuple(
        tuple(
            (size - 1 if nullable else None) if v is None else int(v)
            for v, size, nullable in zip(row, plan.sizes, plan.missing, strict=True)
        )
        for row in synthetic.select(names).iter_rows()
    )
    _log.info("synthetic data: %d rows drawn in %.1f s", len(out), time.monotonic() - started)
    return Synthesis(out, float(scale) if scale is not None else None)


def _log_to_stderr() -> None:
    """The worker is a spawned process whose logging nobody configured: send this
    module's progress (INFO) to its stderr, which is the server's."""
    if not _log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s[%(process)d] %(message)s"))
        _log.addHandler(handler)
        _log.setLevel(logging.INFO)
        _log.propagate = False


def _configure_jax(cache_dir: str | None) -> None:
    """CPU only, and a persistent compilation cache: Private-PGM's fit compiles a few
    hundred XLA programs for a domain shape (most of a cold release's time, measured in
    docs/models.md); with the cache, later releases of the same shape, in any worker
    or process, skip them."""
    import jax

    config: Any = jax.config
    config.update("jax_platforms", "cpu")
    if cache_dir:
        config.update("jax_compilation_cache_dir", cache_dir)
        config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _estimator(started: float) -> Any:
    """Private-PGM's mirror descent with ``FIT_ITERATIONS`` steps, logging progress."""

    def fit(domain: Any, loss_fn: Any, *, potentials: Any = None) -> Any:
        from mbi.estimation import mirror_descent

        steps = [0]

        def progress(_: Any) -> None:
            steps[0] += 1
            if steps[0] % 50 == 0:
                _log.info(
                    "synthetic data: model fit step %d/%d (%.1f s)",
                    steps[0],
                    FIT_ITERATIONS,
                    time.monotonic() - started,
                )

        return mirror_descent(
            domain, loss_fn, potentials=potentials, iters=FIT_ITERATIONS, callback_fn=progress
        )

    return fit


def oneway_scale(sizes: Sequence[int], k: int, epsilon: float) -> float:
    """The Laplace scale MST spends on each one-way marginal: OpenDP's
    ``make_contingency_table`` gives half the epsilon to the ``d`` one-way marginals
    (L1 sensitivity ``k`` each, composed: ``d·k / (epsilon / 2)``). For previews,
    without building the mechanism; checked against OpenDP's own scale in tests."""
    return 2.0 * len(sizes) * k / epsilon
