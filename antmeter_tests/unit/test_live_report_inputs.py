"""The report's inputs that make verification fair: P&L entry after the prediction was stored, the
probabilistic live persistence baseline, settings that must agree, and the seed summary of fold metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from antmeter.learn.recipe import RecipeConfig, summarize_seeds
from antmeter.live.policy import RetrainPolicy
from antmeter.live.report import ReportSettings
from antmeter.live.trading import SHARPE_UNIT, book_metrics, tradable_returns
from antmeter.live.verification import add_baselines

T0 = pd.Timestamp("2024-03-01 00:00", tz="UTC")


def closes(n: int = 30) -> pd.DataFrame:
    times = pd.date_range(T0, periods=n, freq="min")
    return pd.DataFrame(
        {"symbol": "BTCUSDT", "open_time": times, "close": 100.0 * np.exp(0.001 * np.arange(n))}
    )


def test_trades_enter_at_the_close_of_the_candle_in_which_the_prediction_was_stored():
    predictions = pd.DataFrame(
        {
            "symbol": ["BTCUSDT", "BTCUSDT"],
            "prediction_time": [T0 + pd.Timedelta(minutes=4)] * 2,
            "created_at": [T0 + pd.Timedelta(minutes=5, seconds=39), T0 + pd.Timedelta(minutes=28)],
            "horizon_min": [5, 5],
        }
    )
    returns = tradable_returns(predictions, closes())
    # candle 00:05 closes after the prediction was stored: log(close[00:10] / close[00:05]) = 5 bps x 1
    assert returns[0] == pytest.approx(0.005) and np.isnan(returns[1])  # exit candle not there
    delayed = tradable_returns(predictions.iloc[:1], closes(), delay_candles=2)
    assert delayed[0] == pytest.approx(0.005)
    with pytest.raises(ValueError, match="delay_candles"):
        tradable_returns(predictions, closes(), delay_candles=-1)


def test_book_metrics_break_down_positions_and_state_the_sharpe_unit():
    metrics = book_metrics(np.array([1, 0, -1, -1]), np.array([0.01, 0.02, -0.01, 0.0]), 10.0, 1000.0)
    assert (metrics["n_long"], metrics["n_flat"], metrics["n_short"]) == (1, 1, 2)
    assert metrics["gross_bps"] == pytest.approx(200.0) and metrics["turnover"] == pytest.approx(4.0)
    assert metrics["net_bps"] == pytest.approx(200.0 - 40.0)
    assert metrics["sharpe_unit"] == SHARPE_UNIT and "annualized" in SHARPE_UNIT


def test_live_persistence_uses_the_training_rates_given_the_sign():
    frame = pd.DataFrame(
        {"symbol": "BTCUSDT", "prediction_time": [T0 + pd.Timedelta(minutes=10)], "horizon_min": [5]}
    )
    rates = {"5": [[0.6, 0.4], [0.5, 0.5], [0.45, 0.55]]}  # down, unchanged, up -> class rates
    out = add_baselines(frame, candles=closes(), persistence_rates=rates)  # rising closes: sign up
    assert out["persistence_prob_up"].iloc[0] == pytest.approx(0.55)
    hard = add_baselines(frame, candles=closes())
    assert hard["persistence_prob_up"].iloc[0] == 1.0  # without rates: the one-hot rule
    with pytest.raises(ValueError, match="3 x 2 rates"):
        add_baselines(frame, candles=closes(), persistence_rates={"5": [[0.5, 0.5]]})


def test_report_settings_must_agree():
    with pytest.raises(ValueError, match="horizon 5 must be the primary horizon 30"):
        ReportSettings(data_dir=Path("."), primary_horizon=30)
    assert ReportSettings(data_dir=Path("."), primary_horizon=30, retrain_policy=RetrainPolicy(horizon=30))
    with pytest.raises(ValueError, match="three_class.*flat_band_bps"):
        ReportSettings(data_dir=Path("."), task="three_class")
    assert ReportSettings(data_dir=Path(".")).lookback == pd.Timedelta(days=3)  # the policy's chart span
    hourly = RetrainPolicy(interval="1h", chart_candles=48, window_candles=24)
    assert ReportSettings(data_dir=Path("."), interval="1h", retrain_policy=hourly).lookback == pd.Timedelta(
        hours=48
    )
    with pytest.raises(ValueError, match="interval '1h' must be the candle interval '1m'"):
        ReportSettings(data_dir=Path("."), retrain_policy=hourly)
    with pytest.raises(ValueError, match="lookback 1 days.*chart span 3 days"):
        ReportSettings(data_dir=Path("."), lookback=pd.Timedelta(days=1))


def test_fold_metrics_summarized_over_seeds():
    rows = [
        {"model": "lstm", "horizon": 5, "metric": "accuracy", "fold": f, "seed": s, "value": v}
        for s, values in ((0, (0.50, 0.54)), (1, (0.56, 0.60)))
        for f, v in enumerate(values)
    ]
    summary = summarize_seeds(pd.DataFrame(rows)).iloc[0]
    assert summary["mean"] == pytest.approx(0.55) and summary["seeds"] == 2
    assert summary["std"] == pytest.approx(np.std([0.52, 0.58], ddof=1))
    with pytest.raises(ValueError, match="seeds"):
        RecipeConfig(model_type="lstm", seeds=())
