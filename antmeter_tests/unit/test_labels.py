"""antmeter.features.labels: forward returns by time, tie rule, flat bands, gaps, partitions, class balance."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from antmeter.features import labels as L
from antmeter.market.candles import CandleValidationError
from antmeter_tests.factories import random_walk_candles


def candles_with_closes(closes: list[float], start: str = "2024-01-01 00:00") -> pd.DataFrame:
    frame = random_walk_candles(len(closes), start=start)
    frame["close"] = closes
    frame["open"] = frame["high"] = frame["low"] = frame["close"]
    return frame


def test_forward_returns_and_newest_rows_missing():
    candles = random_walk_candles(500, seed=3)
    labels = L.compute_labels(candles)
    assert list(labels.columns) == ["open_time", *L.label_columns()]
    close = candles["close"].to_numpy()
    for h in (5, 10, 30):
        expected = np.log(close[h:] / close[:-h])
        np.testing.assert_allclose(labels[f"fwd_return_{h}"].to_numpy()[:-h], expected, rtol=1e-12)
        assert labels[f"fwd_return_{h}"].iloc[-h:].isna().all()
        assert labels[f"up_{h}"].iloc[-h:].isna().all() and labels[f"direction3_{h}"].iloc[-h:].isna().all()
        assert labels[f"up_{h}"].dtype == "Int8" and labels[f"direction3_{h}"].dtype == "Int8"
        up = labels[f"up_{h}"].to_numpy(dtype=float, na_value=np.nan)[:-h]
        np.testing.assert_array_equal(up, (expected > 0).astype(float))


def test_zero_return_is_not_up_and_band_edges_are_flat():
    closes = [100.0, 100.0, 100.02, 99.0, 50.0, 50.0]
    edge = math.log(100.02 / 100.0)
    bps = edge * 10_000
    while bps / 10_000 != edge:  # a band that equals the 100 -> 100.02 return exactly
        bps = np.nextafter(bps, np.inf if bps / 10_000 < edge else -np.inf)
    labels = L.compute_labels(candles_with_closes(closes), L.LabelConfig(horizons=(1,), flat_band_bps=bps))
    assert labels["fwd_return_1"].iloc[0] == 0.0
    assert labels["up_1"].iloc[0] == 0 and labels["direction3_1"].iloc[0] == 1  # tie rule: zero is not up
    assert labels["fwd_return_1"].iloc[1] == edge
    assert labels["up_1"].iloc[1] == 1 and labels["direction3_1"].iloc[1] == 1  # on the band edge: flat
    assert labels["up_1"].iloc[2] == 0 and labels["direction3_1"].iloc[2] == 0
    assert labels["direction3_1"].iloc[3] == 0 and labels["direction3_1"].iloc[4] == 1
    narrower = L.compute_labels(
        candles_with_closes(closes), L.LabelConfig(horizons=(1,), flat_band_bps=bps * 0.999)
    )
    assert narrower["direction3_1"].iloc[1] == 2
    assert pd.isna(labels["up_1"].iloc[5]) and pd.isna(labels["direction3_1"].iloc[5])


def test_missing_minute_inside_horizon_leaves_label_missing_and_counts_a_gap():
    candles = random_walk_candles(120, seed=1).drop(index=[50]).reset_index(drop=True)
    config = L.LabelConfig(horizons=(5,))
    labels = L.compute_labels(candles, config)
    minutes = ((candles["open_time"] - candles["open_time"].iloc[0]).dt.total_seconds() // 60).to_numpy()
    affected = (minutes >= 45) & (minutes < 50)  # horizon (t, t + 5] contains minute 50
    assert labels["fwd_return_5"][affected].isna().all() and labels["up_5"][affected].isna().all()
    row_51 = int(np.flatnonzero(minutes == 51)[0])  # labelled by time: 51 -> 56, not by position
    close = candles.set_index(minutes)["close"]
    assert labels["fwd_return_5"].iloc[row_51] == pytest.approx(math.log(close[56] / close[51]))
    row_44 = int(np.flatnonzero(minutes == 44)[0])
    assert labels["fwd_return_5"].iloc[row_44] == pytest.approx(math.log(close[49] / close[44]))
    coverage = L.label_coverage(candles, config)
    assert coverage == {"labelled_5": 119 - 5 - 5, "pending_5": 5, "gap_5": 5}


def test_volatility_band_uses_only_past_returns():
    candles = random_walk_candles(400, seed=9)
    config = L.LabelConfig(horizons=(10,), flat_band_vol_mult=0.7, vol_window=30)
    labels = L.compute_labels(candles, config)
    log_close = np.log(candles["close"].to_numpy())
    returns = np.diff(log_close)
    t = 200
    sigma = np.std(returns[t - 30 : t], ddof=1)  # the 30 returns ending at candle t
    band = 0.7 * sigma * math.sqrt(10)
    forward = log_close[t + 10] - log_close[t]
    expected = 2 if forward > band else (0 if forward < -band else 1)
    assert labels["direction3_10"].iloc[t] == expected
    assert (
        labels["direction3_10"].iloc[:30].isna().all() and labels["direction3_10"].iloc[30:390].notna().all()
    )
    # A shock after t + h changes no label at or before t (labels only see their own horizon).
    shocked = candles.copy()
    shocked.loc[t + 11 :, "close"] = shocked.loc[t + 11 :, "close"] * 1.5
    relabelled = L.compute_labels(shocked, config)
    pd.testing.assert_frame_equal(relabelled.iloc[: t + 1], labels.iloc[: t + 1])
    # ...while the band moves once the shock is in the past.
    assert not relabelled["direction3_10"].iloc[t + 11 :].equals(labels["direction3_10"].iloc[t + 11 :])
    # Making the band huge turns every labelled row flat.
    wide = L.compute_labels(candles, L.LabelConfig(horizons=(10,), flat_band_vol_mult=1e6, vol_window=30))
    assert (wide["direction3_10"].dropna() == 1).all()


def test_label_partition_uses_the_next_days_first_candles(caplog):
    candles = random_walk_candles(1440 + 60, start="2024-01-01 00:00", seed=4)
    day_start, day_end = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-02", tz="UTC")
    config = L.LabelConfig(horizons=(5, 30))
    with_next = L.label_partition(candles, day_start, day_end, config)
    assert len(with_next) == 1440 and with_next["open_time"].iloc[-1] == pd.Timestamp(
        "2024-01-01 23:59", tz="UTC"
    )
    assert with_next["fwd_return_30"].notna().all()
    np.testing.assert_allclose(
        with_next["fwd_return_30"].iloc[-1],
        math.log(candles["close"].iloc[1439 + 30] / candles["close"].iloc[1439]),
    )
    with caplog.at_level(logging.INFO, logger="antmeter.features.labels"):
        alone = L.label_partition(candles.iloc[:1440], day_start, day_end, config)
    assert alone["fwd_return_30"].iloc[-30:].isna().all() and alone["fwd_return_30"].iloc[:-30].notna().all()
    assert any("pending_30" in r.getMessage() for r in caplog.records)
    assert L.label_coverage(candles.iloc[:1440], config, day_start, day_end)["pending_30"] == 30


def test_class_balance_counts_and_shares():
    closes = [100.0, 101.0, 101.0, 100.0, 102.0, 102.0]
    labels = L.compute_labels(candles_with_closes(closes), L.LabelConfig(horizons=(1,), flat_band_bps=2.0))
    balance = L.class_balance(labels)
    # Returns: +, 0, -, +, 0 -> up 2 of 5; down 1, flat 2, up 2.
    assert balance["up_1_count"] == 5 and balance["up_1_share"] == pytest.approx(0.4)
    assert balance["direction3_1_count"] == 5
    assert balance["direction3_1_down_share"] == pytest.approx(0.2)
    assert balance["direction3_1_flat_share"] == pytest.approx(0.4)
    assert balance["direction3_1_up_share"] == pytest.approx(0.4)
    empty = L.class_balance(L.compute_labels(candles_with_closes([100.0]), L.LabelConfig(horizons=(1,))))
    assert empty["up_1_count"] == 0 and empty["up_1_share"] is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"horizons": ()}, "at least one"),
        ({"horizons": (5, 0)}, "horizons"),
        ({"horizons": (5, 5)}, "duplicate"),
        ({"flat_band_bps": -1.0}, "flat_band_bps"),
        ({"flat_band_vol_mult": float("nan")}, "flat_band_vol_mult"),
        ({"vol_window": 1}, "vol_window"),
    ],
)
def test_bad_label_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        L.LabelConfig(**kwargs)


def test_bad_candles_are_rejected():
    candles = random_walk_candles(20)
    candles.loc[7, "close"] = -1.0
    with pytest.raises(CandleValidationError, match="row 7, field 'close'"):
        L.compute_labels(candles)
    shuffled = random_walk_candles(20).iloc[::-1].reset_index(drop=True)
    with pytest.raises(CandleValidationError, match="row 1, field 'open_time'"):
        L.compute_labels(shuffled)


def test_empty_and_single_candle_frames():
    for rows in (0, 1):
        candles = random_walk_candles(max(rows, 1)).iloc[:rows]
        labels = L.compute_labels(candles)
        assert len(labels) == rows and labels["fwd_return_5"].isna().all()
        assert L.label_coverage(candles)["pending_5"] == rows


@pytest.mark.parametrize(
    "interval, step",
    [("1m", "1min"), ("5m", "5min"), ("15m", "15min"), ("1h", "1h"), ("4h", "4h"), ("1d", "1D")],
)
def test_horizons_count_candles_of_the_interval(interval, step):
    """On 5m / 1h candles a horizon of h means h candles later; a missing candle is a gap, off-grid
    open times are refused naming the interval."""
    times = pd.date_range("2024-01-01", periods=40, freq=step, tz="UTC")
    close = np.exp(np.cumsum(np.random.default_rng(3).normal(0, 1e-3, len(times)))) * 100
    candles = pd.DataFrame({"open_time": times, "close": close})
    config = L.LabelConfig(horizons=(2, 7), interval=interval)
    labels = L.compute_labels(candles, config)
    np.testing.assert_allclose(labels["fwd_return_7"][:-7], np.log(close[7:] / close[:-7]))
    assert labels["fwd_return_7"][-7:].isna().all()
    gappy = L.compute_labels(candles.drop(index=20).reset_index(drop=True), config)
    assert gappy["up_2"].isna().sum() == 2 + 2  # two rows span the missing candle, two are pending
    if interval != "1m":
        shifted = candles.assign(open_time=candles["open_time"] + pd.Timedelta(minutes=1))
        with pytest.raises(CandleValidationError, match=f"not on the {interval} grid"):
            L.compute_labels(shifted, config)
    with pytest.raises(ValueError, match="unsupported candle interval '7m'"):
        L.LabelConfig(interval="7m")
