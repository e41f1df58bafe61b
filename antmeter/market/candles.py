"""Candle frames: the one schema and time convention every part of Antmeter uses.

Time convention
---------------
A candle is keyed by its **open time** (UTC, timezone-aware) and covers ``[open_time, open_time +
interval)``. It is *known* (usable as-of) only at its **close time** ``open_time + interval``. A
feature row keyed ``t`` may use candles whose close time is ``<= t + interval`` (i.e. the candle
keyed ``t`` itself, once it has closed); a label keyed ``t`` for horizon ``h`` uses the closes of
candles ``t`` and ``t + h`` and is therefore known only at ``t + (h + 1) * interval``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

PRICE_COLUMNS = ["open", "high", "low", "close"]
CANDLE_COLUMNS = ["open_time", *PRICE_COLUMNS, "volume"]
DEFAULT_INTERVAL = "1m"

_INTERVALS = {"1m": pd.Timedelta(minutes=1), "5m": pd.Timedelta(minutes=5), "1h": pd.Timedelta(hours=1)}


class CandleValidationError(ValueError):
    """A candle row that must not be stored, naming the row, the field and the reason."""

    def __init__(self, source: str, row: int | str, field: str, reason: str):
        self.source, self.row, self.field, self.reason = source, row, field, reason
        super().__init__(f"{source}: row {row}, field {field!r}: {reason}")


def interval_timedelta(interval: str) -> pd.Timedelta:
    """The length of a candle interval such as ``"1m"``."""
    try:
        return _INTERVALS[interval]
    except KeyError:
        raise ValueError(
            f"unsupported candle interval {interval!r}; expected one of {sorted(_INTERVALS)}"
        ) from None


def empty_candles() -> pd.DataFrame:
    """A zero-row candle frame with the canonical dtypes."""
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in CANDLE_COLUMNS})
    frame["open_time"] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame[CANDLE_COLUMNS]


def validate_candles(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Return ``frame`` in canonical form (sorted, UTC, float64), or raise on the first bad row.

    Rejected: missing columns, naive or unparseable times, duplicate open times, NaN/inf values,
    negative volume, non-positive prices and OHLC inconsistency (low <= open, close <= high).
    """
    missing = [c for c in CANDLE_COLUMNS if c not in frame.columns]
    if missing:
        raise CandleValidationError(source, "-", ",".join(missing), "missing column(s)")
    out = frame[CANDLE_COLUMNS].copy()
    times = out["open_time"]
    if not isinstance(times.dtype, pd.DatetimeTZDtype):
        raise CandleValidationError(
            source, "-", "open_time", f"must be timezone-aware UTC, got {times.dtype}"
        )
    out["open_time"] = times.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    for col in [*PRICE_COLUMNS, "volume"]:
        values = pd.to_numeric(out[col], errors="coerce").astype("float64")
        bad = ~np.isfinite(values.to_numpy())
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CandleValidationError(
                source, _row_label(out, i), col, f"not a finite number: {frame[col].iloc[i]!r}"
            )
        out[col] = values
    checks = [
        ("volume", out["volume"] < 0, "negative volume"),
        ("low", out["low"] <= 0, "non-positive price"),
        ("low", out["low"] > out[["open", "close"]].min(axis=1), "low above open/close"),
        ("high", out["high"] < out[["open", "close"]].max(axis=1), "high below open/close"),
    ]
    for field, mask, reason in checks:
        if mask.any():
            i = int(np.flatnonzero(mask.to_numpy())[0])
            raise CandleValidationError(source, _row_label(out, i), field, reason)
    dup = out["open_time"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise CandleValidationError(source, _row_label(out, i), "open_time", "duplicate open time")
    return out.sort_values("open_time", kind="stable").reset_index(drop=True)


def _row_label(frame: pd.DataFrame, i: int) -> str:
    return f"{i} (open_time={frame['open_time'].iloc[i]})"


@dataclass(frozen=True)
class DayWindow:
    """The UTC day ``[start, end)`` of a daily partition."""

    start: pd.Timestamp
    end: pd.Timestamp

    @classmethod
    def of(cls, day: dt.date | str) -> DayWindow:
        start = pd.Timestamp(str(day), tz="UTC").normalize()
        return cls(start, start + pd.Timedelta(days=1))


def closed_before(frame: pd.DataFrame, now: pd.Timestamp, interval: str = DEFAULT_INTERVAL) -> pd.DataFrame:
    """Keep only candles whose close time is at or before ``now`` (open candles are never final)."""
    return frame[frame["open_time"] + interval_timedelta(interval) <= now].reset_index(drop=True)
