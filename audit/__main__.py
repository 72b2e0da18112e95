"""``python -m audit verify BUNDLE``: the offline verifier (stdlib + pycryptodome; SM2
bundles also gmssl-pyx).

Exits 0 only if every check passes; otherwise prints one readable line and exits 1
(2 for usage errors).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from audit.errors import AuditError
from audit.note import cosignature_verifier_from_vkey, note_verifier_from_vkey
from audit.verify import verify_bundle


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m audit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="verify an audit bundle offline")
    v.add_argument("bundle", help="path of the JSON Lines bundle")
    v.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="VKEY",
        help="pin the log's key (signed-note vkey name+id+key); default: the header's keys",
    )
    v.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="VKEY",
        help="a witness's cosignature vkey whose lines are verified",
    )
    v.add_argument("--workers", type=int, default=None, help="hashing processes")
    v.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = parser.parse_args(argv)
    try:
        keys = [note_verifier_from_vkey(k) for k in args.key] or None
        witnesses = [cosignature_verifier_from_vkey(k) for k in args.witness]
    except AuditError as exc:
        parser.error(exc.message)
    try:
        report = verify_bundle(
            args.bundle, trusted_keys=keys, witnesses=witnesses, workers=args.workers
        )
    except OSError as exc:
        print(f"FAILED: cannot read {args.bundle}: {exc.strerror}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.summary(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
