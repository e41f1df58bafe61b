"""Baselines: shapes, finite probabilities, causal persistence, and out-of-sample skill on a planted signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from antmeter.learn.baselines import (
    GradientBoostingBaseline,
    LogisticBaseline,
    MajorityBaseline,
    PersistenceBaseline,
    evaluate_baselines,
    fit_all_baselines,
)
from antmeter.learn.datasets import DatasetSpec, SampleSet, build_samples
from antmeter.learn.folds import holdout_split
from antmeter.learn.metrics import EVALUATION_COLUMNS
from antmeter_tests.unit.synthetic_frames import FEATURES, synthetic_frame

HORIZONS = (5, 10)


@pytest.fixture(autouse=True)
def _one_thread():
    """The test machine's few cores are shared: multi-threaded OpenMP/BLAS spins and runs far slower."""
    with threadpool_limits(limits=1):
        yield


def _split(task: str, signal_strength: float, n_rows: int = 1500) -> tuple[SampleSet, np.ndarray, np.ndarray]:
    frames = {
        "BTCUSDT": synthetic_frame(n_rows, seed=11, horizons=HORIZONS, signal_strength=signal_strength),
        "ETHUSDT": synthetic_frame(n_rows, seed=12, horizons=HORIZONS, signal_strength=signal_strength),
    }
    spec = DatasetSpec(window=12, horizons=HORIZONS, task=task)
    samples = build_samples(frames, FEATURES, spec)
    fold = holdout_split(
        samples.sample_time, fraction=0.3, window_minutes=spec.window, max_horizon_minutes=spec.max_horizon
    )
    scaled = samples.scaled(samples.fit_scaler(fold.train))
    return scaled, fold.train, fold.validation


def _metric(table: pd.DataFrame, model: str, metric: str) -> np.ndarray:
    rows = table[(table["model"] == model) & (table["metric"] == metric)].sort_values("horizon")
    return rows["value"].to_numpy()


@pytest.mark.parametrize("task", ["binary", "three_class"])
def test_learned_baselines_beat_majority_out_of_sample_on_a_planted_signal(task):
    samples, train, validation = _split(task, signal_strength=1.0)
    fitted = fit_all_baselines(samples.view(train), return_feature="log_return_1")
    assert list(fitted) == ["majority", "persistence", "logistic", "gradient_boosting"]
    table = evaluate_baselines(fitted, samples.view(validation))
    assert list(table.columns) == EVALUATION_COLUMNS
    assert set(table["model"]) == set(fitted) and sorted(set(table["horizon"])) == list(HORIZONS)
    assert (_metric(table, "majority", "n") == len(validation)).all()
    for model in ("logistic", "gradient_boosting"):
        assert (_metric(table, model, "log_loss") < _metric(table, "majority", "log_loss") - 0.02).all(), (
            model
        )
        assert (_metric(table, model, "balanced_accuracy") > 1 / samples.spec.n_classes + 0.1).all(), model
        assert (_metric(table, model, "ic") > 0.2).all(), model
    np.testing.assert_allclose(_metric(table, "majority", "balanced_accuracy"), 1 / samples.spec.n_classes)


def test_no_signal_means_no_out_of_sample_skill():
    samples, train, validation = _split("binary", signal_strength=0.0)
    table = evaluate_baselines(
        {"logistic": LogisticBaseline().fit(samples.view(train))}, samples.view(validation)
    )
    assert (np.abs(_metric(table, "logistic", "balanced_accuracy") - 0.5) < 0.06).all()


def test_shapes_and_valid_probabilities():
    samples, train, validation = _split("three_class", signal_strength=0.5, n_rows=400)
    view = samples.view(validation)
    for model in (
        MajorityBaseline(),
        PersistenceBaseline("log_return_1"),
        LogisticBaseline(),
        GradientBoostingBaseline(max_iter=10),
    ):
        proba, reg = model.fit(samples.view(train)).predict(view)
        assert proba.shape == (len(view), len(HORIZONS), 3), model.name
        assert reg.shape == (len(view), len(HORIZONS)), model.name
        assert np.isfinite(proba).all() and np.isfinite(reg).all()
        assert (proba > 0).all() or model.name == "gradient_boosting"
        np.testing.assert_allclose(proba.sum(axis=2), 1.0, atol=1e-9)
        empty_proba, empty_reg = model.predict(samples.view([]))
        assert empty_proba.shape == (0, len(HORIZONS), 3) and empty_reg.shape == (0, len(HORIZONS))


