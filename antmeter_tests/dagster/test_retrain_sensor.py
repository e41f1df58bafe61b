"""``retrain_on_drift`` driven by what the pipeline produces, not by hand-written metadata.

Simulated candles (planted signal strength 1.0, flipping at ``FLIP``) go through the harvest, features
and labels; the LSTM (``ci`` preset) is trained and its gate makes it the first champion; the clock moves
two post-flip days on, the predictions asset predicts them with the champion and the verification
report verifies them. The sensor then reads that report's materialization, exactly as in the
deployment (whose daemon run is ``antmeter_tests/integration/test_e2e_retraining.py``).
"""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest

from antmeter_assets import models, serving
from antmeter_resources import AntmeterSettings, CandleSourceResource
from antmeter_tests.dagster.conftest import evaluate_retrain_sensor, harvest_days, lstm_pipeline, train_lstm

# the timeline of the daemon end-to-end test (same simulator seed, symbols and days)
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
FLIP = pd.Timestamp("2024-03-06T00:00:00Z")
CHAMPION_CLOCK = "2024-03-06T00:00:00"
LIVE = pd.Timestamp("2024-03-08T00:00:00Z")
POLICY = {"accuracy_threshold": 0.55, "min_samples": 200, "cooldown_candles": 60}
DESTRUCTIVE = {"fine_tune_lr": 5.0, "fine_tune_epochs": 2}
GATE = [a for a in models.model_assets if a.key.path[0] == "lstm_champion"]


class Live:
    """The pipeline after training, with helpers that move the clock and run the live assets."""

    def __init__(self, pipeline, monkeypatch):
        self.pipeline, self.monkeypatch = pipeline, monkeypatch
        self.cursor: str | None = None

    def at(self, clock: pd.Timestamp | str) -> None:
        self.monkeypatch.setenv("ANTMETER_NOW", pd.Timestamp(clock).isoformat())

    def harvest(self, days, featurize=()) -> None:
        harvest_days(self.pipeline, days, SYMBOLS, featurize)

    def report(self, clock: pd.Timestamp) -> dict:
        self.at(clock)
        assert self.pipeline.materialize([serving.predictions]).success
        result = self.pipeline.materialize([serving.verification_report])
        assert result.success
        (event,) = result.asset_materializations_for_node("verification_report")
        return {k: v.value for k, v in event.metadata.items()}

    def sensor(self, cursor: str | None = None):
        return evaluate_retrain_sensor(self.pipeline, cursor)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    candles = CandleSourceResource(
        kind="simulator", seed=7, signal_strength=1.0, signal_flip_at=FLIP.isoformat()
    )
    with lstm_pipeline(tmp_path_factory.mktemp("sensor"), SYMBOLS, POLICY, candles) as (pipeline, patch):
        state = Live(pipeline, patch)
        state.at(CHAMPION_CLOCK)
        state.harvest(["2024-03-03", "2024-03-04", "2024-03-05"], featurize=("2024-03-04", "2024-03-05"))
        state.first_gate = train_lstm(pipeline)
        state.at(LIVE)
        state.harvest(["2024-03-06", "2024-03-07"])
        yield state


def test_the_first_champion_passed_the_significance_gate(live):
    gate = live.first_gate
    assert gate["gate"] == "promoted" and gate["champion_version"] == "1", gate["reason"]
    assert gate["p_value"] < gate["level"] and gate["rows_used"] > 100
    assert gate["state"] == "serving v1"


def test_predictions_use_only_candles_closed_by_their_clock(live):
    # the store already holds 03-06 and 03-07 complete (harvested at LIVE); a predictions run at noon
    # on 03-07 stamps its rows with its clock, so it must not predict on a candle closing after it (in
    # the deployment a harvest running beside it stores the next candle while it predicts)
    live.at("2024-03-07T12:00:30")
    assert live.pipeline.materialize([serving.predictions]).success
    rows = live.pipeline.market().read_frame("predictions", filters={"model_version": "1"})
    assert rows["prediction_time"].max() == pd.Timestamp("2024-03-07T11:59", tz="UTC")
    assert (rows["created_at"] >= rows["prediction_time"] + pd.Timedelta(minutes=1)).all()


