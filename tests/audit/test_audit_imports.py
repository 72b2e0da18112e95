"""The offline verify path needs only the stdlib and pycryptodome (DESIGN §3, §7)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

AUDIT = Path(__file__).resolve().parents[2] / "audit"


def test_offline_path_imports_no_sqlalchemy_or_other_crypto() -> None:
    code = (
        "import sys, audit, audit.verify, audit.receipts, audit.witness, audit.__main__\n"
        "bad = [m for m in ('sqlalchemy', 'cryptography', 'jwt', 'sandbox', 'policies',"
        " 'products') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=AUDIT.parent, check=True)


def test_audit_imports_none_of_the_other_packages() -> None:
    forbidden = {"sandbox", "policies", "products", "jwt", "cryptography"}
    for path in AUDIT.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
