"""A simple long/flat/short rule on predicted P(up), after fees, next to buy-and-hold and baselines.

Rule: at each decision time go long when ``P(up) > 0.5 + threshold``, short when
``P(up) < 0.5 - threshold``, else flat, and hold for the horizon ``h``. Positions do not overlap:
decisions are taken only at prediction times on the grid ``minutes since the Unix epoch = phase
(mod h)`` (anchored to the epoch, so a replay and the live system trade the same minutes whatever
their start); the other predictions are ignored. (An alternative is to run the ``h`` phase-shifted
books and average them; call this function with ``phase = 0 .. h-1`` and average the results.)

Accounting, in log-return units of the traded notional:

* period return ``position * log(close[t+h] / close[t])`` (a short earns the negative log return,
  the usual small-move approximation);
* fees: ``fee_bps / 1e4`` per side on every change of position, ``|new - old|`` sides (long to short
  pays two), plus closing any open position after the last period; subtracted exactly;
* a grid period with no prediction, or whose outcome is not known, is flat for every strategy
  (nothing is assumed about an unobserved return);
* Sharpe = mean / std (ddof=1) of the net per-period returns of all grid periods (flat ones count as
  0), annualized by ``sqrt(periods per year)`` with crypto's 24/7 year: ``365 * 24 * 60 / h`` periods
  (:data:`SHARPE_UNIT`, repeated in every summary as ``sharpe_unit``).
* entry: the returns passed in decide when a trade enters; the verification report passes the return
  from the close of the candle after the prediction was *stored* (plus a configurable delay), not from
  the signal candle's close (see :func:`tradable_returns`).

Costs matter: with 10 bps per side a round trip costs 20 bps, more than a typical 5-minute move.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from antmeter.live._frames import horizon_minutes, require_columns, utc_ns
from antmeter.market.candles import interval_timedelta

MINUTES_PER_YEAR = 365 * 24 * 60
SHARPE_UNIT = "annualized: per-period mean/std x sqrt(365*24*60/h), h-minute periods, 24/7 year"
PERIOD_COLUMNS = [
    "prediction_time",
    "prob_up",
    "position",
    "realized_return",
    "gross_return",
    "fee",
    "net_return",
    "cum_net_return",
    "buy_and_hold_cum_net_return",
]
_SINGLE_VALUED = ("symbol", "horizon_min", "model_name", "model_version")


def positions_from_probabilities(prob_up: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """+1 where P(up) > 0.5 + threshold, -1 where P(up) < 0.5 - threshold, else 0 (also for NaN)."""
    p = np.asarray(prob_up, dtype="float64")
    with np.errstate(invalid="ignore"):
        return np.where(p > 0.5 + threshold, 1, np.where(p < 0.5 - threshold, -1, 0)).astype("int64")


def book_returns(positions: np.ndarray, returns: np.ndarray, fee_bps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-period (gross, fee) of a position path; fees on every change and on the final close."""
    pos = np.asarray(positions, dtype="float64")
    gross = pos * np.asarray(returns, dtype="float64")
    changes = np.abs(np.diff(pos, prepend=0.0))
    if len(pos):
        changes[-1] += abs(pos[-1])
    return gross, changes * fee_bps / 1e4


def book_metrics(positions: np.ndarray, returns: np.ndarray, fee_bps: float, periods_per_year: float) -> dict:
    """P&L summary of one position path (see the module docstring for the conventions)."""
    pos = np.asarray(positions, dtype="float64")
    gross, fee = book_returns(pos, returns, fee_bps)
    net = gross - fee
    active = pos != 0
    turnover = float(np.abs(np.diff(pos, prepend=0.0)).sum() + (abs(pos[-1]) if len(pos) else 0.0))
    std = float(np.std(net, ddof=1)) if len(net) > 1 else float("nan")
    return {
        "net_log_return": float(net.sum()),
        "net_bps": float(net.sum() * 1e4),
        "gross_bps": float(gross.sum() * 1e4),
        "fees_bps": float(fee.sum() * 1e4),
        "n_trades": int(active.sum()),
        "n_long": int((pos > 0).sum()),
        "n_short": int((pos < 0).sum()),
        "n_flat": int((pos == 0).sum()),
        "turnover": turnover,
        "hit_rate": float((gross[active] > 0).mean()) if active.any() else float("nan"),
        "exposure": float(active.mean()) if len(pos) else float("nan"),
        "sharpe": float(net.mean() / std * np.sqrt(periods_per_year)) if std > 0 else float("nan"),
        "sharpe_unit": SHARPE_UNIT,
    }


