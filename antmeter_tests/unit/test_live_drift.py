"""PSI values, feature eligibility, and hour-matched drift that ignores seasonality but catches shifts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from antmeter.live.drift import (
    EPSILON,
    benjamini_hochberg,
    feature_drift,
    max_psi,
    noise_floor,
    persistent_drift,
    population_stability_index,
    psi_eligibility,
    psi_eligible,
)


def test_psi_hand_computed_and_scale_free():
    reference = np.arange(1.0, 101.0)
    assert population_stability_index(reference, reference, bins=4) == pytest.approx(0.0)
    current = np.full(50, 200.0)  # everything above the top quartile edge
    expected = 3 * (EPSILON - 0.25) * np.log(EPSILON / 0.25) + (1 - 0.25) * np.log(1 / 0.25)
    assert population_stability_index(reference, current, bins=4) == pytest.approx(expected)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=2000), rng.normal(0.3, 1.2, size=800)
    assert population_stability_index(a * 1e4 + 7, b * 1e4 + 7) == pytest.approx(
        population_stability_index(a, b)
    )
    with pytest.raises(ValueError, match="bins"):
        population_stability_index(a, b, bins=1)


def test_psi_discrete_reference_and_weights():
    reference = np.array([0.0] * 70 + [1.0] * 30)
    assert population_stability_index(reference, np.array([0.0] * 7 + [1.0] * 3)) == pytest.approx(0.0)
    # weights that put all reference mass on the 1s make a current sample of 1s match exactly
    weights = (reference == 1).astype(float)
    assert population_stability_index(reference, np.ones(20), reference_weights=weights) == pytest.approx(0.0)


def test_eligibility_rules():
    columns = [
        "open_time", "close", "volume", "sma_20", "atr_14", "hour_sin", "dow_cos", "minute_of_day", "day_of_week",
        "ret_1m", "log_ret_5", "close_sma20_ratio", "volume_z", "rsi_14", "sentiment_compound", "ret_1day",
        "bollinger_pband", "spread_estimate",
    ]  # fmt: skip
    assert psi_eligible(columns) == [
        "ret_1m", "log_ret_5", "close_sma20_ratio", "volume_z", "rsi_14", "sentiment_compound", "ret_1day",
        "bollinger_pband", "spread_estimate",
    ]  # fmt: skip
    reasons = psi_eligibility(columns)
    assert reasons["hour_sin"].startswith("excluded: cyclic")
    assert reasons["close"].startswith("excluded: raw")


def seasonal_frame(days: int, start: str, scale: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Minute rows whose |return| scale follows a strong intraday cycle (x4 between night and afternoon)."""
    times = pd.date_range(start, periods=days * 1440, freq="min", tz="UTC")
    hour = np.asarray(times.hour)
    sigma = 1.0 + 3.0 * np.exp(-(((hour - 15) / 3.0) ** 2))  # afternoon UTC is ~4x more volatile
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "open_time": times,
            "abs_ret_bps": np.abs(rng.normal(0.0, sigma * scale)),
            "ret_bps": rng.normal(0.0, sigma * scale),
            "hour_sin": np.sin(2 * np.pi * hour / 24),
            "close": 100 + np.arange(len(times)) * 0.01,
        }
    )


def test_seasonality_does_not_alert_but_a_real_shift_does():
    reference = seasonal_frame(7, "2024-03-01", seed=1)
    next_day = seasonal_frame(1, "2024-03-08", seed=2)
    afternoon = next_day[next_day["open_time"].dt.hour.between(13, 17)]  # 5 h, the volatile session
    drift = feature_drift(reference, afternoon).set_index("feature")
    assert list(drift.index) == ["abs_ret_bps", "ret_bps"]  # close and hour_sin are not PSI-eligible
    assert (drift["status"] == "ok").all(), drift
    assert drift["psi"].max() < 0.1

    unmatched = feature_drift(reference, afternoon, match_hours=False, null_step=None).set_index("feature")
    assert (
        unmatched.loc["abs_ret_bps", "status"] == "alert"
    )  # whole-day reference without the null mistakes the session for drift
    with_null = feature_drift(reference, afternoon, match_hours=False).set_index("feature")
    assert with_null.loc["abs_ret_bps", "status"] != "alert"  # the reference's own afternoons are as far
    assert with_null.loc["abs_ret_bps", "p_value"] > 0.05

    shifted = seasonal_frame(1, "2024-03-08", scale=2.0, seed=2)
    shifted = shifted[shifted["open_time"].dt.hour.between(13, 17)]
    result = feature_drift(reference, shifted).set_index("feature")
    assert (result["status"] == "alert").all(), result
    assert (result["p_value"] < 0.01).all()  # beyond every same-length sub-window of the reference
    assert max_psi(feature_drift(reference, shifted)) == pytest.approx(result["psi"].max())


def test_short_windows_are_insufficient_and_noise_floor():
    reference = seasonal_frame(3, "2024-03-01", seed=1)
    current = seasonal_frame(1, "2024-03-04", seed=2).iloc[:60]
    drift = feature_drift(reference, current)
    assert (drift["status"] == "insufficient").all() and max_psi(drift) is None
    loose = feature_drift(reference, current, min_current=30)
    assert (loose["noise_floor"] > 0.1).all()  # 60 rows: pure sampling noise can exceed the watch threshold
    assert noise_floor(1e9, 240, 10) == pytest.approx(21.666 / 240, rel=1e-3)
    with pytest.raises(ValueError, match="missing"):
        feature_drift(reference, current, columns=["nope"])


def test_volatility_scaled_features_are_not_eligible():
    reasons = psi_eligibility(["volatility_60", "atr_14_rel", "range", "body_size", "log_return_1"])
    assert [c for c, why in reasons.items() if why.startswith("eligible")] == ["log_return_1"]
    assert reasons["volatility_60"].startswith("excluded: scales with volatility")


def test_benjamini_hochberg_step_up():
    p = np.array([0.001, 0.02, 0.03, 0.5, np.nan])
    assert benjamini_hochberg(p, 0.05).tolist() == [True, True, True, False, False]
    assert benjamini_hochberg(np.array([0.03, 0.5]), 0.05).tolist() == [False, False]


def test_persistent_drift_needs_every_window():
    reference = seasonal_frame(7, "2024-03-01", seed=1)
    calm = seasonal_frame(1, "2024-03-08", seed=2).iloc[: 10 * 60]
    shifted = seasonal_frame(1, "2024-03-08", scale=3.0, seed=2).iloc[: 10 * 60]
    half = pd.concat([calm.iloc[: 5 * 60], shifted.iloc[5 * 60 :]], ignore_index=True)
    assert persistent_drift(reference, shifted, windows=2)[0]
    assert not persistent_drift(reference, half, windows=2)[0]  # drifted in the newest window only
    assert not persistent_drift(reference, calm, windows=2)[0]
