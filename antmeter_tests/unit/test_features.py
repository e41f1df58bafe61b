"""antmeter.features.pipeline: column contract, causality, warm-up by lookback, sentiment as-of, gaps, custom code."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from antmeter.features import pipeline as F
from antmeter.market.candles import CandleValidationError
from antmeter_tests.factories import hourly_sentiment, random_walk_candles

CUSTOM = "antmeter_tests.factories:spread_feature"
CONFIG = F.FeatureConfig(custom=(CUSTOM,))


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return random_walk_candles(3000, start="2024-01-01 12:00", seed=5, flat_runs=True)


@pytest.fixture(scope="module")
def sentiment() -> pd.DataFrame:
    return hourly_sentiment("2024-01-01 00:00", 72, seed=2)


@pytest.fixture(scope="module")
def full(candles, sentiment) -> pd.DataFrame:
    return F.compute_features(candles, CONFIG, sentiment_hourly=sentiment)


def assert_same(a: pd.Series | np.ndarray, b: pd.Series | np.ndarray, column: str) -> None:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert np.array_equal(a, b, equal_nan=True), (
        f"{column} differs at rows {np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))))[:5]}"
    )


def test_columns_dtypes_and_completeness(candles, full):
    columns = F.feature_columns(CONFIG)
    assert list(full.columns) == ["open_time", *columns]
    assert len(full) == len(candles)
    assert full["open_time"].equals(candles["open_time"])
    assert {
        "rsi_14",
        "macd_12_26_9",
        "bb_pctb_20",
        "ema_9_rel",
        "atr_14",
        "adx_14",
        "stoch_d_14_3",
        "obv_60",
    } <= set(columns)
    assert {
        "vwap_60",
        "log_return_60",
        "volatility_15",
        "volume_to_avg_60",
        "dow_cos",
        "sentiment_count_1h",
    } <= set(columns)
    assert {"spread_rel", "spread_rel_mean_5"} <= set(columns)
    values = full[columns].to_numpy(dtype=np.float64)
    assert full[columns].dtypes.eq(np.float64).all()
    assert not np.isinf(values).any(), "features must never be inf (flat and zero-volume stretches included)"
    lookbacks = F.feature_lookbacks(CONFIG)
    for column in columns:
        tail = full[column].to_numpy()[lookbacks[column] :]
        assert np.isfinite(tail).all(), f"{column} has NaN after its {lookbacks[column]}-candle lookback"
        assert lookbacks[column] <= F.required_warmup_candles(CONFIG)
    windowed = set(columns) - set(F.recursive_feature_columns(CONFIG))
    for column in windowed - {"spread_rel", "spread_rel_mean_5"}:
        head = full[column].to_numpy()[: lookbacks[column]]
        assert np.isnan(head).all(), f"{column} has a value before its window is filled"


def test_obv_and_shape_features_are_bounded(full):
    assert full["obv_60"].dropna().between(-1.0, 1.0).all()
    assert full["wick_ratio"].between(0.0, 1.0).all() and full["body_to_range"].between(0.0, 1.0).all()
    assert set(np.unique(full["body_direction"])) <= {-1.0, 0.0, 1.0}
    for column in ("rsi_14", "stoch_k_14", "mfi_14", "adx_14", "plus_di_14", "minus_di_14"):
        assert full[column].dropna().between(0.0, 100.0).all(), column


def test_model_features_are_scale_free(candles, sentiment, full):
    scaled = candles.copy()
    for column in ("open", "high", "low", "close"):
        scaled[column] = scaled[column] * 1000.0
    rescaled = F.compute_features(scaled, CONFIG, sentiment_hourly=sentiment)
    model = F.model_feature_columns(CONFIG)
    levels = set(F.feature_columns(CONFIG)) - set(model)
    assert levels == {
        "macd_12_26_9", "macd_signal_12_26_9", "macd_hist_12_26_9", "bb_upper_20", "bb_lower_20",
        "ema_9", "ema_21", "ema_50", "sma_10", "sma_30", "atr_14", "vwap_60",
    }  # fmt: skip
    for column in model:
        a, b = full[column].to_numpy(), rescaled[column].to_numpy()
        scale = max(np.nanmax(np.abs(a)), 1e-12)
        np.testing.assert_allclose(b, a, rtol=1e-7, atol=1e-9 * scale, err_msg=column)
    np.testing.assert_allclose(rescaled["ema_50"], full["ema_50"] * 1000.0, rtol=1e-12)


def _known_sentiment(sentiment: pd.DataFrame, last_open: pd.Timestamp) -> pd.DataFrame:
    """The sentiment hours completed by the time candle ``last_open`` closes."""
    return sentiment[sentiment["hour"] + pd.Timedelta(hours=1) <= last_open + pd.Timedelta(minutes=1)]


# Seeded random cut points (plus the edges of the warm-up and the last row).
CUTS = sorted({*(int(c) for c in np.random.default_rng(20240102).integers(2, 3000, 4)), 526, 2999})


@pytest.mark.parametrize("cut", CUTS)
def test_appending_future_candles_never_changes_past_values(candles, sentiment, full, cut):
    prefix = candles.iloc[:cut]
    last_open = prefix["open_time"].iloc[-1]
    for hours in (sentiment, _known_sentiment(sentiment, last_open)):
        partial = F.compute_features(prefix, CONFIG, sentiment_hourly=hours)
        for column in full.columns[1:]:
            assert_same(partial[column], full[column].iloc[:cut], column)


def test_partition_equals_full_history(candles, sentiment, full):
    day_start, day_end = pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-03", tz="UTC")
    part = F.compute_partition_features(candles, day_start, day_end, CONFIG, sentiment_hourly=sentiment)
    in_day = (full["open_time"] >= day_start) & (full["open_time"] < day_end)
    reference = full[in_day].reset_index(drop=True)
    assert len(part) == 1440 and part["open_time"].equals(reference["open_time"])
    recursive = set(F.recursive_feature_columns(CONFIG))
    assert {"ema_50", "rsi_14", "atr_14", "adx_14", "macd_signal_12_26_9"} <= recursive
    for column in F.feature_columns(CONFIG):
        if column in recursive:
            # Stated tolerance: history before the warm-up weighs <= 1e-8 of the state's spread.
            scale = np.nanmax(np.abs(reference[column]))
            np.testing.assert_allclose(
                part[column], reference[column], rtol=1e-6, atol=1e-6 * scale, err_msg=column
            )
        else:
            np.testing.assert_allclose(part[column], reference[column], rtol=1e-9, atol=0, err_msg=column)
            assert_same(part[column], reference[column], column)  # windowed: in fact bit for bit


def test_partition_at_start_of_history_drops_and_logs_rows(candles, sentiment, full, caplog):
    warmup = F.required_warmup_candles(CONFIG)
    day_start, day_end = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-02", tz="UTC")
    with caplog.at_level(logging.WARNING, logger="antmeter.features.pipeline"):
        part = F.compute_partition_features(candles, day_start, day_end, CONFIG, sentiment_hourly=sentiment)
    day_rows = 720  # the candles start at 12:00
    assert len(part) == day_rows - warmup
    assert any(f"dropped {warmup} of {day_rows} rows" in r.getMessage() for r in caplog.records)
    assert part["open_time"].iloc[0] == candles["open_time"].iloc[warmup]
    for column in F.feature_columns(CONFIG):
        np.testing.assert_allclose(
            part[column], full[column].iloc[warmup:day_rows], rtol=1e-12, err_msg=column
        )


def test_required_warmup_covers_every_lookback_and_the_tolerance():
    assert F.required_warmup_candles() == 525
    assert F.required_warmup_candles() == max(F.feature_lookbacks().values())
    lookbacks = F.feature_lookbacks()
    # EMA 50: the weight of anything before the warm-up is (1 - 2/51) ** (steps after the window).
    assert (1 - 2 / 51) ** (lookbacks["ema_50"] - 49) <= F.RECURSIVE_TOLERANCE
    assert (1 - 1 / 14) ** (lookbacks["rsi_14"] - 13) <= F.RECURSIVE_TOLERANCE
    windowed_only = F.FeatureConfig(
        rsi_windows=(), macd=None, ema_windows=(), atr_window=None, adx_window=None, include_sentiment=False
    )
    assert F.recursive_feature_columns(windowed_only) == []
    assert F.required_warmup_candles(windowed_only) == 60  # log_return_60, volatility_60, obv_60
    assert F.required_warmup_candles(CONFIG) == 525  # the custom feature's 4 minutes fit inside


def test_sentiment_is_the_last_completed_hour():
    candles = random_walk_candles(240, start="2024-01-01 09:00")
    hourly = pd.DataFrame(
        {
            "symbol": ["BTCUSDT", "BTCUSDT", "BTCUSDT", "ETHUSDT"],
            "hour": pd.to_datetime(
                ["2024-01-01 09:00", "2024-01-01 10:00", "2024-01-01 12:00", "2024-01-01 11:00"], utc=True
            ),
            "mean_sentiment": [0.5, -0.4, 0.1, 0.9],
            "article_count": [3, 2, 1, 7],
            "positive_share": [0.6, 0.1, 0.3, 1.0],
            "negative_share": [0.2, 0.5, 0.1, 0.0],
        }
    )
    frame = F.compute_features(
        candles, F.FeatureConfig(), sentiment_hourly=hourly, symbol="BTCUSDT"
    ).set_index("open_time")

    def at(clock: str) -> list[float]:
        return frame.loc[pd.Timestamp(f"2024-01-01 {clock}", tz="UTC"), F.SENTIMENT_COLUMNS].tolist()

    assert at("09:58") == [0.0, 0.0, 0.0, 0.0]  # hour 09:00 completes at 10:00; candle 09:58 closes 09:59
    assert at("09:59") == [0.5, 3.0, 0.6, 0.2]  # closes at 10:00: hour 09:00 is complete
    assert at("10:58") == [0.5, 3.0, 0.6, 0.2]
    assert at("10:59") == [-0.4, 2.0, 0.1, 0.5]
    assert at("11:59") == [0.0, 0.0, 0.0, 0.0]  # 11:00 had no BTC articles (the ETH row is ignored)
    assert at("12:59") == [0.1, 1.0, 0.3, 0.1]
    with pytest.raises(ValueError, match="several symbols"):
        F.compute_features(candles, F.FeatureConfig(), sentiment_hourly=hourly)


def test_sentiment_input_errors(candles):
    config = F.FeatureConfig()
    with pytest.raises(ValueError, match="include_sentiment"):
        F.compute_features(candles, config)
    empty = hourly_sentiment("2024-01-01", 0)
    frame = F.compute_features(candles, config, sentiment_hourly=empty)
    assert (frame[F.SENTIMENT_COLUMNS] == 0.0).all().all()
    unaligned = hourly_sentiment("2024-01-01 00:30", 5)
    with pytest.raises(ValueError, match="field 'hour'.*not the start of an hour"):
        F.compute_features(candles, config, sentiment_hourly=unaligned)
    bad = hourly_sentiment("2024-01-01", 10)
    bad.loc[2, "mean_sentiment"] = np.nan
    with pytest.raises(ValueError, match="row 2, field 'mean_sentiment'"):
        F.compute_features(candles, config, sentiment_hourly=bad)
    assert (
        "sentiment_mean_1h"
        not in F.compute_features(candles, F.FeatureConfig(include_sentiment=False)).columns
    )


def test_gap_mask_flags_rows_whose_lookback_spans_a_missing_minute():
    candles = random_walk_candles(300).drop(index=[100]).reset_index(drop=True)
    mask = F.gap_mask(candles["open_time"], 10)
    minutes = (candles["open_time"] - candles["open_time"].iloc[0]).dt.total_seconds().to_numpy() // 60
    expected = (minutes < 10) | ((minutes > 100) & (minutes <= 110))
    np.testing.assert_array_equal(mask, expected)
    assert mask.sum() == 20
    assert not F.gap_mask(random_walk_candles(50)["open_time"], 0).any()
    with pytest.raises(ValueError, match="increasing"):
        F.gap_mask(candles["open_time"].iloc[::-1], 5)


def test_custom_feature_by_either_path_form(candles):
    frame = F.compute_features(
        candles, F.FeatureConfig(custom=("antmeter_tests.factories.spread_feature",), include_sentiment=False)
    )
    expected = (candles["high"] - candles["low"]) / candles["close"]
    np.testing.assert_allclose(frame["spread_rel"], expected)
    assert F.feature_lookbacks(CONFIG)["spread_rel_mean_5"] == 4
    assert "spread_rel" in F.model_feature_columns(CONFIG)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("antmeter_tests.no_such_module:f", "cannot import module 'antmeter_tests.no_such_module'"),
        ("antmeter_tests.factories:missing", "has no attribute 'missing'"),
        ("antmeter_tests.factories:NOT_CALLABLE", "int object is not callable"),
        ("antmeter_tests.factories:short_feature", "returned 2999 rows for 3000 candles"),
        ("antmeter_tests.factories:shifted_index_feature", "index"),
        ("antmeter_tests.factories:colliding_feature", r"\['rsi_14'\] collide"),
        ("antmeter_tests.factories:not_a_frame_feature", "must return a DataFrame"),
        ("nodots", "expected 'package.module:function'"),
    ],
)
def test_custom_feature_errors_name_the_path(candles, path, message):
    config = F.FeatureConfig(custom=(path,), include_sentiment=False)
    with pytest.raises(ValueError, match=message) as excinfo:
        F.compute_features(candles, config)
    assert path in str(excinfo.value)


def test_bad_candles_are_rejected_with_row_and_field(candles):
    config = F.FeatureConfig(include_sentiment=False)
    swapped = candles.copy()
    swapped.loc[[10, 11], "open_time"] = swapped.loc[[11, 10], "open_time"].to_numpy()
    with pytest.raises(CandleValidationError, match="row 11, field 'open_time'"):
        F.compute_features(swapped, config)
    broken = candles.copy()
    broken.loc[42, "close"] = np.nan
    with pytest.raises(CandleValidationError, match="row 42, field 'close'"):
        F.compute_features(broken, config)
    with pytest.raises(CandleValidationError, match="volume"):
        F.compute_features(candles.drop(columns="volume"), config)


def test_candle_shape_and_time_features_by_hand():
    candles = pd.DataFrame(
        {
            "open_time": pd.to_datetime(
                ["2024-01-01 05:59", "2024-01-01 06:00", "2024-01-01 06:01"], utc=True
            ),
            "open": [100.0, 100.0, 104.0],
            "high": [101.0, 104.0, 104.0],
            "low": [99.0, 98.0, 104.0],
            "close": [100.0, 102.0, 104.0],
            "volume": [1.0, 3.0, 0.0],
        }
    )
    frame = F.compute_features(candles, F.FeatureConfig(include_sentiment=False))
    row = frame.iloc[1]
    assert row["body_size"] == pytest.approx(0.02) and row["body_direction"] == 1.0
    assert row["upper_wick"] == pytest.approx(0.02) and row["lower_wick"] == pytest.approx(0.02)
    assert row["wick_ratio"] == pytest.approx(0.5) and row["body_to_range"] == pytest.approx(2 / 6)
    assert row["range"] == pytest.approx(0.06) and row["gap"] == pytest.approx(0.0)
    assert row["volume_change_1"] == pytest.approx(0.5) and row["log_return_1"] == pytest.approx(np.log(1.02))
    flat = frame.iloc[2]  # open = high = low = close: safe divisions
    assert (flat["wick_ratio"], flat["body_to_range"], flat["body_direction"], flat["volume_change_1"]) == (
        0.5,
        0.0,
        0.0,
        -1.0,
    )
    assert np.isnan(frame["gap"].iloc[0])
    # 2024-01-01 is a Monday: 06:00 is a quarter of the day and 1/28 of the week.
    assert row["tod_sin"] == pytest.approx(1.0) and row["tod_cos"] == pytest.approx(0.0, abs=1e-12)
    assert row["dow_sin"] == pytest.approx(np.sin(2 * np.pi / 28)) and row["dow_cos"] == pytest.approx(
        np.cos(2 * np.pi / 28)
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"macd": (26, 12, 9)}, "fast window must be below slow"),
        ({"ema_windows": (9, 0)}, "ema_windows"),
        ({"bollinger": (20, -1.0)}, "bollinger"),
        ({"volatility_windows": (1,)}, "volatility_windows"),
        ({"atr_window": 2.5}, "atr_window"),
        ({"custom": "pkg.mod:f"}, "custom"),
        ({"sma_windows": (10, 10)}, "duplicate columns"),
    ],
)
def test_bad_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        F.feature_columns(F.FeatureConfig(**kwargs))


@pytest.mark.parametrize("rows", [0, 1, 2, 30])
def test_short_histories_give_nan_features_not_errors(rows, sentiment):
    candles = random_walk_candles(rows) if rows else random_walk_candles(1).iloc[:0]
    frame = F.compute_features(candles, F.FeatureConfig(), sentiment_hourly=sentiment)
    assert list(frame.columns) == ["open_time", *F.feature_columns()] and len(frame) == rows
    assert frame["ema_50"].isna().all() and frame["obv_60"].isna().all()  # windows longer than the data
    if rows:
        assert frame["tod_sin"].notna().all() and frame["body_size"].notna().all()


@pytest.mark.parametrize(
    "interval, step",
    [("1m", "1min"), ("5m", "5min"), ("15m", "15min"), ("1h", "1h"), ("4h", "4h"), ("1d", "1D")],
)
def test_features_honour_the_candle_interval(interval, step):
    """Windows count candles of the interval; a candle is known at open + interval, so the sentiment
    as-of sees the last hour completed at that close; off-grid open times and gaps are named."""
    minute = random_walk_candles(n=600, seed=4)
    candles = minute.assign(open_time=pd.date_range("2024-01-01", periods=600, freq=step, tz="UTC"))
    config = F.FeatureConfig(include_sentiment=True)
    last_close = candles["open_time"].iloc[-1] + pd.Timedelta(step)
    hours = pd.date_range(pd.Timestamp("2023-12-31", tz="UTC"), last_close, freq="h")
    sentiment = pd.DataFrame(
        {
            "hour": hours,
            "mean_sentiment": np.arange(len(hours), dtype=float),  # the value names its hour
            "article_count": 1.0,
            "positive_share": 0.5,
            "negative_share": 0.1,
        }
    )
    frame = F.compute_features(candles, config, sentiment_hourly=sentiment, interval=interval)
    as_minutes = F.compute_features(minute, config, sentiment_hourly=sentiment)
    for column in ("rsi_14", "ema_9_rel", "log_return_5", "volatility_15"):  # positional: same values
        np.testing.assert_allclose(frame[column], as_minutes[column], rtol=1e-9, equal_nan=True)
    close = candles["open_time"] + pd.Timedelta(step)
    expected_hour = (close - pd.Timedelta(hours=1)).dt.floor("h")
    expected = ((expected_hour - hours[0]) / pd.Timedelta(hours=1)).to_numpy(dtype=float)
    np.testing.assert_array_equal(frame["sentiment_mean_1h"].to_numpy(), expected)
    if interval != "1m":
        shifted = candles.assign(open_time=candles["open_time"] + pd.Timedelta(minutes=1))
        with pytest.raises(CandleValidationError, match=f"not on the {interval} grid"):
            F.compute_features(shifted, config, sentiment_hourly=sentiment, interval=interval)
    gappy = candles["open_time"].drop(index=100)
    mask = F.gap_mask(gappy, 3, interval=interval)
    # rows 101..103 (positions 100..102) reach back over the missing candle 100
    assert mask[:3].all() and not mask[3:100].any() and mask[100:103].all() and not mask[103:].any()
