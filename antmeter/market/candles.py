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

_UNIX_EPOCH = pd.Timestamp(0, tz="UTC")
# Binance's spellings; every one divides a UTC day, so a day (or a month) holds whole candles
_INTERVALS = {
    "1m": pd.Timedelta(minutes=1),
    "5m": pd.Timedelta(minutes=5),
    "15m": pd.Timedelta(minutes=15),
    "1h": pd.Timedelta(hours=1),
    "4h": pd.Timedelta(hours=4),
    "1d": pd.Timedelta(days=1),
}
SUPPORTED_INTERVALS = tuple(_INTERVALS)


EARLIEST_OPEN_TIME = pd.Timestamp("2009-01-01", tz="UTC")  # before any exchange traded crypto


class CandleValidationError(ValueError):
    """A candle row (or file) that must not be stored, naming the source, the row, the field and the reason.

    ``row`` and ``field`` are ``"-"`` for a problem of the whole source (an unreadable file).
    """

    def __init__(self, source: str, row: int | str, field: str, reason: str):
        self.source, self.row, self.field, self.reason = source, row, field, reason
        if row == "-" and field == "-":
            super().__init__(f"{source}: {reason}")
        else:
            super().__init__(f"{source}: row {row}, field {field!r}: {reason}")


def interval_timedelta(interval: str) -> pd.Timedelta:
    """The length of a candle interval such as ``"1m"``."""
    try:
        return _INTERVALS[interval]
    except KeyError:
        raise ValueError(
            f"unsupported candle interval {interval!r}; expected one of {list(_INTERVALS)}"
        ) from None


def empty_candles() -> pd.DataFrame:
    """A zero-row candle frame with the canonical dtypes."""
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in CANDLE_COLUMNS})
    frame["open_time"] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame[CANDLE_COLUMNS]


def validate_candles(
    frame: pd.DataFrame,
    source: str,
    interval: str = DEFAULT_INTERVAL,
    *,
    now: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The candle contract, shared by every source (simulator, Binance, files, API input).

    Returns ``frame`` in canonical form (sorted, UTC, float64) or raises
    :class:`CandleValidationError` naming ``source``, the first bad row and its field. Rejected:
    missing columns; open times that are naive, missing (NaT), off the ``interval`` grid, before
    2009-01-01 or after ``now`` (default: the wall clock) plus one interval, or duplicated; boolean
    or non-numeric values; NaN/inf; prices that are not positive; ``high`` below ``max(open,
    close)``; ``low`` above ``min(open, close)``; negative volume. Price jumps are not limited.
    """
    step = interval_timedelta(interval)
    missing = [c for c in CANDLE_COLUMNS if c not in frame.columns]
    if missing:
        raise CandleValidationError(source, "-", ",".join(missing), "missing column(s)")
    out = frame[CANDLE_COLUMNS].reset_index(drop=True)
    times = out["open_time"]
    if not isinstance(times.dtype, pd.DatetimeTZDtype):
        raise CandleValidationError(
            source, "-", "open_time", f"must be timezone-aware UTC, got {times.dtype}"
        )
    times = times.dt.tz_convert("UTC")
    _raise_first(source, times.isna().to_numpy(), times, "open_time", "missing open time (NaT)")
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now).tz_convert("UTC")
    # range first, at the input's own resolution: a time past 2262 does not fit nanoseconds
    _raise_first(
        source,
        (times < EARLIEST_OPEN_TIME).to_numpy(),
        times,
        "open_time",
        f"before {EARLIEST_OPEN_TIME.date()}",
    )
    _raise_first(
        source, (times > now + step).to_numpy(), times, "open_time", f"after now ({now}) plus one interval"
    )
    times = times.astype("datetime64[ns, UTC]")
    out = pd.DataFrame({"open_time": times})
    for col in [*PRICE_COLUMNS, "volume"]:
        out[col] = _finite_numbers(frame[col].reset_index(drop=True), source, times, col)
    since_epoch = (times - _UNIX_EPOCH).to_numpy().astype("int64")
    checks = [
        ("open_time", (since_epoch % step.value) != 0, f"not on the {interval} interval grid"),
        *((col, (out[col] <= 0).to_numpy(), "price not positive") for col in PRICE_COLUMNS),
        ("volume", (out["volume"] < 0).to_numpy(), "negative volume"),
        ("low", (out["low"] > out[["open", "close"]].min(axis=1)).to_numpy(), "low above open/close"),
        ("high", (out["high"] < out[["open", "close"]].max(axis=1)).to_numpy(), "high below open/close"),
        ("open_time", times.duplicated().to_numpy(), "duplicate open time"),
    ]
    for field, mask, reason in checks:
        _raise_first(source, mask, times, field, reason)
    return out.sort_values("open_time", kind="stable").reset_index(drop=True)


def _finite_numbers(values: pd.Series, source: str, times: pd.Series, field: str) -> pd.Series:
    """``values`` as float64; booleans, non-numbers, NaN and inf raise naming the first bad row."""
    if pd.api.types.is_bool_dtype(values.dtype):
        _raise_first(source, np.ones(len(values), bool), times, field, "boolean, not a number")
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) != "string":
        boolean = values.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool)
        _raise_first(source, boolean, times, field, "boolean, not a number")
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = ~np.isfinite(numbers.to_numpy())
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CandleValidationError(
            source, _row_label(times, i), field, f"not a finite number: {values.iloc[i]!r}"
        )
    return numbers


def _raise_first(source: str, mask: np.ndarray, times: pd.Series, field: str, reason: str) -> None:
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        raise CandleValidationError(source, _row_label(times, i), field, reason)


def _row_label(times: pd.Series, i: int) -> str:
    return f"{i} (open_time={times.iloc[i]})"


def off_grid(candles: pd.DataFrame, interval: str = DEFAULT_INTERVAL) -> pd.Series:
    """Boolean mask of candles whose open time is not on the ``interval`` grid."""
    since_epoch = (candles["open_time"] - _UNIX_EPOCH).to_numpy().astype("int64")
    return pd.Series(since_epoch % interval_timedelta(interval).value != 0, index=candles.index)


@dataclass(frozen=True)
class DayWindow:
    """The UTC day ``[start, end)`` of a daily partition."""

    start: pd.Timestamp
    end: pd.Timestamp

    @classmethod
    def of(cls, day: dt.date | str) -> DayWindow:
        start = pd.Timestamp(str(day), tz="UTC").normalize()
        return cls(start, start + pd.Timedelta(days=1))


def stale_limit(interval: str, late_minutes: float) -> pd.Timedelta:
    """How old the newest candle's close may be before the input counts as stale: the next candle may
    come ``late_minutes`` late (``late_minutes`` itself on 1-minute candles)."""
    return interval_timedelta(interval) + pd.Timedelta(minutes=late_minutes) - pd.Timedelta(minutes=1)


def closed_before(frame: pd.DataFrame, now: pd.Timestamp, interval: str = DEFAULT_INTERVAL) -> pd.DataFrame:
    """Keep only candles whose close time is at or before ``now`` (open candles are never final)."""
    return frame[frame["open_time"] + interval_timedelta(interval) <= now].reset_index(drop=True)
