"""Long/flat/short P&L on hand-computed series: fees, non-overlap, buy-and-hold, baselines, Sharpe."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from antmeter.live.trading import MINUTES_PER_YEAR, long_flat_short_pnl, positions_from_probabilities

T0 = pd.Timestamp("2024-03-01 00:00", tz="UTC")


def series(prob_up, realized, horizon=1, step=None, **extra) -> pd.DataFrame:
    step = horizon if step is None else step
    times = pd.date_range(T0, periods=len(prob_up), freq=f"{step}min")
    return pd.DataFrame(
        {
            "prediction_time": times,
            "horizon_min": horizon,
            "prob_up": prob_up,
            "realized_return": realized,
            **extra,
        }
    )


def test_hand_computed_fees_are_subtracted_exactly():
    frame = series([0.9, 0.1, 0.9, 0.9], [0.01, -0.01, 0.01, 0.01])
    summary, periods = long_flat_short_pnl(frame, fee_bps=10.0)
    s = summary["strategy"]
    assert periods["position"].tolist() == [1, -1, 1, 1]
    assert s["gross_bps"] == pytest.approx(400.0)
    # sides: enter long 1, long->short 2, short->long 2, hold 0, final close 1 = 6 sides x 10 bps
    assert s["fees_bps"] == pytest.approx(60.0)
    assert s["net_bps"] == pytest.approx(340.0)
    assert s["turnover"] == pytest.approx(6.0)
    assert periods["fee"].tolist() == pytest.approx(
        [0.001, 0.002, 0.002, 0.001]
    )  # close charged on the last period
    assert s["hit_rate"] == 1.0 and s["n_trades"] == 4 and s["n_long"] == 3 and s["n_short"] == 1
    bh = summary["buy_and_hold"]
    assert bh["gross_bps"] == pytest.approx(200.0) and bh["fees_bps"] == pytest.approx(20.0)
    assert periods["buy_and_hold_cum_net_return"].iloc[-1] == pytest.approx(0.018)


def test_perfect_predictor_beats_buy_and_hold_before_fees():
    rng = np.random.default_rng(5)
    moves = rng.normal(0.0, 0.002, 300)
    summary, _ = long_flat_short_pnl(series(np.where(moves > 0, 0.99, 0.01), moves), fee_bps=0.0)
    assert summary["strategy"]["net_bps"] == pytest.approx(np.abs(moves).sum() * 1e4)
    assert summary["strategy"]["net_bps"] > summary["buy_and_hold"]["net_bps"]
    assert summary["strategy"]["sharpe"] > summary["buy_and_hold"]["sharpe"]


def test_with_taker_fees_tiny_moves_lose_even_when_perfect():
    moves = np.tile([0.0002, -0.0002], 50)  # +-2 bps per period, every call right
    summary, _ = long_flat_short_pnl(series(np.where(moves > 0, 0.99, 0.01), moves), fee_bps=10.0)
    s = summary["strategy"]
    assert s["hit_rate"] == 1.0 and s["gross_bps"] == pytest.approx(200.0)
    assert s["fees_bps"] == pytest.approx((1 + 2 * 99 + 1) * 10.0)  # flips every period
    assert s["net_bps"] == pytest.approx(200.0 - 2000.0)
    assert s["net_bps"] < summary["buy_and_hold"]["net_bps"] < 0  # buy-and-hold only pays 20 bps


def test_non_overlapping_grid_uses_one_prediction_per_horizon():
    prob = np.where(np.arange(20) % 5 == 0, 0.9, 0.1)  # only the grid minutes say "long"
    frame = series(prob, np.full(20, 0.001), horizon=5, step=1)
    summary, periods = long_flat_short_pnl(frame, fee_bps=10.0)
    assert summary["n_periods"] == 4 and periods["position"].tolist() == [1, 1, 1, 1]
    assert summary["strategy"]["net_bps"] == pytest.approx(4 * 10.0 - 2 * 10.0)
    _, periods = long_flat_short_pnl(frame, fee_bps=10.0, phase=2)
    assert periods["position"].tolist() == [-1, -1, -1, -1]  # minutes 2, 7, 12, 17


def test_the_grid_counts_candles_of_the_interval():
    """Hourly predictions with a 5-candle horizon hold five hours: one decision every fifth candle."""
    prob = np.where(np.arange(20) % 5 == 0, 0.9, 0.1)
    frame = series(prob, np.full(20, 0.001), horizon=5, step=60)
    phase = int(T0.timestamp() // 3600) % 5  # the grid is anchored to the epoch
    summary, periods = long_flat_short_pnl(frame, fee_bps=10.0, interval="1h", phase=phase)
    assert summary["n_periods"] == 4 and periods["position"].tolist() == [1, 1, 1, 1]
    assert summary["periods_per_year"] == pytest.approx(MINUTES_PER_YEAR / 300)
    assert (periods["prediction_time"].diff().dropna() == pd.Timedelta(hours=5)).all()
    with pytest.raises(ValueError, match="on the 4h grid"):
        long_flat_short_pnl(frame, fee_bps=10.0, interval="4h")


def test_threshold_missing_period_and_sharpe_annualization():
    frame = series([0.9, 0.52, 0.9, 0.9, 0.2], [0.002, 0.003, np.nan, 0.001, -0.004])
    frame = frame.drop(index=3)  # no prediction at the 4th period either
    summary, periods = long_flat_short_pnl(frame, fee_bps=5.0, threshold=0.05)
    # periods: long, flat (0.52 inside the band), unknown outcome -> flat, missing -> flat, short
    assert periods["position"].tolist() == [1, 0, 0, 0, -1]
    assert summary["n_periods"] == 5 and summary["n_periods_unknown"] == 2
    net = periods["net_return"].to_numpy()
    # 5 bps on entering the long, on closing it, on entering the short and on the final close
    assert net.tolist() == pytest.approx([0.002 - 0.0005, -0.0005, 0, 0, 0.004 - 0.001])
    assert summary["strategy"]["sharpe"] == pytest.approx(
        net.mean() / net.std(ddof=1) * np.sqrt(MINUTES_PER_YEAR)
    )


def test_baseline_probabilities_go_through_the_same_rule_and_realized_join():
    preds = series([0.9, 0.9, 0.9], [np.nan] * 3, persistence_prob_up=[0.0, 1.0, 0.0]).drop(
        columns="realized_return"
    )
    realized = preds[["prediction_time", "horizon_min"]].assign(realized_return=[-0.001, 0.002, 0.003])
    summary, _ = long_flat_short_pnl(preds, realized, fee_bps=0.0)
    assert summary["strategy"]["net_bps"] == pytest.approx(40.0)
    assert summary["baselines"]["persistence"]["net_bps"] == pytest.approx(10.0 + 20.0 - 30.0)


def test_bad_input():
    with pytest.raises(ValueError, match="several symbol"):
        long_flat_short_pnl(series([0.9, 0.9], [0.1, 0.1], symbol=["A", "B"]))
    with pytest.raises(ValueError, match="threshold"):
        long_flat_short_pnl(series([0.9], [0.1]), threshold=0.6)
    with pytest.raises(ValueError, match="horizon"):
        long_flat_short_pnl(series([0.9], [0.1]).drop(columns="horizon_min"))
    assert positions_from_probabilities(np.array([0.7, 0.5, np.nan, 0.2]), 0.1).tolist() == [1, 0, 0, -1]
