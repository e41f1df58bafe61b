"""antmeter.features.indicators against ``ta`` 0.11 (the reference definition) and against direct formulas.

Tolerance: values agree with ``ta`` to ``rtol=1e-9`` (absolute ``1e-9`` times the column's scale
for values near 0). The documented differences are asserted explicitly: NaN instead of ``ta``'s 0.0
during ATR/ADX/DI warm-up, +DI/-DI one row earlier, MFI/OBV one row later, safe values where ``ta``
divides by zero. Each test runs twice: with the default chunk size and with a tiny one, so the
chunked code paths (state carried across chunks, windows straddling chunks) are exercised on small
data.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import ta

from antmeter.features import indicators as ind
from antmeter_tests.factories import random_walk_candles


@pytest.fixture(params=["default-chunk", "tiny-chunk"], autouse=True)
def chunk_size(request, monkeypatch):
    """Run every test with the production chunk size and with chunks of 97 rows / blocks of 37."""
    if request.param == "tiny-chunk":
        monkeypatch.setattr(ind, "_CHUNK", 97)
        monkeypatch.setattr(ind, "_ANCHOR_BLOCK", 37)
    return request.param


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return random_walk_candles(3000, seed=7, flat_runs=True)


@pytest.fixture(scope="module")
def series(candles):
    return {name: candles[name] for name in ("open", "high", "low", "close", "volume")}


def assert_matches(ours: np.ndarray, reference, first_valid: int, compare_from: int | None = None) -> None:
    """NaN exactly before ``first_valid``; equal to the reference (finite there) from ``compare_from``."""
    reference = np.asarray(reference, dtype=np.float64)
    assert ours.shape == reference.shape
    assert np.isnan(ours[:first_valid]).all(), "warm-up rows must be NaN"
    assert np.isfinite(ours[first_valid:][np.isfinite(reference[first_valid:])]).all()
    start = first_valid if compare_from is None else compare_from
    finite = np.isfinite(reference[start:])
    scale = np.nanmax(np.abs(reference[start:][finite]))
    np.testing.assert_allclose(ours[start:][finite], reference[start:][finite], rtol=1e-9, atol=1e-9 * scale)


def test_rsi_matches_ta(series):
    reference = ta.momentum.RSIIndicator(series["close"], window=14).rsi()
    ours = ind.rsi(series["close"], 14)
    assert_matches(ours, reference, first_valid=13)
    # Flat stretches: ta says 100 when the average loss is exactly 0; here that needs a gain.
    flat = np.full(40, 5.0)
    assert np.all(ind.rsi(flat, 14)[13:] == 50.0)
    assert ta.momentum.RSIIndicator(pd.Series(flat), window=14).rsi().iloc[13:].eq(100.0).all()


def test_macd_matches_ta(series):
    reference = ta.trend.MACD(series["close"], window_slow=26, window_fast=12, window_sign=9)
    line, signal, hist = ind.macd(series["close"], 12, 26, 9)
    assert_matches(line, reference.macd(), first_valid=25)
    assert_matches(signal, reference.macd_signal(), first_valid=33)
    assert_matches(hist, reference.macd_diff(), first_valid=33)


@pytest.mark.parametrize("window", [1, 9, 50])
def test_ema_and_sma_match_ta(series, window):
    assert_matches(
        ind.ema(series["close"], window),
        ta.trend.EMAIndicator(series["close"], window).ema_indicator(),
        window - 1,
    )
    assert_matches(
        ind.sma(series["close"], window),
        ta.trend.SMAIndicator(series["close"], window).sma_indicator(),
        window - 1,
    )


def _exact_rolling_std(x, window: int) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(x, dtype=np.longdouble), window)
    return np.sqrt(((windows - windows.mean(axis=1, keepdims=True)) ** 2).mean(axis=1)).astype(np.float64)


def test_bollinger_matches_ta(series):
    reference = ta.volatility.BollingerBands(series["close"], window=20, window_dev=2)
    bands = ind.bollinger(series["close"], 20, 2.0)
    assert_matches(bands["middle"], reference.bollinger_mavg(), 19)
    # pandas' online rolling variance (used by ta) keeps a residual of ~1e-13 after a window turns
    # flat, i.e. a std of ~1e-6; compare with ta where the exact std is not tiny, and with the
    # exact (long double) std everywhere.
    exact_std = np.full(len(series["close"]), np.nan)
    exact_std[19:] = _exact_rolling_std(series["close"], 20)
    moving = np.zeros(len(exact_std), dtype=bool)
    moving[19:] = exact_std[19:] > 1e-4
    for name, ta_name in [("upper", "hband"), ("lower", "lband"), ("width", "wband"), ("pctb", "pband")]:
        ta_values = getattr(reference, f"bollinger_{ta_name}")().to_numpy()
        assert_matches(
            np.where(moving, bands[name], np.nan)[19:], np.where(moving, ta_values, np.nan)[19:], 0
        )
    np.testing.assert_allclose(
        bands["upper"][19:] - bands["middle"][19:], 2.0 * exact_std[19:], rtol=1e-9, atol=1e-12
    )
    flat = exact_std[19:] == 0
    assert flat.sum() > 0
    assert np.all(bands["pctb"][19:][flat] == 0.5)  # ta: NaN (upper == lower) or noise
    assert np.all(bands["width"][19:][flat] == 0.0)


def test_atr_matches_ta_except_warmup_zeros(series):
    reference = ta.volatility.AverageTrueRange(series["high"], series["low"], series["close"], window=14)
    reference = reference.average_true_range().to_numpy()
    ours = ind.atr(series["high"], series["low"], series["close"], 14)
    assert np.all(reference[:13] == 0.0)  # ta's warm-up value; ours is NaN
    assert_matches(ours, reference, first_valid=13)


def test_adx_and_directional_indicators_match_ta(series):
    reference = ta.trend.ADXIndicator(series["high"], series["low"], series["close"], window=14)
    adx, plus_di, minus_di = ind.adx(series["high"], series["low"], series["close"], 14)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ta divides by zero inside its loops
        reference_adx = reference.adx().to_numpy()
        reference_plus, reference_minus = reference.adx_pos().to_numpy(), reference.adx_neg().to_numpy()
    assert np.all(reference_adx[:27] == 0.0) and np.all(reference_plus[:15] == 0.0)
    assert_matches(adx, reference_adx, first_valid=27)
    assert_matches(plus_di, reference_plus, first_valid=14, compare_from=15)
    assert_matches(minus_di, reference_minus, first_valid=14, compare_from=15)


def test_stochastic_matches_ta(series):
    reference = ta.momentum.StochasticOscillator(
        series["high"], series["low"], series["close"], window=14, smooth_window=3
    )
    k, d = ind.stochastic(series["high"], series["low"], series["close"], 14, 3)
    assert_matches(k, reference.stoch(), 13)
    assert_matches(d, reference.stoch_signal(), 15)
    flat = ~np.isfinite(reference.stoch().to_numpy()[13:])  # ta: 0/0 on flat windows; here 50
    assert flat.sum() > 0 and np.all(k[13:][flat] == 50.0)


def test_mfi_matches_ta_from_row_window(series):
    reference = ta.volume.MFIIndicator(
        series["high"], series["low"], series["close"], series["volume"], window=14
    )
    ours = ind.mfi(series["high"], series["low"], series["close"], series["volume"], 14)
    reference = reference.money_flow_index().to_numpy()
    assert np.isfinite(reference[13])  # ta starts one row earlier (first candle's flow counted as 0)
    assert_matches(ours, reference, first_valid=14)
    no_flow = ~np.isfinite(reference[14:])  # ta: 0/0 on windows without volume; here 50
    assert no_flow.sum() > 0 and np.all(ours[14:][no_flow] == 50.0)


def test_cci_matches_ta(series):
    reference = ta.trend.CCIIndicator(series["high"], series["low"], series["close"], window=20).cci()
    ours = ind.cci(series["high"], series["low"], series["close"], 20)
    assert_matches(ours, reference, 19)
    flat = ~np.isfinite(reference.to_numpy()[19:])
    assert flat.sum() > 0 and np.all(ours[19:][flat] == 0.0)


def test_rolling_vwap_matches_ta(series):
    reference = ta.volume.VolumeWeightedAveragePrice(
        series["high"], series["low"], series["close"], series["volume"], window=60
    ).volume_weighted_average_price()
    ours = ind.rolling_vwap(series["high"], series["low"], series["close"], series["volume"], 60)
    assert_matches(ours, reference, 59)
    no_volume = ~np.isfinite(reference.to_numpy()[59:])
    assert no_volume.sum() > 0
    typical = ind.typical_price(series["high"], series["low"], series["close"])
    np.testing.assert_allclose(
        ours[59:][no_volume], ind.rolling_mean(typical, 60)[59:][no_volume], rtol=1e-12
    )


def test_rolling_obv_is_ta_obv_differenced(series):
    cumulative = ta.volume.OnBalanceVolumeIndicator(series["close"], series["volume"]).on_balance_volume()
    raw = ind.rolling_obv(series["close"], series["volume"], 60, normalize=False)
    assert_matches(raw, cumulative.diff(60), 60)
    normalized = ind.rolling_obv(series["close"], series["volume"], 60)
    total = ind.rolling_sum(series["volume"], 60)
    expected = np.where(total == 0, 0.0, raw / np.where(total == 0, 1.0, total))
    np.testing.assert_allclose(normalized[60:], expected[60:], rtol=1e-12, atol=1e-15)
    assert np.all(np.abs(normalized[60:]) <= 1.0)


@pytest.mark.parametrize("window", [1, 2, 3, 7, 16, 60, 255])
def test_windowed_reductions_match_direct_formulas(window):
    x = np.random.default_rng(window).normal(size=700)
    windows = np.lib.stride_tricks.sliding_window_view(x, window)
    np.testing.assert_allclose(
        ind.rolling_sum(x, window)[window - 1 :], windows.sum(axis=1), rtol=1e-12, atol=1e-12
    )
    assert np.array_equal(ind.rolling_max(x, window)[window - 1 :], windows.max(axis=1))
    assert np.array_equal(ind.rolling_min(x, window)[window - 1 :], windows.min(axis=1))
    for ddof in (0, 1) if window > 1 else (0,):
        mean, std = ind.rolling_mean_std(x, window, ddof=ddof)
        np.testing.assert_allclose(mean[window - 1 :], windows.mean(axis=1), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(std[window - 1 :], windows.std(axis=1, ddof=ddof), rtol=1e-9, atol=1e-12)
    for result in (
        ind.rolling_sum(x, window),
        ind.rolling_max(x, window),
        ind.rolling_mean_std(x, window)[1],
    ):
        assert np.isnan(result[: window - 1]).all()


def test_window_longer_than_series_gives_nan():
    x = np.arange(5.0)
    assert np.isnan(ind.rolling_sum(x, 6)).all()
    assert np.isnan(ind.rolling_mean_std(x, 6)[1]).all()
    assert np.isnan(ind.atr(x + 1, x, x, 6)).all()
    assert all(np.isnan(a).all() for a in ind.adx(x + 1, x, x, 5))


def test_windowed_values_do_not_depend_on_where_the_series_starts():
    x = 30_000 + np.cumsum(np.random.default_rng(3).normal(size=1500))
    for cut in (1, 17, 500):
        assert np.array_equal(ind.rolling_sum(x[cut:], 20)[19:], ind.rolling_sum(x, 20)[cut + 19 :])
        assert np.array_equal(ind.rolling_max(x[cut:], 14)[13:], ind.rolling_max(x, 14)[cut + 13 :])
        # Rolling std: the same absolute phase gives the same anchors past the first (partial) block.
        aligned = ind.rolling_mean_std(x[cut:], 20, phase=cut)[1]
        skip = ind._ANCHOR_BLOCK + 20
        assert np.array_equal(aligned[skip:], ind.rolling_mean_std(x, 20)[1][cut + skip :])


def test_rolling_std_is_accurate_on_high_price_levels_and_zero_when_flat():
    rng = np.random.default_rng(11)
    x = 65_000 + np.cumsum(rng.normal(scale=5.0, size=2000))
    x[500:560] = x[499]  # a flat stretch
    _, std = ind.rolling_mean_std(x, 20)
    windows = np.lib.stride_tricks.sliding_window_view(x.astype(np.longdouble), 20)
    exact = np.sqrt(((windows - windows.mean(axis=1, keepdims=True)) ** 2).mean(axis=1)).astype(np.float64)
    moving = exact > 0
    np.testing.assert_allclose(std[19:][moving], exact[moving], rtol=1e-9)
    assert np.all(std[519:560] == 0.0)


def test_safe_divide_never_returns_inf():
    out = ind.safe_divide(np.array([1.0, 0.0, np.nan, 2.0]), np.array([0.0, 0.0, 1.0, 4.0]), fill=0.5)
    np.testing.assert_array_equal(out, [0.5, 0.5, np.nan, 0.5])


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_windows_are_rejected(bad):
    with pytest.raises(ValueError, match="window"):
        ind.rolling_sum(np.arange(10.0), bad)
    with pytest.raises(ValueError, match="window"):
        ind.rsi(np.arange(10.0), bad)
