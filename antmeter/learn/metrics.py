"""Out-of-sample metrics for class probabilities and return forecasts, and one tidy evaluation table.

Classes are the integers ``0 .. C-1`` where ``C = proba.shape[1]`` (binary: 0 down / 1 up; three-class:
0 down / 1 flat / 2 up). All metrics take the full label set from ``proba``'s width, so a sample in which
only one class occurs still works.

Calibration (``ece``, :func:`calibration_curve`) uses the *confidence* ``max_c proba[i, c]`` and whether the
arg-max class was right, in ``n_bins`` equal-width bins ``(b / n, (b + 1) / n]`` (a confidence of exactly 0
falls in the first bin). ``ece = sum_b (n_b / N) * |accuracy_b - mean_confidence_b|``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm

ECE_BINS = 15
EVALUATION_COLUMNS = ["model", "horizon", "metric", "value"]


def _check_classification(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"proba must have shape (N, C) with C >= 2, got {p.shape}")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise ValueError(f"y_true must have shape ({p.shape[0]},), got {y.shape}")
    if y.shape[0] == 0:
        raise ValueError("cannot compute metrics on zero samples")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError(
            "proba rows must be finite, non-negative and sum to 1 (within 1e-4; they are renormalized)"
        )
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError("y_true must hold integer class labels")
        y = y.astype(np.int64)
    if (y < 0).any() or (y >= p.shape[1]).any():
        raise ValueError(f"y_true labels must lie in [0, {p.shape[1]}), got [{y.min()}, {y.max()}]")
    return y.astype(np.int64), p / p.sum(axis=1, keepdims=True)


def confusion(y_true: np.ndarray, y_pred_or_proba: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Confusion counts ``[true class, predicted class]`` over all ``n_classes`` labels.

    ``y_pred_or_proba`` is either predicted labels ``(N,)`` or probabilities ``(N, C)`` (arg-max is used).
    """
    pred = np.asarray(y_pred_or_proba)
    if pred.ndim == 2:
        n_classes = pred.shape[1] if n_classes is None else n_classes
        pred = pred.argmax(axis=1)
    y = np.asarray(y_true)
    if n_classes is None:
        n_classes = int(max(y.max(initial=0), pred.max(initial=0))) + 1
    return skm.confusion_matrix(y, pred, labels=np.arange(n_classes))


def _mcc(matrix: np.ndarray) -> float:
    """Multi-class Matthews correlation (Gorodkin) from a confusion matrix; 0 when undefined."""
    t = matrix.sum(axis=1).astype(np.float64)
    p = matrix.sum(axis=0).astype(np.float64)
    n, correct = float(matrix.sum()), float(np.trace(matrix))
    denominator = np.sqrt((n * n - p @ p) * (n * n - t @ t))
    return 0.0 if denominator == 0 else float((correct * n - t @ p) / denominator)


