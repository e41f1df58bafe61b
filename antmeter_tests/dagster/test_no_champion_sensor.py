"""A model type whose first candidate the gate refuses serves nothing, and ``retrain_on_drift`` then
asks for its full retrain once the retry interval has passed **and** the data window has moved on,
never again on the data it was refused on.

Simulated candles without a planted signal (a random walk: no model beats the naive baselines
significantly) go through the harvest, features, labels, training and the gate, exactly as in the
deployment; the verification reports and the sensor then run on the pipeline's own records.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from antmeter_assets import serving
from antmeter_resources import CandleSourceResource
from antmeter_tests.dagster.conftest import evaluate_retrain_sensor, harvest_days, lstm_pipeline, train_lstm

SYMBOLS = ["BTCUSDT"]
TRAINED_AT = pd.Timestamp("2024-03-06T00:00:00Z")
POLICY = {"no_champion_retry_candles": 720, "cooldown_candles": 60}


class Unserved:
    def __init__(self, pipeline, monkeypatch):
        self.pipeline, self.monkeypatch = pipeline, monkeypatch

    def at(self, clock: pd.Timestamp) -> None:
        self.monkeypatch.setenv("ANTMETER_NOW", clock.isoformat())

    def harvest(self, days, featurize=()) -> None:
        harvest_days(self.pipeline, days, SYMBOLS, featurize)

    def sensor_after_report(self, clock: pd.Timestamp):
        self.at(clock)
        assert self.pipeline.materialize([serving.predictions]).success
        assert self.pipeline.materialize([serving.verification_report]).success
        return evaluate_retrain_sensor(self.pipeline)[0]


@pytest.fixture(scope="module")
def unserved(tmp_path_factory):
    candles = CandleSourceResource(kind="simulator", seed=11, signal_strength=0.0)
    with lstm_pipeline(tmp_path_factory.mktemp("unserved"), SYMBOLS, POLICY, candles) as (pipeline, patch):
        state = Unserved(pipeline, patch)
        state.at(TRAINED_AT)
        state.harvest(["2024-03-03", "2024-03-04", "2024-03-05"], featurize=("2024-03-04", "2024-03-05"))
        state.first_gate = train_lstm(pipeline)
        yield state


def test_a_refused_first_candidate_leaves_no_champion(unserved):
    gate = unserved.first_gate
    assert gate["gate"] == "rejected" and gate["champion_version"] == "none", gate["reason"]
    assert gate["state"].startswith("no champion: ") and gate["retrain_key"] != "none"


def test_nothing_is_retried_within_the_retry_interval(unserved):
    waiting = unserved.sensor_after_report(TRAINED_AT + pd.Timedelta(hours=6))
    assert isinstance(waiting, dg.SkipReason)
    assert "no_champion: nothing serves; next full retrain in" in waiting.skip_message


def test_after_the_interval_the_refused_data_is_not_trained_on_again(unserved):
    stale = unserved.sensor_after_report(TRAINED_AT + pd.Timedelta(hours=13))
    assert isinstance(stale, dg.SkipReason) and "awaiting_new_data" in stale.skip_message


def test_a_new_day_of_data_brings_the_full_retrain(unserved):
    clock = TRAINED_AT + pd.Timedelta(days=1, hours=1)
    unserved.at(clock)
    unserved.harvest(["2024-03-06", "2024-03-07"], featurize=("2024-03-06",))
    (request,) = unserved.sensor_after_report(clock)
    assert request.job_name == "lstm_training_job" and request.tags["antmeter/decision"] == "full"
    assert request.tags["antmeter/reasons"].startswith("no_champion: nothing serves")
