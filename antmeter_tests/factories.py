"""Small synthetic inputs for unit tests: random-walk candles, hourly sentiment, custom features."""

from __future__ import annotations

import numpy as np
import pandas as pd


def random_walk_candles(
    n: int = 3000,
    start: str = "2024-01-01 00:00",
    seed: int = 0,
    price: float = 100.0,
    step_vol: float = 2e-3,
    flat_runs: bool = False,
) -> pd.DataFrame:
    """A canonical candle frame of ``n`` consecutive minutes following a geometric random walk.

    With ``flat_runs`` a few stretches have constant prices and zero volume (degenerate windows).
    """
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0.0, step_vol, n)))
    open_ = np.empty(n)
    open_[0] = price
    open_[1:] = close[:-1] * np.exp(rng.normal(0.0, step_vol / 10, n - 1))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, step_vol / 2, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, step_vol / 2, n)))
    volume = rng.lognormal(3.0, 1.0, n)
    if flat_runs:
        for begin in range(n // 5, n, n // 4):
            stop = min(begin + 80, n)
            level = close[begin - 1]
            open_[begin:stop] = high[begin:stop] = low[begin:stop] = close[begin:stop] = level
            volume[begin:stop] = 0.0
    times = pd.date_range(start, periods=n, freq="min", tz="UTC").as_unit("ns")
    return pd.DataFrame(
        {"open_time": times, "open": open_, "high": high, "low": low, "close": close, "volume": volume}
    )


def hourly_sentiment(start: str, hours: int, seed: int = 0, symbol: str = "BTCUSDT") -> pd.DataFrame:
    """Hourly sentiment rows in the harvester's shape; roughly a third of the hours have no row."""
    rng = np.random.default_rng(seed)
    stamps = pd.date_range(start, periods=hours, freq="h", tz="UTC").as_unit("ns")
    keep = rng.random(hours) > 0.33
    count = rng.integers(1, 20, hours)
    positive = rng.uniform(0.0, 0.6, hours)
    return pd.DataFrame(
        {
            "symbol": symbol,
            "hour": stamps,
            "mean_sentiment": rng.uniform(-1.0, 1.0, hours),
            "article_count": count,
            "positive_share": positive,
            "negative_share": rng.uniform(0.0, 1.0 - positive),
        }
    )[keep].reset_index(drop=True)


# Custom feature functions referenced by dotted path in the feature tests.


def spread_feature(candles: pd.DataFrame) -> pd.DataFrame:
    """High-low spread relative to the close, and its 5-candle mean."""
    spread = (candles["high"] - candles["low"]) / candles["close"]
    return pd.DataFrame(
        {"spread_rel": spread, "spread_rel_mean_5": spread.rolling(5).mean()}, index=candles.index
    )


spread_feature.lookback_minutes = 4


def short_feature(candles: pd.DataFrame) -> pd.DataFrame:
    """Wrong: one row too few."""
    return pd.DataFrame({"short": candles["close"].to_numpy()[1:]})


def shifted_index_feature(candles: pd.DataFrame) -> pd.DataFrame:
    """Wrong: right length, index shifted by one."""
    return pd.DataFrame({"shifted": candles["close"].to_numpy()}, index=candles.index + 1)


def colliding_feature(candles: pd.DataFrame) -> pd.DataFrame:
    """Wrong: reuses a built-in column name."""
    return pd.DataFrame({"rsi_14": candles["close"]}, index=candles.index)


def not_a_frame_feature(candles: pd.DataFrame) -> pd.Series:
    """Wrong: returns a Series."""
    return candles["close"]


NOT_CALLABLE = 42