def calibration_curve(y_true: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS) -> pd.DataFrame:
    """Reliability table of arg-max confidence vs. accuracy in ``n_bins`` equal-width bins.

    Columns ``bin_lower, bin_upper, count, mean_confidence, accuracy`` (NaN for empty bins).
    """
    y, p = _check_classification(y_true, proba)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame(
        {
            "bin_lower": edges[:-1],
            "bin_upper": edges[1:],
            "count": count,
            "mean_confidence": mean_confidence,
            "accuracy": accuracy,
        }
    )


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE of the arg-max confidence (see module docstring)."""
    curve = calibration_curve(y_true, proba, n_bins)
    filled = curve[curve["count"] > 0]
    weights = filled["count"] / filled["count"].sum()
    return float((weights * (filled["accuracy"] - filled["mean_confidence"]).abs()).sum())


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """accuracy, balanced_accuracy, f1_macro, mcc, log_loss, brier, ece and n for class probabilities.

    ``balanced_accuracy`` averages recall over the classes present in ``y_true``; ``f1_macro`` averages F1
    over the classes present in ``y_true`` or the predictions (sklearn's default); ``brier`` is the mean
    squared error of p(up) for two classes and the mean over samples of the summed squared error over
    classes for more; ``ece`` uses 15 equal-width bins.
    """
    y, p = _check_classification(y_true, proba)
    labels = np.arange(p.shape[1])
    pred = p.argmax(axis=1)
    matrix = confusion(y, pred, p.shape[1])
    support = matrix.sum(axis=1)
    recall = np.diag(matrix)[support > 0] / support[support > 0]
    present = np.union1d(y, pred)
    return {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": float(recall.mean()),
        "f1_macro": float(skm.f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        "mcc": _mcc(matrix),
        "log_loss": float(skm.log_loss(y, p, labels=labels)),
        "brier": float(skm.brier_score_loss(y, p, labels=labels, scale_by_half="auto")),
        "ece": expected_calibration_error(y, p),
        "n": float(y.shape[0]),
    }


def regression_metrics(y: np.ndarray, yhat: np.ndarray) -> dict[str, float]:
    """mae, rmse, ic (Spearman rank correlation; NaN when either side is constant) and n."""
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    if y.ndim != 1 or y.shape != yhat.shape:
        raise ValueError(f"y and yhat must be 1-D of equal length, got {y.shape} and {yhat.shape}")
    if y.shape[0] == 0:
        raise ValueError("cannot compute metrics on zero samples")
    if not (np.isfinite(y).all() and np.isfinite(yhat).all()):
        raise ValueError("y and yhat must be finite")
    error = yhat - y
    if y.shape[0] < 2 or np.ptp(y) == 0 or np.ptp(yhat) == 0:
        ic = float("nan")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            ic = float(stats.spearmanr(y, yhat).statistic)
    return {
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "ic": ic,
        "n": float(y.shape[0]),
    }


def evaluate_predictions(
    name: str,
    y_class: np.ndarray,
    y_reg: np.ndarray,
    proba: np.ndarray,
    reg: np.ndarray,
    horizons: Sequence[int],
) -> pd.DataFrame:
    """Tidy table (``model, horizon, metric, value``) of classification and regression metrics per horizon.

    ``y_class`` ``(N, H)`` ints, ``y_reg`` ``(N, H)``, ``proba`` ``(N, H, C)``, ``reg`` ``(N, H)``. Regression
    metrics are named ``mae``, ``rmse`` and ``ic``; ``n`` appears once per horizon.
    """
    y_class, y_reg, proba, reg = (np.asarray(a) for a in (y_class, y_reg, proba, reg))
    h = len(horizons)
    n = y_class.shape[0] if y_class.ndim == 2 else -1
    expected = {"y_class": (n, h), "y_reg": (n, h), "reg": (n, h)}
    for label, array in (("y_class", y_class), ("y_reg", y_reg), ("reg", reg)):
        if array.shape != expected[label]:
            raise ValueError(f"{name}: {label} must have shape (N, {h}), got {array.shape}")
    if proba.ndim != 3 or proba.shape[:2] != (n, h):
        raise ValueError(f"{name}: proba must have shape ({n}, {h}, C), got {proba.shape}")
    rows = []
    for j, horizon in enumerate(horizons):
        values = classification_metrics(y_class[:, j], proba[:, j, :])
        values.update(regression_metrics(y_reg[:, j], reg[:, j]))
        rows.extend((name, int(horizon), metric, float(value)) for metric, value in values.items())
    return pd.DataFrame(rows, columns=EVALUATION_COLUMNS)


def edge_ratio(
    metrics: pd.DataFrame, model: str, horizon: int, reference: str = "majority", ceiling: str = "oracle"
) -> float | None:
    """The share of the attainable edge a model captures at one horizon: ``(model − majority) /
    (oracle − majority)`` accuracy on the same rows (tidy ``EVALUATION_COLUMNS`` frame). 1 is the
    ceiling, 0 the majority class; None without the ceiling's row or when it has no edge to share."""
    accuracy = metrics[(metrics["metric"] == "accuracy") & (metrics["horizon"] == horizon)]
    accuracy = accuracy.groupby("model")["value"].first()
    if not {model, reference, ceiling} <= set(accuracy.index):
        return None
    room = accuracy[ceiling] - accuracy[reference]
    if not room > 0:
        return None
    return float((accuracy[model] - accuracy[reference]) / room)
