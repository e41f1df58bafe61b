"""The deployment knobs a replay uses: the simulated clock, model types, settings and fine-tune
overrides from the environment (exercised end to end by antmeter_tests/integration/test_e2e_retraining.py).
The clock variables start unset (conftest's ``_wall_clock``)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from antmeter_assets import automation, models
from antmeter_assets.partitions import clock_is_configured, utc_now
from antmeter_resources import AntmeterSettings, CandleSourceResource, enabled_model_types, settings_overrides

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _default_deployment(monkeypatch):
    """Each test starts from the defaults, whatever the caller's environment sets."""
    for name in ("ANTMETER_MODEL_TYPES", "ANTMETER_SETTINGS", "ANTMETER_FINE_TUNE"):
        monkeypatch.delenv(name, raising=False)


def test_the_simulated_clock_runs_from_its_origin_at_its_speed(monkeypatch):
    monkeypatch.setenv("ANTMETER_CLOCK_ORIGIN", "2024-03-08T00:00:00Z")
    monkeypatch.setenv("ANTMETER_CLOCK_WALL_START", str(time.time() - 100.0))
    monkeypatch.setenv("ANTMETER_CLOCK_SPEED", "60")
    now = utc_now()
    assert clock_is_configured()
    # 100 wall seconds at 60x: 100 simulated minutes (plus what this test's own seconds add)
    assert pd.Timedelta(minutes=100) <= now - pd.Timestamp("2024-03-08", tz="UTC") < pd.Timedelta(minutes=110)
    assert now == now.floor("us"), "stored timestamps have microsecond resolution"
    monkeypatch.delenv("ANTMETER_CLOCK_SPEED")
    assert (
        pd.Timedelta(seconds=100)
        <= utc_now() - pd.Timestamp("2024-03-08", tz="UTC")
        < pd.Timedelta(minutes=1, seconds=50)
    )


def test_a_pinned_clock_wins_and_without_either_it_is_the_wall_clock(monkeypatch):
    assert not clock_is_configured()
    assert abs(utc_now() - pd.Timestamp.now(tz="UTC")) < pd.Timedelta(seconds=5)
    monkeypatch.setenv("ANTMETER_CLOCK_ORIGIN", "2024-03-08T00:00:00Z")
    monkeypatch.setenv("ANTMETER_CLOCK_WALL_START", str(time.time()))
    monkeypatch.setenv("ANTMETER_NOW", "2024-01-02T03:04:05")
    assert utc_now() == pd.Timestamp("2024-01-02T03:04:05Z")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ANTMETER_CLOCK_ORIGIN": "2024-03-08"}, "ANTMETER_CLOCK_WALL_START"),
        ({"ANTMETER_CLOCK_ORIGIN": "not a time", "ANTMETER_CLOCK_WALL_START": "0"}, "ANTMETER_CLOCK_ORIGIN"),
        (
            {
                "ANTMETER_CLOCK_ORIGIN": "2024-03-08",
                "ANTMETER_CLOCK_WALL_START": "0",
                "ANTMETER_CLOCK_SPEED": "0",
            },
            "ANTMETER_CLOCK_SPEED must be > 0",
        ),
    ],
)
def test_a_bad_clock_setting_is_named(monkeypatch, settings, message):
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        utc_now()


def test_the_harvest_follows_a_configured_clock_instead_of_the_tick(monkeypatch):
    with dg.instance_for_test() as instance:  # schedule contexts need an instance reference
        instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
        when = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as tick:
            assert [r.partition_key for r in automation.harvest_schedule(tick)] == ["2026-11-22|BTCUSDT"]
        monkeypatch.setenv("ANTMETER_CLOCK_ORIGIN", "2024-03-08T00:00:00Z")
        monkeypatch.setenv("ANTMETER_CLOCK_WALL_START", str(time.time() - 30))
        # the simulated day, and (in its first minutes) the day before, whose last candle closes at midnight
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as tick:
            assert [r.partition_key for r in automation.harvest_schedule(tick)] == [
                "2024-03-07|BTCUSDT",
                "2024-03-08|BTCUSDT",
            ]


def test_training_days_are_counted_back_from_the_configured_clock(monkeypatch):
    monkeypatch.setenv("ANTMETER_NOW", "2024-03-08T00:01:00")
    available = [f"2024-03-0{d}" for d in range(3, 9)]
    assert models.training_days(AntmeterSettings(training_days=2, serving_days=0), available) == [
        "2024-03-06",
        "2024-03-07",
    ]
    assert models.training_days(AntmeterSettings(training_days=2, serving_days=1), available) == [
        "2024-03-05",
        "2024-03-06",
    ]


