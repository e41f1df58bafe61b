"""Every candle interval end to end through the real assets: harvest (simulator) → features → labels →
training dataset → LSTM candidate → its gate → predictions → verification report, with windows, strides
and horizons counted in candles of the interval.

Each case harvests enough UTC-day partitions for a short feature warm-up and about a hundred samples
(three days at 1m, 150 at 1d: the purge of a fold spans window, horizon and embargo), on a pinned clock whose newest day is today's (still filling). The candidate is
served (by the operator's alias where the gate refused it: no signal is needed to test the plumbing),
the clock moves on 16 candles, and what it predicted is verified against the candles that followed. The
daily-horizon use is the 1d case: horizons of 2 and 4 days, an 8-candle window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from antmeter.features.pipeline import required_warmup_candles
from antmeter.learn.datasets import load_samples
from antmeter.live.service import InferenceService, ServiceSettings
from antmeter.market.candles import SUPPORTED_INTERVALS, interval_timedelta
from antmeter.registry import versions
from antmeter_assets import features, market, models, serving
from antmeter_assets.models import DATASET_DIR
from antmeter_resources.resources import FeatureSettings
from antmeter_tests.dagster.conftest import SYMBOL, make_pipeline, step_error, symbol_day

TODAY = pd.Timestamp("2024-06-01", tz="UTC")
HORIZONS = [2, 4]
WINDOW = 8
# days harvested (today included) per interval: ~100+ samples after warm-up, window and horizons
DAYS = {"1m": 3, "5m": 3, "15m": 3, "1h": 8, "4h": 30, "1d": 150}
# short, non-recursive windows (warm-up 5 candles): a daily series has few candles to spare
COMPACT = FeatureSettings(
    rsi_windows=[], macd=None, bollinger=[5, 2.0], ema_windows=[], sma_windows=[4], atr_window=None,
    adx_window=None, stoch=None, mfi_window=None, vwap_window=5, obv_window=5, return_lags=[1, 3],
    volatility_windows=[5], volume_avg_window=5, include_sentiment=False,
)  # fmt: skip
COMPACT_WARMUP = required_warmup_candles(COMPACT.to_feature_config())


def test_the_interval_table_is_the_one_the_issue_names():
    assert SUPPORTED_INTERVALS == ("1m", "5m", "15m", "1h", "4h", "1d")


@pytest.mark.parametrize("interval", SUPPORTED_INTERVALS)
def test_every_interval_materializes_end_to_end(interval, instance, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTMETER_NOW", (TODAY + pd.Timedelta(minutes=1)).isoformat())
    step = interval_timedelta(interval)
    per_day = int(pd.Timedelta(days=1) / step)
    days = [str(d.date()) for d in pd.date_range(end=TODAY, periods=DAYS[interval], freq="D")]
    pipeline = make_pipeline(
        instance, tmp_path / "data", f"sqlite:///{tmp_path / 'market.sqlite'}", interval=interval,
        horizons=HORIZONS, primary_horizon=HORIZONS[0], window=WINDOW, sample_stride=1, features=COMPACT,
        model_types=["lstm"], preset="ci", training_days=len(days) - 1, holdout_fraction=0.25,
    )  # fmt: skip
    for day in days:  # every day's candles first, so each day's labels see the next day's
        result = pipeline.materialize([market.ohlcv], symbol_day(day))
        assert result.success, result.get_step_failure_events()
    store = pipeline.market()
    closed = store.read_candles(SYMBOL, interval)
    assert len(closed) == per_day * (len(days) - 1) + (step == pd.Timedelta(minutes=1))
    assert (closed["open_time"].diff().dropna() == step).all()
    for day in days[:-1]:
        result = pipeline.materialize([features.features, features.labels], symbol_day(day))
        assert result.success, result.get_step_failure_events()

    day = days[-2]  # the newest complete day: its rows are features of the interval's candles
    feats = store.read_partition_frame("features", SYMBOL, day)
    labels = store.read_partition_frame("labels", SYMBOL, day)
    assert len(feats) == len(labels) == per_day
    candles = closed.set_index("open_time")["close"]
    later = labels["open_time"] + HORIZONS[1] * step
    known = later.isin(candles.index)
    expected = np.log(
        candles.loc[later[known]].to_numpy() / candles.loc[labels["open_time"][known]].to_numpy()
    )
    np.testing.assert_allclose(labels.loc[known, f"fwd_return_{HORIZONS[1]}"], expected, rtol=1e-9)
    assert labels.loc[~known, f"fwd_return_{HORIZONS[1]}"].isna().all()  # beyond today's closed candles

    names = ("training_dataset", "lstm_candidate", "lstm_champion")
    trained = pipeline.materialize([a for a in models.model_assets if a.key.path[0] in names])
    assert trained.success, step_error(trained)
    samples = load_samples(pipeline.data_dir.joinpath(*DATASET_DIR))
    assert samples.spec.interval == interval and samples.spec.window == WINDOW and len(samples) >= 90
    assert samples.spec.window_minutes == WINDOW * step / pd.Timedelta(minutes=1)
    times = pd.to_datetime(samples.sample_time, utc=True)
    assert ((times - times.min()) % step == pd.Timedelta(0)).all()  # one sample per candle, on its grid
    (gate,) = trained.asset_materializations_for_node("lstm_champion")
    meta = {k: v.value for k, v in gate.metadata.items()}
    assert meta["gate"] in {"promoted", "rejected"} and meta["rows_used"] > 0
    assert meta["reason"].split(":")[0] in {"PROMOTED", "REJECTED"}

    if meta["gate"] != "promoted":  # the operator serves it anyway, as from the API
        pipeline.resources["mlflow"].client().set_registered_model_alias(
            "antmeter-lstm", versions.CHAMPION, meta["candidate_version"]
        )
        assert pipeline.materialize(
            [a for a in models.model_assets if a.key.path[0] == "lstm_champion"]
        ).success

    later = TODAY + 16 * step + pd.Timedelta(minutes=1)
    monkeypatch.setenv("ANTMETER_NOW", later.isoformat())
    for day in pd.date_range(TODAY, later.floor("D"), freq="D"):
        assert pipeline.materialize([market.ohlcv], symbol_day(str(day.date()))).success
    live = pipeline.materialize([serving.predictions, serving.verification_report])
    assert live.success, step_error(live)
    predictions = store.read_frame("predictions")
    (made,) = live.asset_materializations_for_node("predictions")
    assert len(predictions) and set(predictions["horizon_min"]) == set(HORIZONS), {
        k: v.value for k, v in made.metadata.items()
    }
    opened = pd.DatetimeIndex(predictions["prediction_time"])
    assert ((opened - TODAY) % step == pd.Timedelta(0)).all() and opened.max() == later.floor(step) - step
    verified = store.read_frame("verification").merge(
        predictions, on=["symbol", "prediction_time", "horizon_min"]
    )
    assert len(verified) > 0
    closes = store.read_candles(SYMBOL, interval).set_index("open_time")["close"]
    outcome = verified["prediction_time"] + pd.to_timedelta(verified["horizon_min"] * step.value, unit="ns")
    assert (outcome + step <= later).all()  # only outcomes whose candle had closed
    np.testing.assert_allclose(
        verified["realized_return"],
        np.log(closes.loc[outcome].to_numpy() / closes.loc[verified["prediction_time"]].to_numpy()),
    )
    (report,) = live.asset_materializations_for_node("verification_report")
    assert report.metadata["verified"].value == len(verified)
    _the_api_serves_what_the_asset_predicted(pipeline, interval, later, predictions, tmp_path)


def _the_api_serves_what_the_asset_predicted(pipeline, interval, now, predictions, tmp_path):
    """The inference API's service (warm-up, window and staleness in candles of the interval) answers
    for the newest closed candle exactly what the predictions asset stored for it."""
    settings = pipeline.resources["settings"]
    client = pipeline.resources["mlflow"].client()
    service = InferenceService(
        pipeline.market(),
        client,
        versions.ChampionCache(client, tmp_path / "api-cache"),
        ServiceSettings(
            model_types=("lstm",),
            interval=interval,
            primary_horizon=HORIZONS[0],
            feature_config=settings.feature_config(),
        ),
        clock=lambda: now,
    )
    answer = service.predict_latest(SYMBOL, "lstm")
    newest = predictions[predictions["prediction_time"] == predictions["prediction_time"].max()]
    assert pd.Timestamp(answer["as_of"]) == newest["prediction_time"].iloc[0]
    assert pd.Timestamp(answer["as_of_close"]) == newest["prediction_time"].iloc[0] + interval_timedelta(
        interval
    )
    stored = newest.set_index("horizon_min")["prob_up"]
    for entry in answer["horizons"]:
        assert entry["probabilities"]["up"] == pytest.approx(stored[entry["horizon_min"]], abs=1e-6)
    # the candles a request sends: warm-up and window counted in candles of the interval
    candles = pipeline.market().read_candles(SYMBOL, interval)
    rows = service.predict_candles(candles.tail(COMPACT_WARMUP + WINDOW + 3), SYMBOL, "lstm")
    assert len(rows) and rows["prediction_time"].max() == newest["prediction_time"].iloc[0]
