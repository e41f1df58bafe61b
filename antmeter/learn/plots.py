"""Plots and markdown tables users look at (MLflow artifacts, Dagster metadata)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from antmeter.learn.metrics import calibration_curve, confusion


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metrics_markdown(
    tidy: pd.DataFrame,
    metrics: tuple[str, ...] = ("accuracy", "balanced_accuracy", "log_loss", "brier", "ece", "mcc", "ic"),
) -> str:
    """A model × (metric@horizon) markdown table from a tidy (model, horizon, metric, value) frame."""
    if tidy.empty:
        return "no metrics"
    frame = tidy[tidy["metric"].isin(metrics)].copy()
    frame["column"] = frame["metric"] + "@" + frame["horizon"].astype(str) + "m"
    table = frame.pivot_table(index="model", columns="column", values="value", aggfunc="mean")
    ordered = [
        f"{m}@{h}m" for h in sorted(frame["horizon"].unique()) for m in metrics if f"{m}@{h}m" in table
    ]
    return table[ordered].round(4).to_markdown()


def plot_confusion(y_true: np.ndarray, proba: np.ndarray, path: Path, title: str) -> Path:
    plt = _pyplot()
    matrix = confusion(y_true, proba, n_classes=proba.shape[-1])
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, int(value), ha="center", va="center")
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_calibration(y_true: np.ndarray, proba: np.ndarray, path: Path, title: str) -> Path:
    plt = _pyplot()
    curve = calibration_curve(y_true, proba, n_bins=10)
    curve = curve[curve["count"] > 0]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.plot(curve["mean_confidence"], curve["accuracy"], "o-", label="model")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_predictions_vs_outcomes(predicted: np.ndarray, realized: np.ndarray, path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter(predicted * 1e4, realized * 1e4, s=4, alpha=0.4)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("predicted forward return (bps)")
    ax.set_ylabel("realized forward return (bps)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