def test_model_types_and_settings_come_from_the_environment(monkeypatch):
    assert enabled_model_types() == ["lstm", "transformer", "patchtst"]
    monkeypatch.setenv("ANTMETER_MODEL_TYPES", " LSTM, patchtst ,lstm")
    assert enabled_model_types() == ["lstm", "patchtst"]
    assert AntmeterSettings().model_types == ["lstm", "patchtst"]
    monkeypatch.setenv("ANTMETER_MODEL_TYPES", "lstm,gru")
    with pytest.raises(ValueError, match=r"ANTMETER_MODEL_TYPES: unknown model type\(s\) \['gru'\]"):
        enabled_model_types()

    assert settings_overrides() == {}
    monkeypatch.setenv("ANTMETER_SETTINGS", json.dumps({"preset": "ci", "training_days": 2}))
    assert settings_overrides() == {"preset": "ci", "training_days": 2}
    for bad, message in (
        ('{"traning_days": 2}', r"unknown or not overridable setting\(s\) \['traning_days'\]"),
        ('{"model_types": ["lstm"]}', "model_types: ANTMETER_MODEL_TYPES"),
        ("[1]", "must be a JSON object"),
        ("{", "not valid JSON"),
    ):
        monkeypatch.setenv("ANTMETER_SETTINGS", bad)
        with pytest.raises(ValueError, match=message):
            settings_overrides()


def test_fine_tune_overrides_reach_the_recipe_and_are_validated(monkeypatch):
    assert models.fine_tune_defaults() == {}
    assert models.TrainingRunConfig(mode="incremental").recipe_overrides() == {}
    monkeypatch.setenv("ANTMETER_FINE_TUNE", '{"fine_tune_lr": 0.01, "fine_tune_days": 1.5}')
    assert models.fine_tune_defaults() == {"fine_tune_lr": 0.01, "fine_tune_days": 1.5}
    monkeypatch.setenv("ANTMETER_FINE_TUNE", '{"lr": 0.01}')
    with pytest.raises(ValueError, match="keys among"):
        models.fine_tune_defaults()
    monkeypatch.setenv("ANTMETER_FINE_TUNE", '{"fine_tune_lr": 0}')
    with pytest.raises(Exception, match="fine_tune_lr"):
        models.fine_tune_defaults()


def test_the_simulator_signal_strength_is_configurable():
    assert CandleSourceResource().simulator_config().signal_strength == 0.5
    assert CandleSourceResource(signal_strength=1.0).simulator_config().signal_strength == 1.0


def test_a_code_location_of_one_model_type_with_replay_cadences():
    """Module-level settings are read when the code location loads: check them in a fresh process."""
    probe = """
import json
from antmeter_assets.definitions import defs
keys = sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys())
schedules = {s.name: s.cron_schedule for s in defs.schedules}
job = defs.resolve_job_def("incremental_retrain_job")
config = job.config_mapping.config_schema.default_value if job.config_mapping else None
settings = defs.resources["settings"]
print(json.dumps({"keys": keys, "predictions": schedules["predictions_schedule"],
                  "verification": str(defs.resolve_assets_def("verification_report").automation_conditions_by_key),
                  "config": config, "settings": [settings.model_types, settings.preset, settings.training_days]}))
"""
    env = {
        "PATH": "/usr/bin:/bin",
        "ANTMETER_MODEL_TYPES": "lstm",
        "ANTMETER_PREDICTIONS_CRON": "* * * * *",
        "ANTMETER_VERIFICATION_CRON": "*/2 * * * *",
        "ANTMETER_SETTINGS": '{"preset": "ci", "training_days": 2}',
        "ANTMETER_FINE_TUNE": '{"fine_tune_epochs": 4}',
    }
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", probe],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    model_keys = [k for k in loaded["keys"] if k.endswith(("_candidate", "_champion"))]
    assert model_keys == ["lstm_candidate", "lstm_champion"]
    assert loaded["predictions"] == "* * * * *"
    assert "*/2 * * * *" in loaded["verification"]
    assert loaded["config"]["ops"]["lstm_candidate"]["config"] == {
        "mode": "incremental",
        "fine_tune_epochs": 4,
        "fine_tune_lr": None,
        "fine_tune_days": None,
        "use_tuned": True,
    }
    assert loaded["settings"] == [["lstm"], "ci", 2]
