"""Offline verification of a 1,000,000-entry bundle (DESIGN §10: under 10 s).

    PYTHONPATH=. python bench/audit_verify.py [--entries 1000000] [--workers N]
                                              [--suite ed25519-sha256|sm2-sm3]

Generates a realistic bundle (entries as the log writes them, chained, with a signed
checkpoint) into a temporary file, then times ``verify_bundle``. ``--suite sm2-sm3``
(DESIGN §13): SM3 leaf and node hashes and an SM2 checkpoint key.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from audit import canonical
from audit.bundle import BundleWriter
from audit.merkle import CompactRange, TreeHash
from audit.note import NoteSigner, checkpoint_text
from audit.suites import SUITE_NAMES, suite_named
from audit.verify import verify_bundle


def generate(path: Path, n: int, signer: NoteSigner, th: TreeHash, suite: str) -> None:
    cr = CompactRange(th=th)
    leaf_hash = th.leaf
    prev: bytes | None = None
    with path.open("wb", buffering=1 << 20) as f:
        w = BundleWriter(f.write)
        w.header(signer.name, 0, n, [signer.public_jwk()], suite=suite)
        for i in range(n):
            entry = {
                "index": i,
                "time": f"2026-11-23T11:{(i // 60000) % 60:02d}:"
                f"{(i // 1000) % 60:02d}.{i % 1000:03d}Z",
                "actor": f"ent-{i % 50}",
                "role": "enterprise",
                "action": "query.aggregate" if i % 3 else "verify",
                "target": {"product": "enterprise_registry", "scope": f"sc-{i % 20}"},
                "request_hash": f"{i:064x}",
                "decision": "deny" if i % 17 == 0 else "allow",
                "reason": "rate_limited" if i % 17 == 0 else None,
                "epsilon": "0.5",
                "result_hash": f"{i + 7:064x}",
                "jti": f"0b9f{i:032x}",
                "client": "10.0.0.7",
                "prev": prev.hex() if prev else None,
            }
            leaf = canonical.encode(entry)
            prev = leaf_hash(leaf)
            cr.append(prev)
            w.entry(i, leaf)
        text = checkpoint_text(signer.name, n, cr.root(), "2026-11-23T12:00:00.000Z")
        w.checkpoint(signer.sign_note(text))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--suite", choices=SUITE_NAMES, default="ed25519-sha256")
    args = ap.parse_args()
    print(
        f"# {platform.node()} {os.cpu_count()} cpus, python {platform.python_version()}, "
        f"suite {args.suite}"
    )
    suite = suite_named(args.suite)
    if suite.key_type == "SM2":
        from policies.sm2 import SM2PrivateKey  # the service's SM2 signer (Tongsuo)

        signer = NoteSigner(SM2PrivateKey.generate(), "bench/audit")
    else:
        signer = NoteSigner.generate("bench/audit")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bundle.jsonl"
        t0 = time.perf_counter()
        generate(path, args.entries, signer, suite.tree, suite.name)
        print(
            f"generated {args.entries:,} entries, {path.stat().st_size / 1e6:.0f} MB "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        for workers in [args.workers] if args.workers is not None else [None, 0]:
            t0 = time.perf_counter()
            report = verify_bundle(path, workers=workers)
            dt = time.perf_counter() - t0
            assert report.ok, report.errors
            label = "auto" if workers is None else str(workers)
            print(f"verify_bundle workers={label}: {dt:.2f} s ({report.summary()[:60]}...)")


if __name__ == "__main__":
    main()
