"""The one symbol type: every symbol that names a partition, a file or a store row passes here first.

A symbol must fully match ``ANTMETER_SYMBOL_PATTERN`` (default ``^[A-Z0-9]{2,20}$``, e.g. ``BTCUSDT``)
and, whatever the pattern, consist only of ASCII letters, digits, ``_`` and ``-`` (so no path
separator, dot, NUL or space can ever reach a file name or a database). Paths built from user input
go through :func:`path_under`, which resolves them and refuses anything outside the base directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SYMBOL_PATTERN_ENV = "ANTMETER_SYMBOL_PATTERN"
DEFAULT_SYMBOL_PATTERN = r"^[A-Z0-9]{2,20}$"
_SAFE_CHARACTERS = re.compile(r"[A-Za-z0-9_-]{1,64}")


class InvalidSymbolError(ValueError):
    """A symbol that does not match the configured symbol rule."""


def symbol_pattern() -> re.Pattern[str]:
    """The configured symbol pattern (``ANTMETER_SYMBOL_PATTERN``), compiled."""
    raw = os.environ.get(SYMBOL_PATTERN_ENV) or DEFAULT_SYMBOL_PATTERN
    try:
        return re.compile(raw)
    except re.error as exc:
        raise ValueError(f"{SYMBOL_PATTERN_ENV}={raw!r} is not a valid regular expression: {exc}") from None


def validate_symbol(value: object, what: str = "symbol") -> str:
    """``value`` if it is a valid symbol, else :class:`InvalidSymbolError` naming ``what`` and the rule."""
    pattern = symbol_pattern()
    if not isinstance(value, str):
        raise InvalidSymbolError(f"{what}: expected a string symbol, got {type(value).__name__}")
    if not pattern.fullmatch(value) or not _SAFE_CHARACTERS.fullmatch(value):
        raise InvalidSymbolError(
            f"{what}: {value!r} is not a valid symbol; expected {pattern.pattern} "
            f"({SYMBOL_PATTERN_ENV}), letters, digits, '_' and '-' only"
        )
    return value


def validate_symbols(values: list[str] | tuple[str, ...], what: str = "symbols") -> list[str]:
    """Every symbol of ``values`` validated (the first bad one raises), in order, without duplicates."""
    return list(dict.fromkeys(validate_symbol(v, f"{what}[{i}]") for i, v in enumerate(values)))


def path_under(base: str | Path, *parts: str) -> Path:
    """``base/parts...`` resolved; raises ``ValueError`` if the result is not inside ``base``."""
    root = Path(base).resolve()
    target = root.joinpath(*parts).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"path {'/'.join(parts)!r} resolves to {target}, outside the base directory {root}")
    return target