def test_persistence_uses_the_trailing_return_and_train_hit_rates():
    frame = synthetic_frame(600, seed=21, horizons=HORIZONS)
    samples = build_samples({"S": frame}, FEATURES, DatasetSpec(window=12, horizons=HORIZONS))
    train, validation = np.arange(0, 400), np.arange(420, len(samples))
    scaled = samples.scaled(samples.fit_scaler(train))
    model = PersistenceBaseline("log_return_1")
    # the trailing h-minute return is causal: log(close[t] / close[t - h]), also read from the scaled matrix
    close = frame.set_index("open_time")["close"]
    times = pd.DatetimeIndex(scaled.sample_time).tz_localize("UTC")
    for j, h in enumerate(HORIZONS):
        expected = np.log(close.loc[times].to_numpy() / close.loc[times - pd.Timedelta(minutes=h)].to_numpy())
        np.testing.assert_allclose(model.trailing_returns(scaled.view())[:, j], expected, atol=1e-6)
    model.fit(scaled.view(train))
    trailing = model.trailing_returns(scaled.view(train))
    y_train = scaled.y_class[train]
    for j in range(len(HORIZONS)):
        rising = trailing[:, j] > 0
        hit_rate = (y_train[rising, j].sum() + 1) / (rising.sum() + 2)
        assert model.proba_[j, 2, 1] == pytest.approx(hit_rate)
        assert model.mean_return_[j, 0] == pytest.approx(scaled.y_reg[train][~rising, j].mean(), rel=1e-5)
    proba, _ = model.predict(scaled.view(validation))
    assert np.isfinite(np.log(proba)).all() and (proba < 1).all()
    explicit = np.where(model.trailing_returns(scaled.view(validation)) > 0, 1.0, -1.0)
    np.testing.assert_array_equal(model.predict(scaled.view(validation), trailing_returns=explicit)[0], proba)


def test_persistence_needs_a_return_source_and_a_long_enough_window():
    samples = build_samples(
        {"S": synthetic_frame(100, seed=3)}, FEATURES, DatasetSpec(window=8, horizons=(5, 10))
    )
    with pytest.raises(ValueError, match="exceed the window"):
        PersistenceBaseline("log_return_1").fit(samples.view())
    with pytest.raises(ValueError, match="return_feature"):
        PersistenceBaseline().fit(samples.view())
    with pytest.raises(ValueError, match="'close' is not a feature"):
        PersistenceBaseline("close").fit(samples.view())
    assert list(
        fit_all_baselines(samples.view(), return_feature=None, include=["majority", "persistence"])
    ) == ["majority"]


def test_single_class_training_labels_fall_back_to_frequencies():
    samples, train, validation = _split("binary", signal_strength=0.0, n_rows=300)
    object.__setattr__(samples, "y_class", samples.y_class.copy())
    samples.y_class[train, 0] = 1
    proba, _ = LogisticBaseline().fit(samples.view(train)).predict(samples.view(validation))
    np.testing.assert_allclose(proba[:, 0, 1], (len(train) + 1) / (len(train) + 2))


def test_predict_before_fit_and_mismatched_views_raise():
    samples, train, _ = _split("binary", signal_strength=0.0, n_rows=200)
    with pytest.raises(RuntimeError, match="before fit"):
        MajorityBaseline().predict(samples.view(train))
    other = build_samples(
        {"S": synthetic_frame(200, seed=1)}, FEATURES, DatasetSpec(window=12, horizons=(5,))
    )
    with pytest.raises(ValueError, match="fitted for horizons"):
        MajorityBaseline().fit(samples.view(train)).predict(other.view())
