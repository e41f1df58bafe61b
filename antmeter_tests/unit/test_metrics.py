"""Metrics against small hand-computed examples, and the edge cases that must not crash."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import matthews_corrcoef

from antmeter.learn.metrics import (
    EVALUATION_COLUMNS,
    calibration_curve,
    classification_metrics,
    confusion,
    edge_ratio,
    evaluate_predictions,
    expected_calibration_error,
    regression_metrics,
)


def _binary(p_up):
    p_up = np.asarray(p_up)
    return np.stack([1 - p_up, p_up], axis=1)


def test_binary_metrics_by_hand():
    y = np.array([0, 1, 1, 0])
    proba = _binary([0.25, 0.7, 0.45, 0.35])  # predictions 0, 1, 0, 0
    m = classification_metrics(y, proba)
    assert m["n"] == 4
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["balanced_accuracy"] == pytest.approx((2 / 2 + 1 / 2) / 2)
    f1_down = 2 * (2 / 3) * 1 / (2 / 3 + 1)  # precision 2/3, recall 1
    f1_up = 2 * 1 * 0.5 / (1 + 0.5)  # precision 1, recall 1/2
    assert m["f1_macro"] == pytest.approx((f1_down + f1_up) / 2)
    # TP=1, TN=2, FP=0, FN=1
    assert m["mcc"] == pytest.approx((1 * 2 - 0 * 1) / math.sqrt((1 + 0) * (1 + 1) * (2 + 0) * (2 + 1)))
    assert m["log_loss"] == pytest.approx(
        -(math.log(0.75) + math.log(0.7) + math.log(0.45) + math.log(0.65)) / 4
    )
    assert m["brier"] == pytest.approx((0.25**2 + 0.3**2 + 0.55**2 + 0.35**2) / 4)
    # confidences 0.75, 0.7, 0.55, 0.65 fall in four different bins; correct = 1, 1, 0, 1
    assert m["ece"] == pytest.approx((0.25 + 0.3 + 0.55 + 0.35) / 4)


def test_three_class_metrics_by_hand():
    y = np.array([0, 1, 2])
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.2, 0.5, 0.3]])  # predictions 0, 1, 1
    m = classification_metrics(y, proba)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0) / 3)
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    sums = [0.3**2 + 0.2**2 + 0.1**2, 0.1**2 + 0.5**2 + 0.4**2, 0.2**2 + 0.5**2 + 0.7**2]
    assert m["brier"] == pytest.approx(sum(sums) / 3)
    assert m["log_loss"] == pytest.approx(-(math.log(0.7) + math.log(0.5) + math.log(0.3)) / 3)
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y, [0, 1, 1]))
    # bins: 0.7 -> (0.667, 0.733], 0.5 twice -> (0.467, 0.533]; accuracy there 1/2, mean confidence 0.5
    assert m["ece"] == pytest.approx(1 / 3 * 0.3 + 2 / 3 * 0.0)


def test_mcc_matches_sklearn_on_random_multiclass():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=200)
    proba = rng.dirichlet([1, 1, 1], size=200)
    assert classification_metrics(y, proba)["mcc"] == pytest.approx(
        matthews_corrcoef(y, proba.argmax(axis=1))
    )


def test_single_class_present_does_not_crash():
    y = np.array([1, 1, 1])
    proba = _binary([0.6, 0.9, 0.3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(y, proba)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["mcc"] == 0.0
    assert m["log_loss"] == pytest.approx(-(math.log(0.6) + math.log(0.9) + math.log(0.3)) / 3)
    assert confusion(y, proba).tolist() == [[0, 0], [1, 2]]
    three = classification_metrics(np.array([2, 2]), np.array([[0.1, 0.1, 0.8], [0.2, 0.2, 0.6]]))
    assert three["accuracy"] == 1.0 and np.isfinite(three["log_loss"])


def test_ece_groups_a_shared_bin():
    y = np.array([1, 0, 1])
    proba = _binary([0.9, 0.92, 0.2])  # 0.9 and 0.92 share bin (0.867, 0.933]; one right, one wrong
    curve = calibration_curve(y, proba)
    assert len(curve) == 15 and curve["count"].sum() == 3
    shared = curve[curve["count"] == 2].iloc[0]
    assert shared["accuracy"] == pytest.approx(0.5) and shared["mean_confidence"] == pytest.approx(0.91)
    assert expected_calibration_error(y, proba) == pytest.approx(2 / 3 * 0.41 + 1 / 3 * 0.8)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="sum to 1"):
        classification_metrics(np.array([0, 1]), np.array([[0.5, 0.6], [0.5, 0.5]]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        classification_metrics(np.array([0, 2]), _binary([0.5, 0.5]))
    with pytest.raises(ValueError, match="zero samples"):
        classification_metrics(np.array([], dtype=int), np.zeros((0, 2)))


def test_regression_metrics_by_hand():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    yhat = np.array([1.5, 1.5, 3.5, 5.0])
    m = regression_metrics(y, yhat)
    assert m["mae"] == pytest.approx((0.5 + 0.5 + 0.5 + 1.0) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 0.25 + 0.25 + 1.0) / 4))
    # ranks: y 1,2,3,4; yhat 1.5,1.5,3,4 -> Pearson correlation of the ranks
    ranks_y, ranks_hat = np.array([1, 2, 3, 4.0]), np.array([1.5, 1.5, 3, 4])
    dy, dh = ranks_y - ranks_y.mean(), ranks_hat - ranks_hat.mean()
    assert m["ic"] == pytest.approx((dy @ dh) / math.sqrt((dy @ dy) * (dh @ dh)))
    assert m["n"] == 4


def test_ic_is_nan_for_constant_predictions_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = regression_metrics(np.array([0.1, -0.2, 0.3]), np.zeros(3))
    assert math.isnan(m["ic"]) and m["mae"] == pytest.approx(0.2)


def test_evaluate_predictions_is_tidy():
    rng = np.random.default_rng(1)
    n, horizons = 50, (5, 30)
    y_class = rng.integers(0, 2, size=(n, 2))
    y_reg = rng.normal(size=(n, 2))
    proba = rng.dirichlet([1, 1], size=(n, 2))
    reg = rng.normal(size=(n, 2))
    table = evaluate_predictions("model_x", y_class, y_reg, proba, reg, horizons)
    assert list(table.columns) == EVALUATION_COLUMNS
    assert set(table["model"]) == {"model_x"} and sorted(set(table["horizon"])) == [5, 30]
    per_horizon = table[table["horizon"] == 30].set_index("metric")["value"]
    assert per_horizon["accuracy"] == pytest.approx(
        classification_metrics(y_class[:, 1], proba[:, 1])["accuracy"]
    )
    assert per_horizon["rmse"] == pytest.approx(regression_metrics(y_reg[:, 1], reg[:, 1])["rmse"])
    expected_metrics = {"accuracy", "balanced_accuracy", "f1_macro", "mcc", "log_loss", "brier", "ece", "n"}
    assert set(per_horizon.index) == expected_metrics | {"mae", "rmse", "ic"}
    with pytest.raises(ValueError, match=r"proba must have shape \(50, 2, C\)"):
        evaluate_predictions("model_x", y_class, y_reg, proba[:, :1], reg, horizons)


def test_edge_ratio_is_the_share_of_the_oracles_edge():
    rows = [
        ("lstm", 5, "accuracy", 0.56),
        ("majority", 5, "accuracy", 0.50),
        ("oracle", 5, "accuracy", 0.58),
        ("lstm", 10, "accuracy", 0.55),
        ("majority", 10, "accuracy", 0.52),
        ("oracle", 10, "accuracy", 0.51),  # no edge over the majority class to share
        ("lstm", 5, "log_loss", 0.69),
    ]
    metrics = pd.DataFrame(rows, columns=EVALUATION_COLUMNS)
    assert edge_ratio(metrics, "lstm", 5) == pytest.approx(0.75)
    assert edge_ratio(metrics, "lstm", 10) is None
    assert edge_ratio(metrics, "lstm", 30) is None  # no rows at that horizon
    assert edge_ratio(metrics[metrics["model"] != "oracle"], "lstm", 5) is None  # a real market
