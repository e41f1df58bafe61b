"""The market simulator: determinism, candle validity, stylized facts, the planted signal and its oracle."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from antmeter.market.candles import CANDLE_COLUMNS, validate_candles
from antmeter.market.simulator import (
    HIDDEN_COLUMNS,
    SimulatorConfig,
    bayes_ceiling,
    clear_cache,
    oracle_probability_up,
    simulate_day,
    simulate_range,
)

DEFAULT = SimulatorConfig()
NULL = SimulatorConfig(predictable=False)
FIRST, LAST = "2024-01-01", "2024-01-20"  # 20 days from the anchor
SPLIT = pd.Timestamp("2024-01-11", tz="UTC")  # train before, test from here


@pytest.fixture(scope="module")
def sim():
    return simulate_range("BTCUSDT", FIRST, LAST, DEFAULT)


@pytest.fixture(scope="module")
def null_sim():
    return simulate_range("BTCUSDT", FIRST, LAST, NULL)


def log_returns(candles: pd.DataFrame) -> np.ndarray:
    return np.diff(np.log(candles["close"].to_numpy()))


def autocorrelation(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float(np.dot(x[:-lag], x[lag:]) / np.dot(x, x))


# ------------------------------------------------------------------------------------------------
# shape, validity, determinism


def test_candles_are_valid_complete_and_continuous(sim):
    candles = validate_candles(sim.candles, "simulator")
    assert list(sim.candles.columns) == CANDLE_COLUMNS
    assert len(candles) == 20 * 1440
    assert (candles["open_time"].diff().iloc[1:] == pd.Timedelta(minutes=1)).all()
    assert candles["open_time"].iloc[0] == pd.Timestamp(FIRST, tz="UTC")
    # every open is the previous close, across day boundaries too
    np.testing.assert_array_equal(candles["open"].to_numpy()[1:], candles["close"].to_numpy()[:-1])
    assert (candles["high"] > candles["low"]).mean() > 0.99
    # prices lie on the 0.01 tick grid
    cents = candles[["open", "high", "low", "close"]].to_numpy() * 100
    np.testing.assert_allclose(cents, np.round(cents), atol=1e-6)
    assert list(sim.hidden.columns) == HIDDEN_COLUMNS
    assert (sim.hidden["open_time"] == candles["open_time"]).all()


def test_hidden_state_follows_the_documented_recursion_across_midnight():
    first = simulate_day("ETHUSDT", "2024-01-05")
    second = simulate_day("ETHUSDT", dt.date(2024, 1, 6))
    assert second.candles["open"].iloc[0] == first.candles["close"].iloc[-1]
    candles = pd.concat([first.candles, second.candles], ignore_index=True)
    hidden = pd.concat([first.hidden, second.hidden], ignore_index=True)
    # mf_t = lf mf_{t-1} + (1 - lf) z_t with z_t the standardised return (rows without a jump)
    z = log_returns(candles) / hidden["volatility"].to_numpy()[1:]
    for column, decay in (("momentum_fast", "fast_decay"), ("momentum_slow", "slow_decay")):
        m = hidden[column].to_numpy()
        lam = hidden[decay].to_numpy()[1:]
        residual = m[1:] - lam * m[:-1] - (1 - lam) * z
        # closes are rounded to 0.01, so z is known to within 0.01 / price / volatility
        close = candles["close"].to_numpy()
        bound = (1 - lam) * 0.01 / np.minimum(close[1:], close[:-1]) / hidden["volatility"].to_numpy()[1:]
        no_jump = ~hidden["jump"].to_numpy()[1:]
        assert (np.abs(residual) <= bound * 1.001 + 1e-12)[no_jump].all()
        assert abs(residual[1439]) <= bound[1439]  # the first minute of the second day continues the first
    # expected_return is the documented next-minute drift (in sigmas) times the current volatility
    next_drift = (
        hidden["signal_gain"] * hidden["momentum"]
        + hidden["drift_strength"] * hidden["drift_persistence"] * hidden["drift_regime"]
    )
    np.testing.assert_allclose(hidden["expected_return"], next_drift * hidden["volatility"])
    assert next_drift.abs().max() > 0.05


def test_same_partition_same_candles_whatever_the_order():
    clear_cache()
    late_first = simulate_day("BTCUSDT", "2024-01-12")
    early_after = simulate_day("BTCUSDT", "2024-01-03")
    clear_cache()
    early_first = simulate_day("BTCUSDT", "2024-01-03")
    late_after = simulate_day("BTCUSDT", "2024-01-12")
    pd.testing.assert_frame_equal(late_first.candles, late_after.candles)
    pd.testing.assert_frame_equal(early_first.candles, early_after.candles)
    pd.testing.assert_frame_equal(late_first.hidden, late_after.hidden)
    in_range = simulate_range("BTCUSDT", "2024-01-11", "2024-01-13").candles
    pd.testing.assert_frame_equal(in_range.iloc[1440:2880].reset_index(drop=True), late_first.candles)


def test_seeds_symbols_and_predictability_switch():
    btc = simulate_day("BTCUSDT", FIRST).candles
    eth = simulate_day("ETHUSDT", FIRST).candles
    other = simulate_day("SOLUSDT", FIRST).candles
    reseeded = simulate_day("BTCUSDT", FIRST, SimulatorConfig(seed=8)).candles
    assert btc["open"].iloc[0] == 42_000.0 and eth["open"].iloc[0] == 2_300.0
    assert 0.1 <= other["open"].iloc[0] <= 1_000.0
    pd.testing.assert_frame_equal(other, simulate_day("SOLUSDT", FIRST).candles)
    assert not np.allclose(btc["close"], reseeded["close"])
    # a shared market factor makes symbols mildly correlated
    correlation = np.corrcoef(log_returns(btc), log_returns(eth))[0, 1]
    assert 0.2 < correlation < 0.8, correlation
    # the negative control has the same noise and volatility, only no drift
    null = simulate_day("BTCUSDT", FIRST, NULL)
    np.testing.assert_allclose(null.hidden["volatility"], simulate_day("BTCUSDT", FIRST).hidden["volatility"])
    assert (null.hidden["expected_return"] == 0).all()
    assert not np.allclose(null.candles["close"], btc["close"])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="before SimulatorConfig.anchor_date 2024-01-01"):
        simulate_day("BTCUSDT", "2023-12-31")
    with pytest.raises(ValueError, match="last_day_inclusive"):
        simulate_range("BTCUSDT", "2024-01-05", "2024-01-04")
    with pytest.raises(ValueError, match="symbol"):
        simulate_day("BTC/USDT", "2024-01-05")
    with pytest.raises(ValueError, match="first_day"):
        simulate_range("BTCUSDT", "not a day", "2024-01-04")
    with pytest.raises(ValueError, match="signal_strength"):
        SimulatorConfig(signal_strength=4.0)
    with pytest.raises(ValueError, match="signal_fast_halflife_min"):
        SimulatorConfig(signal_fast_halflife_min=30.0, signal_slow_halflife_min=10.0)
    with pytest.raises(ValueError, match="anchor_date"):
        SimulatorConfig(anchor_date="January")
    with pytest.raises(ValueError, match="signal_flip_at"):
        SimulatorConfig(signal_flip_at="soon")
    assert simulate_day("BTCUSDT", "2024-01-02T10:00:00+00:00").candles["open_time"].iloc[0] == pd.Timestamp(
        "2024-01-02", tz="UTC"
    )
    with pytest.raises(ValueError, match="market_correlation"):
        SimulatorConfig(market_correlation=1.0)
    with pytest.raises(ValueError, match="seed"):
        SimulatorConfig(seed=-1)
    with pytest.raises(ValueError, match="horizon_min"):
        oracle_probability_up(simulate_day("BTCUSDT", FIRST).hidden, 0)


def test_cold_chain_and_warm_range_are_fast():
    clear_cache()
    started = time.perf_counter()
    simulate_day("BTCUSDT", "2024-12-31")  # chains 365 days from the anchor
    cold = time.perf_counter() - started
    started = time.perf_counter()
    simulate_range("BTCUSDT", "2024-12-01", "2024-12-14")
    warm = time.perf_counter() - started
    assert cold < 5.0, cold
    assert warm < 1.0, warm


# ------------------------------------------------------------------------------------------------
# stylized facts


def test_fat_tails_and_volatility_clustering(sim):
    r = log_returns(sim.candles)
    assert stats.kurtosis(r) > 3  # excess kurtosis of a normal is 0
    n = len(r)
    abs_acf = np.array([autocorrelation(np.abs(r), lag) for lag in range(1, 31)])
    raw_acf = np.array([autocorrelation(r, lag) for lag in range(1, 31)])
    assert (abs_acf > 5 / np.sqrt(n)).all(), abs_acf  # each lag significantly positive
    assert abs_acf.mean() > 0.1
    assert np.abs(raw_acf).max() < 0.12, raw_acf  # returns themselves are nearly uncorrelated
    assert np.abs(raw_acf).max() < abs_acf.min()


def test_intraday_seasonality_of_volatility_and_volume(sim):
    candles = sim.candles.iloc[1:]
    abs_r = pd.Series(np.abs(log_returns(sim.candles)), index=candles.index)
    hour = candles["open_time"].dt.hour
    hourly_abs = abs_r.groupby(hour).mean()
    hourly_volume = candles["volume"].groupby(hour).mean()
    assert hourly_abs.max() / hourly_abs.min() > 1.3
    assert hourly_volume.max() / hourly_volume.min() > 1.3
    assert hourly_abs.idxmax() in (13, 14, 15, 16)  # US-open peak
    # significant, not noise: hour of day explains |r| and volume
    assert stats.kruskal(*[abs_r[hour == h] for h in range(24)]).pvalue < 1e-6
    assert stats.kruskal(*[candles["volume"][hour == h] for h in range(24)]).pvalue < 1e-6


def test_volume_follows_absolute_returns(sim):
    r = log_returns(sim.candles)
    assert np.corrcoef(sim.candles["volume"].to_numpy()[1:], np.abs(r))[0, 1] > 0.3


def test_rare_jumps_and_regimes(sim):
    hidden = sim.hidden.iloc[1:]
    standardised = log_returns(sim.candles) / hidden["volatility"].to_numpy()
    jumps = hidden["jump"].to_numpy()
    assert 3 <= jumps.sum() <= 80  # about one a day
    assert np.median(np.abs(standardised[jumps])) > 2.5
    assert np.abs(standardised[jumps]).mean() > 3 * np.abs(standardised[~jumps]).mean()
    # volatility regimes: both occur and turbulent minutes move more
    abs_r = np.abs(log_returns(sim.candles))
    turbulent = hidden["vol_regime"].to_numpy() == 1
    assert 0.02 < turbulent.mean() < 0.6
    assert abs_r[turbulent].mean() > 1.4 * abs_r[~turbulent].mean()
    # drift regimes: all three occur and bull minutes rise more than bear minutes (a small drift: 60 days)
    assert set(np.unique(hidden["drift_regime"])) == {-1, 0, 1}
    longer = simulate_range("BTCUSDT", FIRST, "2024-02-29")
    regime = longer.hidden["drift_regime"].to_numpy()[1:]
    standardised = log_returns(longer.candles) / longer.hidden["volatility"].to_numpy()[1:]
    assert stats.ttest_ind(standardised[regime == 1], standardised[regime == -1]).statistic > 3
    assert set(sim.hidden["regime"].unique()) <= {
        f"{v}/{d}" for v in ("calm", "turbulent") for d in ("bear", "neutral", "bull")
    }


# ------------------------------------------------------------------------------------------------
# oracle and Bayes ceiling


def test_oracle_ceiling_with_signal(sim):
    ceiling = bayes_ceiling(sim.hidden, sim.candles, [1, 5, 10, 30])
    assert 0.56 <= ceiling[5] <= 0.62, ceiling
    assert 0.54 <= ceiling[10] <= 0.63 and 0.53 <= ceiling[30] <= 0.63, ceiling
    assert ceiling[1] < ceiling[5]


def test_oracle_is_calibrated(sim):
    p = oracle_probability_up(sim.hidden, 5)
    close = sim.candles["close"].to_numpy()
    up = np.log(close[5:] / close[:-5]) > 0
    p = p[:-5]
    for low, high in ((0.0, 0.4), (0.4, 0.5), (0.5, 0.6), (0.6, 1.0)):
        in_bin = (p >= low) & (p < high)
        assert in_bin.sum() > 300
        assert abs(up[in_bin].mean() - p[in_bin].mean()) < 0.04, (
            low,
            high,
            up[in_bin].mean(),
            p[in_bin].mean(),
        )


def test_oracle_without_signal_is_a_coin(null_sim):
    assert (oracle_probability_up(null_sim.hidden, 5) == 0.5).all()
    ceiling = bayes_ceiling(null_sim.hidden, null_sim.candles, [5, 10, 30])
    for horizon, accuracy in ceiling.items():
        # overlapping h-minute labels: about n / h independent ones; allow three standard errors
        tolerance = 3 * 0.5 * np.sqrt(horizon / len(null_sim.candles))
        assert abs(accuracy - 0.5) < tolerance, (horizon, accuracy, tolerance)


def test_bayes_ceiling_matches_a_direct_count_with_ties_and_gaps():
    day = simulate_day("BTCUSDT", "2024-01-09")
    candles = day.candles.copy()
    close = candles["close"].to_numpy().copy()
    close[100:200] = close[95]  # flat stretch: 5-minute moves of exactly zero are "not up"
    candles["close"] = close
    candles = candles.drop(index=range(600, 610)).reset_index(drop=True)  # a gap in the candles
    got = bayes_ceiling(day.hidden, candles, [5])[5]
    p = oracle_probability_up(day.hidden, 5)
    hits = []
    by_time = dict(zip(candles["open_time"], candles["close"], strict=True))
    for i, t in enumerate(day.hidden["open_time"]):
        later = t + pd.Timedelta(minutes=5)
        if t in by_time and later in by_time:
            hits.append((p[i] > 0.5) == (by_time[later] > by_time[t]))
    assert len(hits) == 1440 - 5 - 15  # 10 missing rows + 5 rows whose t+5 is missing
    assert got == pytest.approx(np.mean(hits))
    with pytest.raises(ValueError, match="no row has its 2000-minute horizon"):
        bayes_ceiling(day.hidden, candles, [2000])


# ------------------------------------------------------------------------------------------------
# the signal is learnable from candles, absent in the control, and can flip


def lagged_features(candles: pd.DataFrame, horizon: int = 5) -> tuple[pd.DataFrame, pd.Series]:
    """Causal features (sums of recent returns over recent volatility) and the forward up label."""
    log_close = np.log(candles["close"])
    r = log_close.diff()
    scale = r.rolling(120, min_periods=60).std()
    features = pd.DataFrame(
        {f"sum_{k}": (log_close - log_close.shift(k)) / scale for k in (1, 2, 4, 8, 16, 32, 64, 128)}
    )
    features.index = candles["open_time"]
    label = pd.Series((log_close.shift(-horizon) - log_close).to_numpy() > 0, index=features.index)
    keep = features.notna().all(axis=1).to_numpy() & log_close.shift(-horizon).notna().to_numpy()
    return features[keep], label[keep]


def out_of_sample_accuracy(
    candles: pd.DataFrame, split: pd.Timestamp, test_from: pd.Timestamp | None = None
) -> float:
    features, label = lagged_features(candles)
    train = features.index < split - pd.Timedelta(minutes=10)  # labels of training rows end before the split
    test = features.index >= (test_from or split)
    scaler = StandardScaler().fit(features[train])
    model = LogisticRegression(max_iter=1000).fit(scaler.transform(features[train]), label[train])
    return float(np.mean(model.predict(scaler.transform(features[test])) == label[test].to_numpy()))


def test_logistic_regression_learns_the_signal_out_of_sample(sim):
    accuracy = out_of_sample_accuracy(sim.candles, SPLIT)
    assert accuracy > 0.53, accuracy


def test_logistic_regression_finds_nothing_without_the_signal(null_sim):
    accuracy = out_of_sample_accuracy(null_sim.candles, SPLIT)
    assert abs(accuracy - 0.5) < 0.025, accuracy


def test_signal_flip_reverses_the_relation():
    flip_at = "2024-01-11T00:00:00Z"
    flipped = simulate_range("BTCUSDT", FIRST, LAST, SimulatorConfig(signal_flip_at=flip_at))
    gain = flipped.hidden.set_index("open_time")["signal_gain"]
    assert (gain[gain.index < SPLIT] == 0.5).all() and (gain[gain.index >= SPLIT] == -0.5).all()
    # identical history before the flip
    before = flipped.candles["open_time"] < SPLIT
    unflipped = simulate_range("BTCUSDT", FIRST, LAST)
    pd.testing.assert_frame_equal(flipped.candles[before], unflipped.candles[before])
    # a model trained before the flip is now worse than a coin
    accuracy = out_of_sample_accuracy(flipped.candles, SPLIT, test_from=SPLIT + pd.Timedelta(hours=3))
    assert accuracy < 0.48, accuracy
    # and the oracle, which knows the new gain, still beats a coin
    assert bayes_ceiling(flipped.hidden[~before.to_numpy()], flipped.candles, [5])[5] > 0.53


def test_flip_inside_a_day_starts_at_the_exact_minute():
    hidden = simulate_day(
        "BTCUSDT", "2024-01-04", SimulatorConfig(signal_flip_at="2024-01-04T12:30:30Z")
    ).hidden
    flipped = hidden["open_time"] >= pd.Timestamp("2024-01-04 12:31", tz="UTC")
    assert (hidden.loc[flipped, "signal_gain"] == -0.5).all()
    assert (hidden.loc[~flipped, "signal_gain"] == 0.5).all()


@pytest.mark.parametrize("interval, minutes", [("5m", 5), ("15m", 15), ("1h", 60), ("4h", 240), ("1d", 1440)])
def test_simulator_aggregates_minutes_to_the_interval_with_the_state_at_each_close(interval, minutes):
    per_minute = simulate_day("BTCUSDT", "2024-01-03")
    coarse = simulate_day("BTCUSDT", "2024-01-03", interval=interval)
    candles = validate_candles(coarse.candles, source=f"simulator:{interval}")
    assert len(candles) == len(coarse.hidden) == 1440 // minutes
    assert (candles["open_time"].diff().dropna() == pd.Timedelta(minutes=minutes)).all()
    k = min(1, len(candles) - 1)  # the second candle (the only one of a 1d day)
    block = per_minute.candles.iloc[k * minutes : (k + 1) * minutes]
    second = candles.iloc[k]
    assert second["open"] == block["open"].iloc[0] and second["close"] == block["close"].iloc[-1]
    assert second["high"] == block["high"].max() and second["low"] == block["low"].min()
    assert second["volume"] == pytest.approx(block["volume"].sum())
    # the coarse hidden row is the state at the candle's close: the oracle for h candles equals the
    # minute oracle for h * minutes at the candle's last minute
    last_minutes = per_minute.hidden.iloc[minutes - 1 :: minutes].reset_index(drop=True)
    np.testing.assert_array_equal(
        oracle_probability_up(coarse.hidden, 2 * minutes), oracle_probability_up(last_minutes, 2 * minutes)
    )
