"""The attainable ceiling on simulated markets: the simulator's Bayes oracle scored on the same
sample rows as the models and baselines (see ``antmeter.market.simulator.oracle_probability_up``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from antmeter.learn.datasets import SampleSet
from antmeter.market.candles import interval_timedelta
from antmeter.market.simulator import (
    SimulatorConfig,
    aggregate_simulated,
    oracle_probability_up,
    simulate_range,
)

ORACLE = "oracle"


def _candle_states(symbol: str, first, last, config: SimulatorConfig, interval: str) -> pd.DataFrame:
    """The hidden state at each ``interval`` candle's close, indexed by the candle's open time."""
    minutes = simulate_range(symbol, first, last, config)
    return aggregate_simulated(minutes, interval).hidden.set_index("open_time")


def _horizon_minutes(horizon: int, interval: str) -> int:
    """A horizon of ``horizon`` candles in the oracle's minutes."""
    return int(horizon * interval_timedelta(interval) / pd.Timedelta(minutes=1))


def oracle_probabilities(samples: SampleSet, indices: np.ndarray, config: SimulatorConfig) -> np.ndarray:
    """The oracle's P(up) ``[len(indices), H]`` for the samples' rows (state at each sample's candle close)."""
    indices = np.asarray(indices, dtype=np.int64)
    times = pd.DatetimeIndex(samples.sample_time[indices]).tz_localize("UTC")
    out = np.full((len(indices), len(samples.spec.horizons)), np.nan)
    for symbol_id, symbol in enumerate(samples.symbols):
        mine = samples.symbol_id[indices] == symbol_id
        if not mine.any():
            continue
        first, last = times[mine].min().date(), times[mine].max().date()
        interval = samples.spec.interval
        rows = _candle_states(symbol, first, last, config, interval).reindex(times[mine])
        if rows["momentum_fast"].isna().any():
            raise ValueError(f"oracle: {symbol} samples at times the simulator has no state for")
        for h, horizon in enumerate(samples.spec.horizons):
            out[mine, h] = oracle_probability_up(rows.reset_index(), _horizon_minutes(horizon, interval))
    return out


def oracle_metrics(samples: SampleSet, indices: np.ndarray, config: SimulatorConfig) -> pd.DataFrame:
    """Tidy rows (model ``oracle``, horizon, metric ``accuracy``, value) of the oracle's direction call
    on ``indices``, against the same labels the models are scored on (binary task only)."""
    if samples.spec.n_classes != 2:
        raise ValueError(f"the oracle ceiling is defined for the binary task, not {samples.spec.task!r}")
    indices = np.asarray(indices, dtype=np.int64)
    proba = oracle_probabilities(samples, indices, config)
    truth = samples.y_class[indices]
    return pd.DataFrame(
        [
            {
                "model": ORACLE,
                "horizon": int(horizon),
                "metric": "accuracy",
                "value": float(np.mean((proba[:, h] > 0.5).astype(int) == truth[:, h])),
            }
            for h, horizon in enumerate(samples.spec.horizons)
        ]
    )


def oracle_accuracy_of_rows(rows: pd.DataFrame, config: SimulatorConfig, interval: str = "1m") -> pd.Series:
    """Per row, whether the oracle's direction call was right: ``rows`` has ``symbol``, ``open_time``
    (the candle the call is made at the close of), ``horizon_min`` (candles of ``interval``) and
    ``realized_up`` (0/1)."""
    correct = pd.Series(np.nan, index=rows.index)
    for symbol, group in rows.groupby("symbol"):
        times = pd.DatetimeIndex(group["open_time"])
        hidden = _candle_states(str(symbol), times.min().date(), times.max().date(), config, interval)
        states = hidden.reindex(times).reset_index()
        for horizon in group["horizon_min"].unique():
            mine = (group["horizon_min"] == horizon).to_numpy()
            call_up = oracle_probability_up(states[mine], _horizon_minutes(int(horizon), interval)) > 0.5
            correct[group.index[mine]] = (
                call_up == group["realized_up"].to_numpy()[mine].astype(bool)
            ).astype(float)
    return correct


def oracle_correct_of_verified(
    verified: pd.DataFrame, config: SimulatorConfig, interval: str = "1m"
) -> pd.Series:
    """Per verified prediction row (``symbol``, ``prediction_time``, ``horizon_min``,
    ``realized_class``), whether the oracle's call at the same candle was right (binary task)."""
    rows = verified.assign(
        open_time=verified["prediction_time"], realized_up=verified["realized_class"].astype(int)
    )
    return oracle_accuracy_of_rows(rows, config, interval)