def tradable_returns(
    predictions: pd.DataFrame,
    closes: pd.DataFrame,
    delay_candles: int = 0,
    candle: pd.Timedelta | None = None,
) -> np.ndarray:
    """Log return of a trade on each prediction entered at the close of the candle in which it was
    stored (``created_at``) plus ``delay_candles`` candles, held for its ``horizon_min`` candles; NaN where a
    candle is missing. ``closes`` has ``symbol, open_time, close``."""
    from antmeter.live._frames import candle_closes, lookup_close

    closes = candle_closes(closes)
    require_columns(predictions, ["symbol", "created_at", "horizon_min"], "predictions")
    if delay_candles < 0:
        raise ValueError(f"delay_candles must be >= 0, got {delay_candles}")
    candle = pd.Timedelta(minutes=1) if candle is None else candle
    stored = utc_ns(predictions["created_at"], "created_at", "predictions")
    entry = stored.dt.floor(candle) + delay_candles * candle
    exit_ = entry + pd.to_timedelta(predictions["horizon_min"].astype("int64") * candle.value, unit="ns")
    start = lookup_close(closes, predictions["symbol"], entry)
    end = lookup_close(closes, predictions["symbol"], exit_)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(end / start)


def _single_value(frame: pd.DataFrame, column: str, source: str) -> object:
    values = frame[column].dropna().unique()
    if len(values) > 1:
        raise ValueError(
            f"{source} mixes several {column} values {list(values)[:5]}; pass one series at a time"
        )
    return values[0] if len(values) else None


