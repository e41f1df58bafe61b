"""Data-quality rules for stored candles, as plain functions (the Dagster checks call these)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from antmeter.market.candles import interval_timedelta, off_grid


@dataclass(frozen=True)
class QualityResult:
    """Outcome of one rule: passed or not, a one-line summary and details for metadata."""

    passed: bool
    summary: str
    details: dict[str, object] = field(default_factory=dict)


def duplicate_open_times(candles: pd.DataFrame) -> QualityResult:
    dups = candles.loc[candles["open_time"].duplicated(keep=False), "open_time"]
    return QualityResult(dups.empty, f"{dups.nunique()} duplicated open times", {"examples": _times(dups)})


def gaps(
    candles: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    interval: str = "1m",
    outages: Sequence[object] = (),
) -> QualityResult:
    """Missing candles in ``[start, end)``: count and where (as runs of missing minutes).

    ``outages`` (e.g. :class:`~antmeter.market.binance.ExchangeOutage`, shown with ``str``) are stretches
    the source confirmed it has no candles for; they are listed so a gap can be told from a lost page.
    """
    step = interval_timedelta(interval)
    expected = pd.date_range(start, end - step, freq=step, tz="UTC") if end > start else pd.DatetimeIndex([])
    missing = expected.difference(pd.DatetimeIndex(candles["open_time"]))
    runs = _runs(missing, step)
    summary = f"{len(missing)} missing candles in {len(runs)} gap(s)"
    if outages:
        summary += f"; {len(outages)} confirmed exchange outage(s)"
    return QualityResult(
        len(missing) == 0,
        summary,
        {
            "missing": len(missing),
            "gaps": [f"{a} .. {b}" for a, b in runs[:20]],
            "exchange_outages": [str(o) for o in outages[:20]],
        },
    )


def off_grid_open_times(candles: pd.DataFrame, interval: str = "1m") -> QualityResult:
    """Candles whose open time is not on the interval grid (e.g. stored before the grid was enforced)."""
    bad = candles.loc[off_grid(candles, interval).to_numpy(), "open_time"]
    return QualityResult(bad.empty, f"{len(bad)} candles off the {interval} grid", {"examples": _times(bad)})


def ohlc_violations(candles: pd.DataFrame) -> QualityResult:
    lo = candles[["open", "close"]].min(axis=1)
    hi = candles[["open", "close"]].max(axis=1)
    bad = candles.loc[(candles["low"] > lo) | (candles["high"] < hi) | (candles["low"] > candles["high"])]
    return QualityResult(
        bad.empty, f"{len(bad)} candles with inconsistent OHLC", {"examples": _times(bad["open_time"])}
    )


def negative_volume(candles: pd.DataFrame) -> QualityResult:
    bad = candles.loc[candles["volume"] < 0]
    return QualityResult(
        bad.empty, f"{len(bad)} candles with negative volume", {"examples": _times(bad["open_time"])}
    )


def missing_values(candles: pd.DataFrame) -> QualityResult:
    values = candles[["open", "high", "low", "close", "volume"]].to_numpy(dtype="float64")
    bad = ~np.isfinite(values).all(axis=1)
    return QualityResult(
        not bad.any(),
        f"{int(bad.sum())} candles with NaN/inf",
        {"examples": _times(candles.loc[bad, "open_time"])},
    )


def staleness(
    candles: pd.DataFrame, now: pd.Timestamp, max_age_minutes: float, interval: str = "1m"
) -> QualityResult:
    """The newest candle must have closed no more than ``max_age_minutes`` before ``now``."""
    if candles.empty:
        return QualityResult(False, "no candles at all", {"age_minutes": None})
    newest_close = candles["open_time"].max() + interval_timedelta(interval)
    age = (now - newest_close).total_seconds() / 60.0
    return QualityResult(
        age <= max_age_minutes,
        f"newest candle closed {age:.1f} min ago (limit {max_age_minutes})",
        {"age_minutes": round(age, 2), "newest_close": str(newest_close)},
    )


def _times(values: pd.Series) -> list[str]:
    return [str(v) for v in values.drop_duplicates().head(10)]


def _runs(missing: pd.DatetimeIndex, step: pd.Timedelta) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    runs: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    for t in missing:
        if runs and t - runs[-1][1] == step:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    return runs