def test_the_degraded_champion_is_retrained_once_per_episode(live):
    meta = live.report(LIVE)
    stats = meta["policy_stats"]["antmeter-lstm"]
    assert stats["model_version"] == "1" and stats["n"] >= 200
    assert stats["n_correct"] / stats["n"] < POLICY["accuracy_threshold"]  # the flip, as verified
    assert isinstance(meta["drift_warning"], bool)
    # the champion is also held to its own validated accuracy (its serving config, read by the report)
    assert "validated_reference" in stats and "cusum_validated" in stats
    assert "| antmeter-lstm |" in meta["retrain_charts"] and "cusum_validated" in meta["retrain_charts"]

    (request,), cursor = live.sensor()
    assert request.job_name == "lstm_incremental_retrain_job"
    assert (
        request.tags["antmeter/model_type"] == "lstm" and request.tags["antmeter/decision"] == "incremental"
    )
    assert "accuracy_below_threshold: CUSUM" in request.tags["antmeter/reasons"]

    skipped, _ = live.sensor(cursor)
    assert isinstance(skipped, dg.SkipReason) and "already evaluated" in skipped.skip_message
    # half an hour later the same episode continues: the same run key, so Dagster launches it once
    (again,), _ = live_sensor_after(live, LIVE + pd.Timedelta(minutes=30), cursor)
    assert again.run_key == request.run_key


def live_sensor_after(live: Live, clock: pd.Timestamp, cursor: str | None):
    live.report(clock)
    return live.sensor(cursor)


def test_the_cool_down_counts_from_the_end_of_the_last_retrain(live):
    first_key = live_sensor_after(live, LIVE + pd.Timedelta(minutes=35), None)[0][0].run_key
    # a gate of this type ends at 00:40 (the gate asset records its clock)
    live.at(LIVE + pd.Timedelta(minutes=40))
    assert live.pipeline.materialize(GATE).success
    cooled, cursor = live_sensor_after(live, LIVE + pd.Timedelta(minutes=70), None)
    assert isinstance(cooled, dg.SkipReason) and "cooldown: 30 min since the last retrain ended" in (
        cooled.skip_message
    )
    (later,), _ = live_sensor_after(live, LIVE + pd.Timedelta(minutes=105), cursor)
    assert later.job_name == "lstm_incremental_retrain_job" and later.run_key != first_key


def test_a_rejected_fine_tune_is_not_repeated_on_unchanged_data(live):
    # the incremental job's default fine-tune (ANTMETER_FINE_TUNE) is one the gate refuses
    live.monkeypatch.setenv("ANTMETER_FINE_TUNE", json.dumps(DESTRUCTIVE))
    live.at(LIVE + pd.Timedelta(minutes=110))
    run_config = {"ops": {"lstm_candidate": {"config": {"mode": "incremental", **DESTRUCTIVE}}}}
    gate = train_lstm(live.pipeline, run_config)
    assert gate["gate"] == "rejected" and gate["champion_version"] == "1"
    # no new day has completed: the same fine-tune would meet the same champion on the same data,
    # so the next episode escalates to the full retrain at once instead of repeating it
    (escalated,), _ = live_sensor_after(live, LIVE + pd.Timedelta(minutes=175), None)
    assert escalated.job_name == "lstm_training_job" and escalated.tags["antmeter/decision"] == "full"
    assert escalated.tags["antmeter/reasons"].endswith("a full retrain instead")
    # another fine-tune setting is another retrain: it may run
    live.monkeypatch.setenv("ANTMETER_FINE_TUNE", json.dumps({**DESTRUCTIVE, "fine_tune_epochs": 3}))
    (again,), _ = live_sensor_after(live, LIVE + pd.Timedelta(minutes=180), None)
    assert again.job_name == "lstm_incremental_retrain_job"
    live.monkeypatch.delenv("ANTMETER_FINE_TUNE")


def test_policy_settings_reach_the_report_and_a_version_that_no_longer_serves_is_not_judged(live):
    settings: AntmeterSettings = live.pipeline.resources["settings"]
    assert settings.retrain_policy().accuracy_threshold == POLICY["accuracy_threshold"]
    live.pipeline.instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="lstm_champion", metadata={"gate": "promoted", "champion_version": "2"}
        )
    )
    stale, _ = live_sensor_after(live, LIVE + pd.Timedelta(minutes=120), None)
    assert isinstance(stale, dg.SkipReason) and "report judged v1 but v2 serves" in stale.skip_message
