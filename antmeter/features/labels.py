"""Leakage-free forward-return labels for minute candles.

For a candle keyed ``t`` and a horizon ``h`` (minutes):

* ``fwd_return_{h}`` = ``log(close[t + h] / close[t])``; it needs only the candle's own future and
  is known at ``t + (h + 1) min``.
* ``up_{h}`` = 1 when the forward return is ``> 0`` and 0 otherwise. **Tie rule:** a zero return is
  *not up* (0).
* ``direction3_{h}`` = 0 (down), 1 (flat) or 2 (up): flat when ``|fwd_return| <= band`` (the band's
  edges count as flat). The band is ``flat_band_bps / 10_000`` (in log-return units) or, with
  ``flat_band_vol_mult``, ``flat_band_vol_mult * sigma_t * sqrt(h)`` where ``sigma_t`` is the sample
  standard deviation of the ``vol_window`` one-minute log returns ending at ``t`` - the past only,
  known at ``t + 1 min``; rows without ``vol_window`` consecutive past returns get no direction3.

Labels are found **by time**: a row is labelled only when every minute of ``(t, t + h]`` has a
candle. A missing minute inside the horizon leaves the label missing and is counted as a *gap*; rows
whose horizon runs past the last candle given are *pending* (the newest rows). Missing labels are
NaN (returns) and ``<NA>`` (the nullable ``Int8`` classes).

Other candle intervals (``LabelConfig.interval``, e.g. ``5m``, ``1h``): read "minute" above as "candle of
the interval" — horizons and ``vol_window`` count candles, so ``h = 7`` on ``1d`` candles is a 7-day label.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from antmeter.features.indicators import rolling_mean_std
from antmeter.market.candles import CandleValidationError, interval_timedelta

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelConfig:
    """Horizons (minutes) and the flat band of the 3-class label (see the module docstring)."""

    horizons: tuple[int, ...] = (5, 10, 30)
    flat_band_bps: float = 2.0
    flat_band_vol_mult: float | None = None
    vol_window: int = 60
    interval: str = "1m"  # candle interval; horizons and vol_window count candles of it

    def __post_init__(self) -> None:
        interval_timedelta(self.interval)  # ValueError naming the unsupported interval
        horizons = tuple(self.horizons)
        if not horizons:
            raise ValueError("LabelConfig.horizons must name at least one horizon")
        for h in horizons:
            if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
                raise ValueError(f"LabelConfig.horizons: horizons must be integers >= 1, got {h!r}")
        if len(set(horizons)) != len(horizons):
            raise ValueError(f"LabelConfig.horizons: duplicate horizons in {horizons!r}")
        object.__setattr__(self, "horizons", tuple(int(h) for h in horizons))
        if not (math.isfinite(self.flat_band_bps) and self.flat_band_bps >= 0):
            raise ValueError(
                f"LabelConfig.flat_band_bps must be a finite number >= 0, got {self.flat_band_bps!r}"
            )
        if self.flat_band_vol_mult is not None and not (
            math.isfinite(self.flat_band_vol_mult) and self.flat_band_vol_mult >= 0
        ):
            raise ValueError(
                "LabelConfig.flat_band_vol_mult must be None or a finite number >= 0, "
                f"got {self.flat_band_vol_mult!r}"
            )
        if (
            isinstance(self.vol_window, bool)
            or not isinstance(self.vol_window, (int, np.integer))
            or self.vol_window < 2
        ):
            raise ValueError(f"LabelConfig.vol_window must be an integer >= 2, got {self.vol_window!r}")


def label_columns(config: LabelConfig = LabelConfig()) -> list[str]:
    """The label columns :func:`compute_labels` returns after ``open_time``."""
    return [f"{name}_{h}" for h in config.horizons for name in ("fwd_return", "up", "direction3")]


def _minutes(candles: pd.DataFrame, source: str, interval: str = "1m") -> tuple[np.ndarray, np.ndarray]:
    """Open times as integer counts of the candle interval (minutes for ``1m``) and closes as float64,
    checked (increasing, on the interval's grid, finite)."""
    step_ns = int(interval_timedelta(interval).value)
    for column in ("open_time", "close"):
        if column not in candles.columns:
            raise CandleValidationError(source, "-", column, "missing column")
    times = candles["open_time"]
    if not isinstance(times.dtype, pd.DatetimeTZDtype):
        raise CandleValidationError(
            source, "-", "open_time", f"must be timezone-aware UTC, got {times.dtype}"
        )
    ns = pd.DatetimeIndex(times).as_unit("ns").asi8
    bad = np.flatnonzero(ns % step_ns != 0)
    if bad.size:
        raise CandleValidationError(
            source, int(bad[0]), "open_time", f"{times.iloc[int(bad[0])]} is not on the {interval} grid"
        )
    bad = np.flatnonzero(np.diff(ns) <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise CandleValidationError(
            source, i, "open_time", f"{times.iloc[i]} does not follow {times.iloc[i - 1]}"
        )
    close = candles["close"].to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(close) | (close <= 0))
    if bad.size:
        i = int(bad[0])
        raise CandleValidationError(source, i, "close", f"not a positive finite price: {close[i]!r}")
    return ns // step_ns, close


def _horizon_complete(minutes: np.ndarray, h: int) -> np.ndarray:
    """True where the candle ``h`` rows later is exactly ``h`` minutes later (no minute missing)."""
    complete = np.zeros(minutes.shape[0], dtype=bool)
    if minutes.shape[0] > h:
        complete[:-h] = minutes[h:] - minutes[:-h] == h
    return complete


def _past_volatility(minutes: np.ndarray, log_close: np.ndarray, window: int) -> np.ndarray:
    """Sample std of the ``window`` one-minute log returns ending at each row (NaN across gaps)."""
    returns = np.full(log_close.shape[0], np.nan)
    one_minute = np.diff(minutes) == 1
    returns[1:] = np.where(one_minute, np.diff(log_close), np.nan)
    return rolling_mean_std(returns, window, ddof=1)[1]


def compute_labels(candles: pd.DataFrame, config: LabelConfig = LabelConfig()) -> pd.DataFrame:
    """``open_time`` and, per horizon, ``fwd_return_{h}``, ``up_{h}`` and ``direction3_{h}``."""
    minutes, close = _minutes(candles, "compute_labels", config.interval)
    n = minutes.shape[0]
    sigma = None
    if config.flat_band_vol_mult is not None:
        sigma = _past_volatility(minutes, np.log(close), config.vol_window)
    out: dict[str, object] = {"open_time": candles["open_time"].reset_index(drop=True)}
    for h in config.horizons:
        complete = _horizon_complete(minutes, h)
        forward = np.full(n, np.nan)
        if n > h:
            forward[:-h] = np.log(close[h:] / close[:-h])
        forward[~complete] = np.nan
        if sigma is None:
            band = np.full(n, config.flat_band_bps / 10_000.0)
        else:
            band = config.flat_band_vol_mult * sigma * math.sqrt(h)
        up = pd.array(np.where(forward > 0, 1, 0), dtype="Int8")
        up[~complete] = pd.NA
        direction = pd.array(np.where(forward > band, 2, np.where(forward < -band, 0, 1)), dtype="Int8")
        direction[~complete | np.isnan(band)] = pd.NA
        out[f"fwd_return_{h}"] = forward
        out[f"up_{h}"] = up
        out[f"direction3_{h}"] = direction
    return pd.DataFrame(out)


def label_coverage(
    candles: pd.DataFrame,
    config: LabelConfig = LabelConfig(),
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> dict[str, int]:
    """Counts over the rows in ``[start, end)`` (all rows by default), per horizon ``h``:
    ``labelled_{h}``, ``gap_{h}`` (a minute of the horizon is missing) and ``pending_{h}`` (the
    horizon runs past the last candle given)."""
    minutes, _ = _minutes(candles, "label_coverage", config.interval)
    times = pd.DatetimeIndex(candles["open_time"])
    lo = 0 if start is None else int(times.searchsorted(pd.Timestamp(start)))
    hi = len(times) if end is None else int(times.searchsorted(pd.Timestamp(end)))
    counts: dict[str, int] = {}
    last = minutes[-1] if minutes.shape[0] else 0
    for h in config.horizons:
        complete = _horizon_complete(minutes, h)[lo:hi]
        pending = (minutes[lo:hi] + h > last) & ~complete
        counts[f"labelled_{h}"] = int(complete.sum())
        counts[f"pending_{h}"] = int(pending.sum())
        counts[f"gap_{h}"] = int((~complete & ~pending).sum())
    return counts


def label_partition(
    candles_for_day_plus_next: pd.DataFrame,
    day_start: pd.Timestamp,
    day_end: pd.Timestamp,
    config: LabelConfig = LabelConfig(),
) -> pd.DataFrame:
    """Labels of the candles in ``[day_start, day_end)``.

    The frame should hold the day and the next day's first candles (at least ``max(horizons)``
    minutes): the day's last rows are labelled from them when present and stay missing (pending)
    otherwise. With ``flat_band_vol_mult`` include the previous day's last ``vol_window`` candles
    too, or the day's first rows get no ``direction3``. Gap and pending counts are logged.
    """
    day_start, day_end = pd.Timestamp(day_start), pd.Timestamp(day_end)
    if day_start.tzinfo is None or day_end.tzinfo is None:
        raise ValueError("label_partition: day_start and day_end must be timezone-aware (UTC)")
    if day_end <= day_start:
        raise ValueError(f"label_partition: day_end {day_end} must be after day_start {day_start}")
    labels = compute_labels(candles_for_day_plus_next, config)
    times = pd.DatetimeIndex(labels["open_time"])
    lo, hi = int(times.searchsorted(day_start)), int(times.searchsorted(day_end))
    coverage = label_coverage(candles_for_day_plus_next, config, day_start, day_end)
    missing = {k: v for k, v in coverage.items() if not k.startswith("labelled_") and v}
    if missing:
        logger.info("labels %s..%s: %d rows, missing labels %s", day_start, day_end, hi - lo, missing)
    return labels.iloc[lo:hi].reset_index(drop=True)


def class_balance(labels: pd.DataFrame) -> dict[str, float | int | None]:
    """Label counts and class shares per horizon, for run metadata.

    Keys per horizon ``h`` found in ``labels``: ``up_{h}_count`` (labelled rows), ``up_{h}_share``;
    ``direction3_{h}_count`` and ``direction3_{h}_{down,flat,up}_share``. Shares of an empty horizon
    are None.
    """
    out: dict[str, float | int | None] = {}
    for column in labels.columns:
        if column.startswith("up_"):
            values = labels[column].dropna().astype(int)
            out[f"{column}_count"] = len(values)
            out[f"{column}_share"] = float(values.mean()) if len(values) else None
        elif column.startswith("direction3_"):
            values = labels[column].dropna().astype(int)
            out[f"{column}_count"] = len(values)
            for code, name in enumerate(("down", "flat", "up")):
                out[f"{column}_{name}_share"] = float((values == code).mean()) if len(values) else None
    return out
