"""Small synthetic feature+label frames in the column conventions of features.py / labels.py.

Columns: ``close`` (not a feature, for checks). Features: ``log_return_1`` (one-minute log return of close, NaN on the first row), ``signal`` (a persistent
AR(1) series that drives future returns with strength ``signal_strength``) and ``noise_k`` columns. Labels,
computed on the full minute grid by time: ``fwd_return_{h} = close[t + h] / close[t] - 1``, ``up_{h}``
(1 if > 0 else 0) and ``direction3_{h}`` (0 down / 1 flat / 2 up with a ``flat_threshold``), NaN where
``t + h`` lies beyond the data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def synthetic_frame(
    n_rows: int,
    *,
    seed: int = 0,
    start: str = "2024-03-01 00:00",
    horizons: Sequence[int] = (5, 10, 30),
    signal_strength: float = 0.0,
    n_noise: int = 2,
    flat_threshold: float = 2e-4,
) -> pd.DataFrame:
    """A frame of ``n_rows`` consecutive minutes (drop rows afterwards to make gaps)."""
    rng = np.random.default_rng(seed)
    signal = np.empty(n_rows)
    signal[0] = rng.normal()
    shocks = rng.normal(size=n_rows)
    for t in range(1, n_rows):
        signal[t] = 0.95 * signal[t - 1] + np.sqrt(1 - 0.95**2) * shocks[t]
    step = 1e-3 * (signal_strength * np.concatenate([[0.0], signal[:-1]]) + rng.normal(size=n_rows))
    close = 100.0 * np.exp(np.cumsum(step))
    frame = pd.DataFrame(
        {"open_time": pd.date_range(start, periods=n_rows, freq="min", tz="UTC").as_unit("ns")}
    )
    frame["close"] = close
    frame["log_return_1"] = np.concatenate([[np.nan], np.diff(np.log(close))])
    frame["signal"] = signal
    for k in range(n_noise):
        frame[f"noise_{k}"] = rng.normal(size=n_rows)
    for h in horizons:
        forward = np.full(n_rows, np.nan)
        if n_rows > h:
            forward[: n_rows - h] = close[h:] / close[: n_rows - h] - 1.0
        frame[f"fwd_return_{h}"] = forward
        frame[f"up_{h}"] = np.where(np.isnan(forward), np.nan, (forward > 0).astype(float))
        frame[f"direction3_{h}"] = np.select(
            [np.isnan(forward), forward < -flat_threshold, forward > flat_threshold], [np.nan, 0.0, 2.0], 1.0
        )
    return frame


FEATURES = ["log_return_1", "signal", "noise_0", "noise_1"]
