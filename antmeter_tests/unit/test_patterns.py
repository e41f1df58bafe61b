"""TA-Lib candlestick spans, the simulator's pattern planter and the macro-F1 bootstrap gate."""

import numpy as np
import pandas as pd
import pytest

from antmeter.features.patterns import PatternConfig, candlestick_signals, programmatic_spans, span_counts
from antmeter.market.simulator import SimulatorConfig, simulate_day, simulate_range
from antmeter.registry.patterns import decide_pattern_promotion, macro_f1, paired_block_bootstrap

DAY = pd.Timestamp("2024-01-02", tz="UTC")


def candles(rows):
    frame = pd.DataFrame(rows, columns=["open", "high", "low", "close"], dtype=float)
    frame.insert(0, "open_time", pd.date_range(DAY, periods=len(frame), freq="1min"))
    frame["volume"] = 1.0
    return frame


def test_engulfing_hit_becomes_a_two_candle_span():
    rows = [(100 + i, 101.5 + i, 99.5 + i, 101 + i) for i in range(12)]  # an up-trend of small white bodies
    rows += [(113.5, 114, 111.0, 111.5), (111.0, 115, 110.8, 114.5)]  # small black, then a white engulfing it
    frame = candles(rows)
    signals = candlestick_signals(frame, PatternConfig(("CDLENGULFING",)))
    assert signals["CDLENGULFING"].iloc[-1] == 100
    spans = programmatic_spans(frame, DAY, DAY + pd.Timedelta(days=1), PatternConfig(("CDLENGULFING",)))
    last = spans.iloc[-1]
    assert (last["start_time"], last["end_time"], last["label"]) == (
        frame.open_time.iloc[-2],
        frame.open_time.iloc[-1],
        "bullish_engulfing",
    )
    assert (
        span_counts(spans, PatternConfig(("CDLENGULFING",)))["bullish_engulfing"]
        == (spans["label"] == "bullish_engulfing").sum()
    )


def test_spans_respect_the_window_and_gaps():
    day = simulate_range("BTCUSDT", "2024-01-01", "2024-01-02").candles
    spans = programmatic_spans(day, DAY, DAY + pd.Timedelta(days=1))
    assert (
        len(spans) > 0
        and (spans["end_time"] >= DAY).all()
        and (spans["end_time"] < DAY + pd.Timedelta(days=1)).all()
    )
    gappy = day.drop(index=day.index[1500:1501])
    gap_spans = programmatic_spans(gappy, DAY, DAY + pd.Timedelta(days=1))
    assert not (
        (gap_spans["start_time"] < day.open_time[1500]) & (gap_spans["end_time"] > day.open_time[1500])
    ).any()


def test_unknown_pattern_is_rejected():
    with pytest.raises(ValueError, match="CDLNOPE"):
        PatternConfig(("CDLNOPE",))


def test_planter_is_off_by_default_and_inserts_known_spans():
    plain = simulate_day("ETHUSDT", "2024-01-05")
    assert plain.patterns.empty
    default_again = simulate_day("ETHUSDT", "2024-01-05", SimulatorConfig())
    pd.testing.assert_frame_equal(plain.candles, default_again.candles)
    planted = simulate_day("ETHUSDT", "2024-01-05", SimulatorConfig(plant_patterns=True))
    assert len(planted.patterns) >= 15
    inside = np.zeros(1440, dtype=bool)
    for span in planted.patterns.itertuples(index=False):
        s = int((span.start_time - planted.candles.open_time[0]) / pd.Timedelta(minutes=1))
        e = int((span.end_time - planted.candles.open_time[0]) / pd.Timedelta(minutes=1))
        assert not inside[s : e + 1].any() and 20 <= e - s + 1 <= 40
        inside[s : e + 1] = True
    changed = (planted.candles["close"] != plain.candles["close"]).to_numpy()
    assert changed[inside].mean() > 0.8 and not changed[~inside].any()
    assert planted.candles["close"].iloc[-1] == plain.candles["close"].iloc[-1]


def test_macro_f1_matches_sklearn_and_bootstrap_gate_decides():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    labels = ["O", "a", "b"]
    y = rng.choice(labels, 3000, p=[0.7, 0.15, 0.15]).astype(object)
    good = np.where(rng.random(3000) < 0.8, y, "O").astype(object)
    noise = rng.choice(labels, 3000).astype(object)
    assert macro_f1(y, good, labels) == pytest.approx(f1_score(y, good, labels=labels, average="macro"))
    test = paired_block_bootstrap(y, good, noise, labels, block=50, n_boot=300)
    assert test["diff"] > 0.3 and test["ci_low"] > 0 and test["p_value"] < 0.01
    assert decide_pattern_promotion(
        y, good, {"majority": np.full(3000, "O", dtype=object), "noise": noise}, labels, n_boot=300
    ).promote
    same = decide_pattern_promotion(y, noise, {"noise": noise}, labels, n_boot=300)
    assert not same.promote and "REJECTED" in same.reason
