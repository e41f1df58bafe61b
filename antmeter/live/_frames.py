"""Input checks and small frame helpers shared by the ``antmeter.live`` modules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from antmeter.market.candles import interval_timedelta

ONE_MINUTE = interval_timedelta("1m")
TASKS = ("binary", "three_class")  # the task names of antmeter.learn.datasets
# Class ids. Binary: 0 = not up (return <= 0), 1 = up. Three-class: 0 = down, 1 = flat, 2 = up (the order of
# the prob_down/prob_flat/prob_up columns).
BINARY_UP = 1
DOWN3, FLAT3, UP3 = 0, 1, 2


class LiveInputError(ValueError):
    """A bad input frame or setting, naming the source, the row, the field and the reason."""

    def __init__(self, source: str, row: int | str, field: str, reason: str):
        self.source, self.row, self.field, self.reason = source, row, field, reason
        super().__init__(f"{source}: row {row}, field {field!r}: {reason}")


def require_columns(frame: pd.DataFrame, columns: Iterable[str], source: str) -> None:
    """Raise naming every missing column."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LiveInputError(source, "-", ",".join(missing), "missing column(s)")


def utc_ns(values: pd.Series, field: str, source: str) -> pd.Series:
    """``values`` as ``datetime64[ns, UTC]``; naive or non-datetime values are rejected."""
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        raise LiveInputError(source, "-", field, f"must be timezone-aware UTC datetimes, got {values.dtype}")
    out = values.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if out.isna().any():
        raise LiveInputError(source, int(np.flatnonzero(out.isna().to_numpy())[0]), field, "missing time")
    return out


def utc_timestamp(value: pd.Timestamp | str, field: str) -> pd.Timestamp:
    """A timezone-aware UTC timestamp (nanosecond unit) or a clear error naming the setting."""
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise ValueError(f"{field} must be timezone-aware (UTC), got naive {stamp}")
    return stamp.tz_convert("UTC").as_unit("ns")


def check_task(task: str, flat_band_bps: float | None) -> int:
    """Validate the task settings and return the number of classes."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "three_class":
        if flat_band_bps is None or not np.isfinite(flat_band_bps) or flat_band_bps < 0:
            raise ValueError(
                f"flat_band_bps must be a finite number >= 0 for task='three_class', got {flat_band_bps!r}"
            )
        return 3
    return 2


def classify_returns(returns: np.ndarray, task: str, flat_band_bps: float | None) -> np.ndarray:
    """Class ids (as float, NaN where the return is NaN) of log returns under the task's label rule.

    Binary: up (1) iff return > 0, so a zero return is "not up" (0). Three-class: up (2) iff return > band,
    down (0) iff return < -band, else flat (1), with band = ``flat_band_bps`` / 1e4 in log-return units.
    """
    r = np.asarray(returns, dtype="float64")
    if task == "binary":
        out = (r > 0).astype("float64")
    else:
        band = float(flat_band_bps) / 1e4
        out = np.where(r > band, UP3, np.where(r < -band, DOWN3, FLAT3)).astype("float64")
    out[np.isnan(r)] = np.nan
    return out


def candle_closes(
    candles: Mapping[str, pd.DataFrame] | pd.DataFrame, source: str = "candles"
) -> pd.DataFrame:
    """Normalize candles (a mapping symbol -> frame, or one frame with a ``symbol`` column) to
    ``symbol, open_time (datetime64[ns, UTC]), close`` with finite positive closes and unique keys."""
    if isinstance(candles, pd.DataFrame):
        require_columns(candles, ["symbol", "open_time", "close"], source)
        frame = candles[["symbol", "open_time", "close"]].copy()
    else:
        parts = []
        for symbol, part in candles.items():
            require_columns(part, ["open_time", "close"], f"{source}[{symbol!r}]")
            parts.append(part[["open_time", "close"]].assign(symbol=str(symbol)))
        if not parts:
            return pd.DataFrame(
                {
                    "symbol": pd.Series(dtype="str"),
                    "open_time": pd.Series(dtype="datetime64[ns, UTC]"),
                    "close": pd.Series(dtype="float64"),
                }
            )
        frame = pd.concat(parts, ignore_index=True)[["symbol", "open_time", "close"]]
    frame = frame.reset_index(drop=True)
    frame["symbol"] = frame["symbol"].astype("str")
    frame["open_time"] = utc_ns(frame["open_time"], "open_time", source)
    close = pd.to_numeric(frame["close"], errors="coerce").astype("float64").to_numpy()
    bad = ~(np.isfinite(close) & (close > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise LiveInputError(source, i, "close", f"not a finite positive price: {frame['close'].iloc[i]!r}")
    frame["close"] = close
    dup = frame.duplicated(["symbol", "open_time"])
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise LiveInputError(source, i, "open_time", "duplicate (symbol, open_time)")
    return frame


def lookup_close(closes: pd.DataFrame, symbols: pd.Series, times: pd.Series) -> np.ndarray:
    """Close prices of candles keyed ``(symbol, open_time)``; NaN where no such candle exists."""
    out = np.full(len(symbols), np.nan)
    wanted_symbols = np.asarray(symbols.astype("str"), dtype=object)
    wanted_times = np.asarray(times.astype("datetime64[ns, UTC]").astype("int64"))
    candle_symbols = np.asarray(closes["symbol"], dtype=object)
    candle_times = np.asarray(closes["open_time"].astype("int64"))
    candle_close = closes["close"].to_numpy(dtype="float64")
    for symbol in pd.unique(wanted_symbols):
        mine = candle_symbols == symbol
        order = np.argsort(candle_times[mine], kind="stable")
        keys, values = candle_times[mine][order], candle_close[mine][order]
        rows = np.flatnonzero(wanted_symbols == symbol)
        at = np.minimum(np.searchsorted(keys, wanted_times[rows]), max(len(keys) - 1, 0))
        if len(keys):
            hit = keys[at] == wanted_times[rows]
            out[rows[hit]] = values[at[hit]]
    return out


def horizon_minutes(values: pd.Series, source: str) -> pd.Series:
    """Validate horizons as positive whole minutes and return them as int64."""
    numeric = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
    bad = ~(np.isfinite(numeric) & (numeric >= 1) & (numeric == np.round(numeric)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise LiveInputError(
            source, i, "horizon_min", f"not a positive whole number of minutes: {values.iloc[i]!r}"
        )
    return pd.Series(numeric.astype("int64"), index=values.index)


def candle_spans(counts: pd.Series | np.ndarray, interval: str = "1m") -> pd.TimedeltaIndex:
    """Whole numbers of candles (e.g. horizons) as a timedelta index: ``h * interval``, vectorized."""
    step_ns = int(interval_timedelta(interval).value)
    return pd.to_timedelta(np.asarray(counts, dtype="int64") * step_ns, unit="ns")