def long_flat_short_pnl(
    predictions: pd.DataFrame,
    realized: pd.DataFrame | None = None,
    fee_bps: float = 10.0,
    threshold: float = 0.0,
    horizon: int | None = None,
    *,
    prob_column: str = "prob_up",
    baseline_columns: Sequence[str] | None = None,
    phase: int = 0,
    interval: str = "1m",
) -> tuple[dict, pd.DataFrame]:
    """Back-test the long/flat/short rule on one (symbol, horizon, model) prediction series.

    ``predictions`` needs ``prediction_time`` and ``prob_column``; ``realized`` needs ``prediction_time``
    and ``realized_return`` (joined on the key columns both frames have among symbol, prediction_time,
    horizon_min); when ``realized`` is None, ``realized_return`` is read from ``predictions``.
    ``horizon`` (candles of ``interval``) defaults to the frame's single ``horizon_min``; the grid is
    ``phase (mod horizon)`` in candles since the epoch. ``baseline_columns`` are further P(up)
    columns driven through the same rule (default: every ``{baseline}_prob_up`` column present).

    Returns ``(summary, periods)``: ``summary`` has ``horizon_min, fee_bps, threshold, periods_per_year,
    n_periods`` and metric dicts ``strategy``, ``buy_and_hold`` and ``baselines[name]`` (keys of
    :func:`book_metrics`); ``periods`` has :data:`PERIOD_COLUMNS`, one row per grid period.
    """
    if not np.isfinite(fee_bps) or fee_bps < 0:
        raise ValueError(f"fee_bps must be >= 0, got {fee_bps}")
    if not 0 <= threshold < 0.5:
        raise ValueError(f"threshold must be in [0, 0.5), got {threshold}")
    require_columns(predictions, ["prediction_time", prob_column], "predictions")
    preds = predictions.reset_index(drop=True).copy()
    preds["prediction_time"] = utc_ns(preds["prediction_time"], "prediction_time", "predictions")
    for column in _SINGLE_VALUED:
        if column in preds.columns:
            _single_value(preds, column, "predictions")
    if horizon is None:
        if "horizon_min" not in preds.columns or _single_value(preds, "horizon_min", "predictions") is None:
            raise ValueError("horizon is required when predictions have no horizon_min column")
        horizon = int(horizon_minutes(preds["horizon_min"], "predictions").iloc[0])
    if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be a positive whole number of minutes, got {horizon!r}")
    horizon = int(horizon)
    if not 0 <= phase < horizon:
        raise ValueError(f"phase must be in [0, horizon={horizon}), got {phase}")
    if baseline_columns is None:
        baseline_columns = [c for c in preds.columns if c.endswith("_prob_up") and c != prob_column]
    require_columns(preds, baseline_columns, "predictions")

    if realized is not None:
        require_columns(realized, ["prediction_time", "realized_return"], "realized")
        outcomes = realized.reset_index(drop=True).copy()
        outcomes["prediction_time"] = utc_ns(outcomes["prediction_time"], "prediction_time", "realized")
        keys = [
            c
            for c in ("symbol", "prediction_time", "horizon_min")
            if c in preds.columns and c in outcomes.columns
        ]
        preds = preds.drop(columns=["realized_return"], errors="ignore")
        preds = preds.merge(outcomes[[*keys, "realized_return"]], on=keys, how="left", validate="one_to_one")
    require_columns(preds, ["realized_return"], "predictions")
    if preds["prediction_time"].duplicated().any():
        raise ValueError("predictions have duplicate prediction_time values")

    candle = interval_timedelta(interval)
    time_ns = preds["prediction_time"].astype("int64").to_numpy()
    if (time_ns % candle.value).any():
        raise ValueError(f"prediction_time values must be open times on the {interval} grid")
    candle_index = time_ns // candle.value
    on_grid = preds[(candle_index - phase) % horizon == 0].sort_values("prediction_time")
    periods_per_year = MINUTES_PER_YEAR / (horizon * candle / pd.Timedelta(minutes=1))
    if on_grid.empty:
        grid = pd.DatetimeIndex([], tz="UTC")
    else:
        grid = pd.date_range(
            on_grid["prediction_time"].iloc[0], on_grid["prediction_time"].iloc[-1], freq=horizon * candle
        )
    table = on_grid.set_index("prediction_time").reindex(grid)
    returns = table["realized_return"].to_numpy(dtype="float64", na_value=np.nan)
    known = np.isfinite(returns)
    returns = np.where(known, returns, 0.0)

    def positions(column: str) -> np.ndarray:
        return np.where(
            known,
            positions_from_probabilities(table[column].to_numpy("float64", na_value=np.nan), threshold),
            0,
        )

    strategy = positions(prob_column)
    hold = known.astype("int64")
    gross, fee = book_returns(strategy, returns, fee_bps)
    hold_gross, hold_fee = book_returns(hold, returns, fee_bps)
    periods = pd.DataFrame(
        {
            "prediction_time": grid,
            "prob_up": table[prob_column].to_numpy("float64", na_value=np.nan),
            "position": strategy,
            "realized_return": np.where(known, returns, np.nan),
            "gross_return": gross,
            "fee": fee,
            "net_return": gross - fee,
            "cum_net_return": np.cumsum(gross - fee),
            "buy_and_hold_cum_net_return": np.cumsum(hold_gross - hold_fee),
        }
    )
    summary = {
        "horizon_min": horizon,
        "fee_bps": float(fee_bps),
        "threshold": float(threshold),
        "periods_per_year": periods_per_year,
        "n_periods": len(grid),
        "n_periods_unknown": int((~known).sum()),
        "strategy": book_metrics(strategy, returns, fee_bps, periods_per_year),
        "buy_and_hold": book_metrics(hold, returns, fee_bps, periods_per_year),
        "baselines": {
            c.removesuffix("_prob_up"): book_metrics(positions(c), returns, fee_bps, periods_per_year)
            for c in baseline_columns
        },
    }
    return summary, periods
