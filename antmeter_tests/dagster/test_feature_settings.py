"""Feature settings configured where users configure things: the ``features`` block of the ``settings``
resource, set in the run config (the launchpad's YAML), changes the features, the training dataset's
columns and its fingerprint; bad keys and bad values fail with errors naming them."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest

from antmeter.features.pipeline import FeatureConfig
from antmeter_assets import features, market, models
from antmeter_assets.features import partition_file
from antmeter_resources import AntmeterSettings, FeatureSettings, resources_from_env
from antmeter_tests.dagster.conftest import SYMBOL, make_pipeline, step_error, symbol_day

DAYS = ["2024-01-02", "2024-01-03"]
LAUNCHPAD_FEATURES = {
    "rsi_windows": [7, 21],
    "ema_windows": [],
    "macd": None,
    "include_sentiment": False,
    "custom": ["antmeter_tests.factories.spread_feature"],
}


def run_config(feature_settings: dict) -> dict:
    """What a user types into the launchpad: ``resources: settings: config: features: ...``."""
    return {"resources": {"settings": {"config": {"features": feature_settings}}}}


@pytest.fixture
def harvested(instance, tmp_path, sqlite_url):
    pipeline = make_pipeline(instance, tmp_path / "data", sqlite_url, serving_days=0, training_days=1)
    for day in [*DAYS, "2024-01-04"]:
        assert pipeline.materialize([market.ohlcv], symbol_day(day)).success
    return pipeline


def materialize_features(pipeline, config: dict | None) -> dict[str, pd.DataFrame]:
    frames = {}
    for day in DAYS:
        result = dg.materialize(
            [features.features, features.labels],
            partition_key=symbol_day(day),
            instance=pipeline.instance,
            resources=pipeline.resources,
            run_config=run_config(config) if config is not None else None,
        )
        assert result.success
        frames[day] = pd.read_parquet(partition_file(pipeline.resources["settings"], "features", SYMBOL, day))
    return frames


def dataset_metadata(pipeline, config: dict | None) -> dict:
    result = dg.materialize(
        [models.training_dataset],
        instance=pipeline.instance,
        resources=pipeline.resources,
        run_config=run_config(config) if config is not None else None,
    )
    assert result.success, result.get_step_failure_events()
    (event,) = result.asset_materializations_for_node("training_dataset")
    return {k: v.value for k, v in event.metadata.items()}


def test_launchpad_feature_settings_change_features_dataset_and_fingerprint(harvested):
    default = materialize_features(harvested, None)[DAYS[0]]
    default_dataset = dataset_metadata(harvested, None)
    assert {"rsi_14", "ema_9_rel", "macd_12_26_9_rel", "sentiment_mean_1h"} <= set(default.columns)

    configured = materialize_features(harvested, LAUNCHPAD_FEATURES)[DAYS[0]]
    columns = set(configured.columns)
    assert {"rsi_7", "rsi_21", "spread_rel", "spread_rel_mean_5"} <= columns
    assert not {"rsi_14", "ema_9_rel", "macd_12_26_9_rel", "sentiment_mean_1h"} & columns
    assert configured["rsi_7"].notna().mean() > 0.99  # computed, not just named

    dataset = dataset_metadata(harvested, LAUNCHPAD_FEATURES)
    # rsi 14 -> 7, 21 (+1); no sentiment (-4), macd (-3) or ema (-3); two custom columns (+2)
    assert dataset["features"] == default_dataset["features"] + 1 - 4 - 3 - 3 + 2
    assert dataset["fingerprint"] != default_dataset["fingerprint"]
    assert dataset["feature_config"]["rsi_windows"] == [7, 21]
    days = json.loads((harvested.data_dir / "datasets" / "training" / "days.json").read_text())
    assert days["feature_config"]["custom"] == LAUNCHPAD_FEATURES["custom"]


def test_unknown_feature_key_in_the_launchpad_is_named(harvested):
    with pytest.raises(dg.DagsterInvalidConfigError, match="rsi_windowz"):
        materialize_features(harvested, {"rsi_windowz": [7]})


def test_bad_feature_values_fail_naming_the_setting(harvested):
    result = dg.materialize(
        [features.features],
        partition_key=symbol_day(DAYS[0]),
        instance=harvested.instance,
        resources=harvested.resources,
        run_config=run_config({"rsi_windows": [0]}),
        raise_on_error=False,
    )
    assert not result.success
    assert "settings.features.rsi_windows" in step_error(result)
    assert not partition_file(harvested.resources["settings"], "features", SYMBOL, DAYS[0]).exists()
    with pytest.raises(ValueError, match=r"settings\.features\.custom: .*no_such_module"):
        AntmeterSettings(features={"custom": ["no_such_module.feature"]}).feature_config()


def test_feature_settings_mirror_feature_config_and_env_json(monkeypatch):
    assert list(FeatureSettings.model_fields) == list(FeatureConfig.__dataclass_fields__)
    assert FeatureSettings().to_feature_config() == FeatureConfig()
    monkeypatch.setenv("ANTMETER_SETTINGS", json.dumps({"features": {"sma_windows": [5], "cci_window": 20}}))
    config = resources_from_env()["settings"].feature_config()
    assert config.sma_windows == (5,) and config.cci_window == 20
    monkeypatch.setenv("ANTMETER_SETTINGS", json.dumps({"features": {"sma_window": [5]}}))
    with pytest.raises(ValueError, match=r"features\.sma_window"):
        resources_from_env()
