"""ChampionCache: champions served from a real MLflow registry by alias, cached by version."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from antmeter.learn.bundle import ONNX_FP32, ONNX_INT8, SERVING_FILE
from antmeter.learn.datasets import FeatureScaler, FeatureSchema
from antmeter.learn.lightning_loop import save_weights
from antmeter.learn.models import build_model
from antmeter.learn.onnx import export_onnx, quantize_int8
from antmeter.registry import versions

WINDOW, FEATURES, HORIZONS = 8, 3, [5]
NAME = "antmeter-lstm"


def _bundle(directory: Path, seed: int) -> Path:
    """A small (untrained, seeded) LSTM bundle with every file a served bundle has."""
    torch.manual_seed(seed)
    model = build_model(
        "lstm",
        n_features=FEATURES,
        window=WINDOW,
        horizons=HORIZONS,
        n_classes=2,
        params={"lstm_units": [8], "dense_units": 4},
    )
    directory.mkdir(parents=True)
    save_weights(model, directory)
    schema = FeatureSchema(tuple(f"f{i}" for i in range(FEATURES)), ("float64",) * FEATURES)
    FeatureScaler.fit(np.random.default_rng(seed).normal(size=(50, FEATURES)), schema).save(directory)
    export_onnx(model, FEATURES, WINDOW, directory / ONNX_FP32)
    quantize_int8(directory / ONNX_FP32, directory / ONNX_INT8)
    config = {"model_type": "lstm", "window": WINDOW, "horizons": HORIZONS, "task": "binary", "n_classes": 2}
    (directory / SERVING_FILE).write_text(json.dumps(config))
    return directory


@pytest.fixture
def client(tmp_path):
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # tracking and registry both here: an earlier test in this process may have pointed the fluent
    # API's registry elsewhere (MlflowResource.client() sets both)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("cache", artifact_location=(tmp_path / "artifacts").as_uri())
    yield MlflowClient(tracking_uri=uri, registry_uri=uri), experiment


def _register(client, experiment, tmp_path: Path, seed: int):
    run = client.create_run(experiment)
    version = versions.register_bundle(client, NAME, run.info.run_id, _bundle(tmp_path / f"b{seed}", seed))
    client.set_terminated(run.info.run_id)
    return version


def test_no_champion_is_none_then_alias_moves_without_restart(client, tmp_path):
    client, experiment = client
    cache = versions.ChampionCache(client, tmp_path / "cache")
    assert cache.get(NAME) is None  # no registered model at all
    first = _register(client, experiment, tmp_path, seed=1)
    assert cache.get(NAME) is None  # registered, but no champion alias yet
    client.set_registered_model_alias(NAME, versions.CHAMPION, first.version)

    served = cache.get(NAME)
    assert served is not None and served.version == str(first.version)
    assert served.uri == f"models:/{NAME}@champion"
    windows = np.random.default_rng(0).normal(size=(4, WINDOW, FEATURES))
    proba_v1, _ = served.model.predict_windows(windows)
    assert cache.get(NAME).model is served.model  # cached by version: no second download

    second = _register(client, experiment, tmp_path, seed=2)
    client.set_registered_model_alias(NAME, versions.CHAMPION, second.version)
    moved = cache.get(NAME)
    assert moved.version == str(second.version)
    proba_v2, _ = moved.model.predict_windows(windows)
    assert not np.allclose(proba_v1, proba_v2)  # really the other weights
    assert sorted(p.name for p in (tmp_path / "cache" / NAME).iterdir()) == ["v1", "v2"]

    # a new process (a new cache on the same directory) reuses the downloaded bundle
    again = versions.ChampionCache(client, tmp_path / "cache").get(NAME)
    np.testing.assert_allclose(again.model.predict_windows(windows)[0], proba_v2, rtol=1e-6)


def test_refresh_interval_bounds_alias_lookups(client, tmp_path):
    client, experiment = client
    first = _register(client, experiment, tmp_path, seed=1)
    client.set_registered_model_alias(NAME, versions.CHAMPION, first.version)
    cache = versions.ChampionCache(client, tmp_path / "cache", refresh_s=3600)
    assert cache.get(NAME).version == "1"
    second = _register(client, experiment, tmp_path, seed=2)
    client.set_registered_model_alias(NAME, versions.CHAMPION, second.version)
    assert cache.get(NAME).version == "1"  # within refresh_s the last answer stands
    assert versions.ChampionCache(client, tmp_path / "cache").get(NAME).version == "2"


def test_model_names_never_become_paths():
    assert versions._safe_name("../../etc") == "_.._etc"
    with pytest.raises(ValueError, match="no usable directory"):
        versions._safe_name("..")
