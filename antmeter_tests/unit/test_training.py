"""train_model / predict / save_weights / load_weights / fine_tune on real windowed datasets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from antmeter.learn.datasets import DatasetSpec, WindowedDataset, build_samples
from antmeter.learn.folds import holdout_split
from antmeter.learn.lightning_loop import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    TargetScaler,
    TrainResult,
    fine_tune,
    load_target_scaler,
    load_weights,
    predict,
    save_weights,
    train_model,
)
from antmeter.learn.models import build_model, load_preset
from antmeter_tests.unit.synthetic_frames import FEATURES, synthetic_frame

SPEC = DatasetSpec(window=20, stride=1, horizons=(5, 10, 30), task="binary")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads on a shared 2-core machine; restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def datasets() -> tuple[WindowedDataset, WindowedDataset]:
    """Two symbols whose persistent ``signal`` feature drives future returns; a time holdout of 30%."""
    frames = {
        symbol: synthetic_frame(900, seed=seed, horizons=SPEC.horizons, signal_strength=2.0)
        for seed, symbol in enumerate(("BTCUSDT", "ETHUSDT"))
    }
    samples = build_samples(frames, FEATURES, SPEC)
    fold = holdout_split(
        samples.sample_time, fraction=0.3, window_minutes=SPEC.window, max_horizon_minutes=SPEC.max_horizon
    )
    scaled = samples.scaled(samples.fit_scaler(fold.train))
    return scaled.view(fold.train), scaled.view(fold.validation)


@pytest.fixture(scope="module")
def trained(datasets, tmp_path_factory) -> TrainResult:
    train_ds, val_ds = datasets
    preset = load_preset("laptop", "lstm")
    return train_model(
        "lstm",
        train_ds,
        val_ds,
        n_features=len(FEATURES),
        window=SPEC.window,
        horizons=SPEC.horizons,
        n_classes=SPEC.n_classes,
        params=preset["model"],
        loss=preset["loss"],
        seed=3,
        checkpoint_dir=tmp_path_factory.mktemp("run") / "checkpoints",
        **{**preset["training"], "max_epochs": 4, "patience": 4, "batch_size": 64, "lr": 5e-3},
    )


def test_training_records_history_checkpoints_and_learns_out_of_sample(
    trained: TrainResult, datasets
) -> None:
    _, val_ds = datasets
    assert trained.epochs_run == len(trained.history) == 4
    assert [row["epoch"] for row in trained.history] == [0, 1, 2, 3]
    assert trained.best_val_loss == pytest.approx(min(row["val_loss"] for row in trained.history))
    assert trained.history[-1]["train_loss"] < trained.history[0]["train_loss"]
    assert trained.checkpoint_path is not None and trained.checkpoint_path.name == "best.ckpt"
    checkpoint_dir = trained.checkpoint_path.parent
    assert (checkpoint_dir / "last.ckpt").exists()
    assert json.loads((checkpoint_dir / "progress.json").read_text()) == {
        "completed_epochs": 4,
        "finished": True,
    }
    assert trained.resumed_from is None and not trained.model.training
    proba, _ = predict(trained.model, val_ds)
    # the 5-minute direction is predictable from the signal feature: held-out accuracy clearly above chance
    accuracy = float((proba[:, 0].argmax(-1) == val_ds.y_class[:, 0]).mean())
    majority = max(val_ds.y_class[:, 0].mean(), 1 - val_ds.y_class[:, 0].mean())
    assert accuracy > majority + 0.1, (accuracy, majority)


def test_target_scaler_is_fitted_on_training_targets_only(trained: TrainResult, datasets) -> None:
    train_ds, val_ds = datasets
    assert trained.target_scaler == TargetScaler.fit(train_ds.y_reg)
    assert trained.target_scaler != TargetScaler.fit(np.concatenate([train_ds.y_reg, val_ds.y_reg]))
    raw = predict(trained.model, val_ds, target_scaler=trained.target_scaler)[1]
    standardized = predict(trained.model, val_ds)[1]
    np.testing.assert_allclose(raw, trained.target_scaler.inverse(standardized), rtol=1e-6)


def test_predict_accepts_datasets_and_arrays_alike(trained: TrainResult, datasets) -> None:
    _, val_ds = datasets
    proba, regression = predict(trained.model, val_ds, batch_size=37)
    x = val_ds.batch()[0]
    proba_array, regression_array = predict(trained.model, x, batch_size=1000)
    assert proba.shape == (len(val_ds), 3, 2) and regression.shape == (len(val_ds), 3)
    assert proba.dtype == np.float32 and regression.dtype == np.float32
    np.testing.assert_allclose(proba.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(proba, proba_array, atol=1e-6)
    np.testing.assert_allclose(regression, regression_array, atol=1e-6)
    with pytest.raises(ValueError, match=r"window x features \(19, 4\)"):
        predict(trained.model, x[:, 1:])


def test_weights_round_trip_through_safetensors_and_json(
    trained: TrainResult, datasets, tmp_path: Path
) -> None:
    _, val_ds = datasets
    directory = save_weights(trained.model, tmp_path / "model", target_scaler=trained.target_scaler)
    assert sorted(p.name for p in directory.iterdir()) == [WEIGHTS_FILE, CONFIG_FILE]
    assert (directory / WEIGHTS_FILE).read_bytes()[:1] != b"\x80"  # a safetensors header, not a pickle
    config = json.loads((directory / CONFIG_FILE).read_text())
    assert config["spec"]["model_type"] == "lstm" and config["spec"]["horizons"] == [5, 10, 30]
    restored = load_weights(directory)
    assert load_target_scaler(directory) == trained.target_scaler
    for mine, theirs in zip(predict(trained.model, val_ds), predict(restored, val_ds), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    with pytest.raises(ValueError, match="no .spec"):
        save_weights(torch.nn.Linear(2, 2), tmp_path / "other")


def test_rerunning_a_finished_run_resumes_without_training_more(trained: TrainResult, datasets) -> None:
    train_ds, val_ds = datasets
    preset = load_preset("laptop", "lstm")
    again = train_model(
        "lstm",
        train_ds,
        val_ds,
        n_features=len(FEATURES),
        window=SPEC.window,
        horizons=SPEC.horizons,
        n_classes=2,
        params=preset["model"],
        loss=preset["loss"],
        seed=3,
        checkpoint_dir=trained.checkpoint_path.parent,
        **{**preset["training"], "max_epochs": 4, "patience": 4, "batch_size": 64, "lr": 5e-3},
    )
    assert again.resumed_from == trained.checkpoint_path.parent / "last.ckpt"
    assert again.history == trained.history
    for key, value in trained.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key


def test_fine_tune_trains_a_copy_at_the_given_rate(trained: TrainResult, datasets) -> None:
    train_ds, val_ds = datasets
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    # incremental retraining: the newer (held-out) block becomes training data, the older one validates
    tuned = fine_tune(
        trained.model, val_ds, train_ds, epochs=2, lr=1e-4, target_scaler=trained.target_scaler, batch_size=64
    )
    assert all(torch.equal(v, trained.model.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(v, tuned.model.state_dict()[k]) for k, v in before.items())
    assert tuned.epochs_run == 2 and all(row["lr"] == pytest.approx(1e-4) for row in tuned.history)
    assert tuned.target_scaler == trained.target_scaler
    assert tuned.checkpoint_path is None and tuned.model.spec == trained.model.spec


def test_training_rejects_bad_settings(datasets, tmp_path: Path) -> None:
    train_ds, val_ds = datasets
    common = {
        "n_features": len(FEATURES),
        "window": SPEC.window,
        "horizons": SPEC.horizons,
        "n_classes": 2,
        "params": {"lstm_units": [4]},
        "checkpoint_dir": tmp_path,
        "max_epochs": 1,
    }
    with pytest.raises(ValueError, match="val_ds is empty"):
        train_model("lstm", train_ds, torch.utils.data.Subset(val_ds, []), **common)
    with pytest.raises(ValueError, match="lr_schedule"):
        train_model("lstm", train_ds, val_ds, lr_schedule="step", **common)
    with pytest.raises(ValueError, match="horizon index 1"):
        TargetScaler.fit(np.array([[0.1, np.nan]]))
    model = build_model(
        "lstm", n_features=4, window=20, horizons=(5,), n_classes=2, params={"lstm_units": [4]}
    )
    with pytest.raises(ValueError, match="got no samples"):
        predict(model, np.zeros((0, 20, 4), dtype=np.float32))
