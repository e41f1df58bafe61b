"""The code location's version: what a worker compares with the code server before running anything.

``ANTMETER_CODE_VERSION`` (e.g. the image tag or git commit a deployment ships) wins; otherwise the
version is a hash of the installed source of the project's packages (``*.py`` and ``*.yaml`` under
``antmeter``, ``antmeter_assets``, ``antmeter_resources``), so two machines agree exactly when they run
the same code.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from pathlib import Path

CODE_VERSION_ENV = "ANTMETER_CODE_VERSION"
PACKAGES = ("antmeter", "antmeter_assets", "antmeter_resources")
SUFFIXES = (".py", ".yaml")


@functools.cache
def source_hash() -> str:
    """sha256 (first 16 hex digits) over the relative paths and bytes of the packages' source files."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"package {package!r} is not importable: cannot compute the code version")
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file()):
            if "__pycache__" in path.parts:
                continue
            digest.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()[:16]


def code_version() -> str:
    """``ANTMETER_CODE_VERSION`` when set, else :func:`source_hash`."""
    return os.environ.get(CODE_VERSION_ENV) or source_hash()
