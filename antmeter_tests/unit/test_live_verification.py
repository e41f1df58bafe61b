"""Verification timing, outcome values, rolling metrics against hand/sklearn values, baselines, report output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, brier_score_loss

from antmeter.learn.metrics import classification_metrics
from antmeter.live._frames import LiveInputError
from antmeter.live.verification import (
    REPORT_COLUMNS,
    VERIFICATION_COLUMNS,
    add_baselines,
    join_verification,
    plot_rolling_accuracy,
    rolling_report,
    to_markdown,
    verify_predictions,
)

T0 = pd.Timestamp("2024-03-01 00:00", tz="UTC")


def minute(i: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=i)


def candles(closes, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "open_time": pd.date_range(minute(start), periods=len(closes), freq="min"),
            "close": np.asarray(closes, float),
        }
    )


def predictions(times, horizon=5, prob_up=None, symbol="BTCUSDT", version="v1") -> pd.DataFrame:
    times = [minute(t) for t in times]
    prob = np.full(len(times), 0.7) if prob_up is None else np.asarray(prob_up, float)
    return pd.DataFrame(
        {
            "symbol": symbol,
            "prediction_time": pd.DatetimeIndex(times),
            "horizon_min": horizon,
            "model_name": "lgbm",
            "model_version": version,
            "prob_down": 1 - prob,
            "prob_flat": np.nan,
            "prob_up": prob,
            "predicted_class": (prob > 0.5).astype(int),
        }
    )


def test_outcome_is_used_only_once_its_candle_has_closed():
    closes = [100, 101, 102, 103, 104, 99, 98]  # close[5] = 99 < close[0]
    preds = predictions([0], horizon=5, prob_up=[0.2])
    frame = candles(closes)  # candle 5 is *in* the frame in every call below
    assert verify_predictions(preds, {"BTCUSDT": frame}, minute(5) + pd.Timedelta(seconds=59)).empty
    out = verify_predictions(preds, {"BTCUSDT": frame}, minute(6))
    assert list(out.columns) == VERIFICATION_COLUMNS
    row = out.iloc[0]
    assert row["realized_return"] == pytest.approx(np.log(99 / 100))
    assert row["realized_class"] == 0 and bool(row["correct"])  # predicted "not up", price went down
    assert row["verified_at"] == minute(6)


def test_missing_candle_stays_unverified_until_it_arrives():
    preds = predictions([0, 1], horizon=2)
    closes = candles([100, 100, 101, 102, 103])
    gap = closes.drop(index=2)  # candle 2 missing: prediction 0 (needs 0 and 2) cannot be verified
    out = verify_predictions(preds, {"BTCUSDT": gap}, minute(10))
    assert out["prediction_time"].tolist() == [minute(1)]
    assert out["realized_return"].iloc[0] == pytest.approx(np.log(102 / 100))
    later = verify_predictions(preds, {"BTCUSDT": closes}, minute(10))
    assert later["prediction_time"].tolist() == [minute(0), minute(1)]


def test_zero_return_is_not_up_and_three_class_band():
    closes = candles([100, 100, 100.02, 99.9, 100.5])
    preds = predictions([0, 1, 2, 3], horizon=1, prob_up=[0.9, 0.9, 0.1, 0.9])
    out = verify_predictions(preds, {"BTCUSDT": closes}, minute(10))
    assert out["realized_class"].tolist() == [0, 1, 0, 1]  # 0 return -> not up
    assert out["correct"].tolist() == [False, True, True, True]
    three_class = preds.assign(predicted_class=[1, 1, 0, 2])
    out3 = verify_predictions(
        three_class, {"BTCUSDT": closes}, minute(10), task="three_class", flat_band_bps=5.0
    )
    # returns in bps: 0, +2 (inside the 5 bps band), -12, +60
    assert out3["realized_class"].tolist() == [1, 1, 0, 2]
    with pytest.raises(ValueError, match="flat_band_bps"):
        verify_predictions(three_class, {"BTCUSDT": closes}, minute(10), task="three_class")


def test_mapping_and_symbol_frame_agree_for_several_symbols():
    btc, eth = candles([100, 101, 102]), candles([10, 9, 9.5])
    preds = pd.concat([predictions([0, 1], horizon=1), predictions([0, 1], horizon=1, symbol="ETHUSDT")])
    by_map = verify_predictions(preds, {"BTCUSDT": btc, "ETHUSDT": eth}, minute(3))
    long = pd.concat([btc.assign(symbol="BTCUSDT"), eth.assign(symbol="ETHUSDT")])
    by_frame = verify_predictions(preds, long, minute(3))
    pd.testing.assert_frame_equal(by_map, by_frame)
    eth_rows = by_map[by_map["symbol"] == "ETHUSDT"]
    assert eth_rows["realized_return"].tolist() == pytest.approx([np.log(0.9), np.log(9.5 / 9)])


def test_bad_input_is_named():
    preds = predictions([0])
    with pytest.raises(LiveInputError, match="prediction_time"):
        verify_predictions(
            preds.assign(prediction_time=[pd.Timestamp("2024-03-01")]), {"BTCUSDT": candles([1])}, minute(9)
        )
    with pytest.raises(LiveInputError, match="duplicate prediction key"):
        verify_predictions(pd.concat([preds, preds]), {"BTCUSDT": candles([1])}, minute(9))
    with pytest.raises(LiveInputError, match="close"):
        verify_predictions(preds, {"BTCUSDT": candles([1.0, -2.0])}, minute(9))
    with pytest.raises(ValueError, match="now"):
        verify_predictions(preds, {"BTCUSDT": candles([1])}, pd.Timestamp("2024-03-01"))


def joined(preds: pd.DataFrame, closes: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
    return join_verification(preds, verify_predictions(preds, {"BTCUSDT": closes}, now))


def test_rolling_metrics_match_hand_computation_on_count_window():
    closes = candles([100, 101, 100, 102, 103, 102])  # 1-min up classes: 1, 0, 1, 1, 0
    preds = predictions([0, 1, 2, 3, 4], horizon=1, prob_up=[0.8, 0.6, 0.3, 0.9, 0.2])
    report = rolling_report(joined(preds, closes, minute(10)), 3)
    model = report[report["predictor"] == "model"].reset_index(drop=True)
    assert model["n"].tolist() == [1, 2, 3, 3, 3]
    # window ending at row 3 holds rows 1..3: y = 0, 1, 1; p = .6, .3, .9; predicted 1, 0, 1
    last3 = model.iloc[3]
    assert last3["accuracy"] == pytest.approx(1 / 3)
    assert last3["balanced_accuracy"] == pytest.approx(0.5 * (0 / 1 + 1 / 2))
    assert last3["brier"] == pytest.approx(((0.6 - 0) ** 2 + (0.3 - 1) ** 2 + (0.9 - 1) ** 2) / 3)
    # top-label ECE, 15 bins: confidences .6 (wrong), .7 (wrong), .9 (right), one per bin
    assert last3["ece"] == pytest.approx((0.6 + 0.7 + 0.1) / 3)
    assert list(report.columns) == REPORT_COLUMNS


def test_rolling_metrics_agree_with_offline_metrics_on_full_window():
    rng = np.random.default_rng(3)
    closes = candles(100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 200))))
    preds = predictions(range(195), horizon=5, prob_up=rng.random(195))
    data = joined(preds, closes, minute(300))
    last = rolling_report(data, 1000).iloc[-1]
    y, p = data["realized_class"].to_numpy(), data["prob_up"].to_numpy()
    offline = classification_metrics(y, np.column_stack([1 - p, p]))  # the project's offline definitions
    assert last["n"] == len(data) == 195
    for name in ("accuracy", "balanced_accuracy", "brier", "ece"):
        assert last[name] == pytest.approx(offline[name]), name
    assert last["brier"] == pytest.approx(brier_score_loss(y, p))
    assert last["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, (p > 0.5).astype(int)))


def test_three_class_rolling_metrics_agree_with_offline_metrics():
    rng = np.random.default_rng(4)
    closes = candles(100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 120))))
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=110)
    preds = predictions(range(110), horizon=3).assign(
        prob_down=probs[:, 0],
        prob_flat=probs[:, 1],
        prob_up=probs[:, 2],
        predicted_class=probs.argmax(axis=1),
    )
    ver = verify_predictions(preds, {"BTCUSDT": closes}, minute(200), task="three_class", flat_band_bps=8.0)
    data = join_verification(preds, ver)
    last = rolling_report(data, "1D", task="three_class", flat_band_bps=8.0).iloc[-1]
    offline = classification_metrics(
        data["realized_class"].to_numpy(), data[["prob_down", "prob_flat", "prob_up"]].to_numpy()
    )
    assert set(data["realized_class"]) == {0, 1, 2}
    for name in ("accuracy", "balanced_accuracy", "brier", "ece"):
        assert last[name] == pytest.approx(offline[name]), name


def test_baselines_scored_on_the_same_rows():
    # closes: 100, 101, 100, 102, 103, 102, 104 ; horizon 2
    closes = candles([100, 101, 100, 102, 103, 102, 104])
    preds = predictions([1, 2, 3, 4], horizon=2, prob_up=[0.9, 0.9, 0.9, 0.9])
    data = joined(preds, closes, minute(20))
    # the prediction at t=1 has no candle t-2 -> persistence undefined -> row left out for every predictor
    report = rolling_report(data, "1h", candles={"BTCUSDT": closes}, class_rates=0.4)
    last = report.groupby("predictor").tail(1).set_index("predictor")
    assert set(last.index) == {"model", "majority", "persistence"}
    assert (last["n"] == 3).all()
    # outcomes for t=2,3,4 (2-min): 103>100 up, 102=102 not up, 104>103 up
    assert last.loc["model", "accuracy"] == pytest.approx(2 / 3)
    assert last.loc["majority", "accuracy"] == pytest.approx(1 / 3)  # rate 0.4 -> always "not up"
    assert last.loc["majority", "brier"] == pytest.approx(((0.4 - 1) ** 2 + 0.4**2 + (0.4 - 1) ** 2) / 3)
    # persistence: past 2-min returns at t=2: 100 vs 100 (not up), t=3: 102 vs 101 (up), t=4: 103 vs 100 (up)
    assert last.loc["persistence", "accuracy"] == pytest.approx(1 / 3)
    assert last.loc["persistence", "brier"] == pytest.approx(
        1 - 1 / 3
    )  # hard predictions: Brier = error rate


def test_baseline_missing_for_one_series_does_not_drop_model_rows():
    closes = candles(100 + np.sin(np.arange(40)))
    long = pd.concat([closes.assign(symbol="BTCUSDT"), closes.assign(symbol="ETHUSDT")])
    preds = pd.concat(
        [predictions(range(1, 30), horizon=1), predictions(range(1, 30), horizon=1, symbol="ETHUSDT")]
    )
    data = join_verification(preds, verify_predictions(preds, long, minute(60)))
    report = rolling_report(data, 50, candles=long, class_rates={"BTCUSDT": 0.5})  # no training rate for ETH
    last = report.groupby(["symbol", "predictor"]).tail(1).set_index(["symbol", "predictor"])
    assert set(last.loc["ETHUSDT"].index) == {"model", "persistence"}
    assert set(last.loc["BTCUSDT"].index) == {"model", "majority", "persistence"}
    assert (last["n"] == 29).all()
    assert rolling_report(data, 50, class_rates={})["predictor"].unique().tolist() == ["model"]


def test_add_baselines_uses_only_past_candles():
    closes = candles([100, 105, 110, 90])
    base = add_baselines(predictions([2], horizon=1), candles={"BTCUSDT": closes}, class_rates=(0.3, 0.7))
    assert base.loc[0, "persistence_class"] == 1  # 110 > 105: uses candles 1 and 2, not the drop at 3
    assert base.loc[0, "majority_class"] == 1 and base.loc[0, "majority_prob_up"] == pytest.approx(0.7)
    assert (
        add_baselines(predictions([2], horizon=1), class_rates={"ETHUSDT": 0.5})["majority_class"]
        .isna()
        .all()
    )
    with pytest.raises(ValueError, match="class_rates"):
        add_baselines(predictions([2], horizon=1), class_rates=(0.3, 0.3))


def test_time_window_and_every():
    closes = candles(100 + np.arange(40) % 3)
    preds = predictions(range(30), horizon=1)
    report = rolling_report(joined(preds, closes, minute(60)), "10min", every=7)
    model = report[report["predictor"] == "model"]
    assert model["n"].max() == 10
    assert model["window_end"].tolist() == [
        minute(0),
        minute(7),
        minute(14),
        minute(21),
        minute(28),
        minute(29),
    ]
    with pytest.raises(ValueError, match="window"):
        rolling_report(joined(preds, closes, minute(60)), "often")


def test_markdown_and_plot(tmp_path):
    closes = candles(100 + np.sin(np.arange(80)))
    preds = pd.concat([predictions(range(70), horizon=1), predictions(range(70), horizon=1, version="v2")])
    report = rolling_report(
        joined(preds, closes, minute(80)), 20, candles={"BTCUSDT": closes}, class_rates=0.5
    )
    table = to_markdown(report)
    lines = table.splitlines()
    assert (
        lines[0].startswith("| symbol") and len(lines) == 2 + 2 * 3
    )  # header, rule, 2 versions x 3 predictors
    assert "persistence" in table and "majority" in table
    path = plot_rolling_accuracy(report, tmp_path / "plots" / "acc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    empty = plot_rolling_accuracy(report.iloc[:0], tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert to_markdown(report.iloc[:0]) == "_no verified predictions_"
