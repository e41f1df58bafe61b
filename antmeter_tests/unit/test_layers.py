"""The layout's rules: stages import only lower stages, the domain has no Dagster, nothing imports the tests."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGES = {"market", "news", "features", "learn", "registry", "live"}


def test_import_linter_contracts_are_kept():
    """``lint-imports`` over the contracts in pyproject.toml (layers, no Dagster under antmeter/)."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


def test_domain_package_has_only_stage_subpackages():
    top = {p.name for p in (REPO / "antmeter").iterdir() if not p.name.startswith((".", "__pycache__"))}
    assert top == {"__init__.py"} | STAGES


def test_benchmarks_import_nothing_from_the_tests():
    offenders = []
    for path in sorted((REPO / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] == "antmeter_tests"
            ]
    assert not offenders, offenders
