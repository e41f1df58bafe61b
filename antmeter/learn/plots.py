"""Plots and markdown tables users look at (MLflow artifacts, Dagster metadata).

Tables are narrow enough for a 1,280 px page: one small table per horizon (metrics), long formats
for nested results (P&L). Plots cover every horizon and name the classes; :func:`image_markdown`
embeds a PNG (at most ``MAX_EMBEDDED_BYTES``) in Markdown so the Dagster UI shows the picture.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from antmeter.learn.metrics import calibration_curve, confusion

MAX_EMBEDDED_BYTES = 100_000
CLASS_NAMES = {2: ("not up", "up"), 3: ("down", "flat", "up")}
DEFAULT_METRICS = ("accuracy", "balanced_accuracy", "log_loss", "brier", "ece", "mcc", "ic")
# colour-blind-safe (Okabe-Ito) colours, one per horizon
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def class_names(n_classes: int) -> tuple[str, ...]:
    """Readable names of the label classes (binary: not up / up; three: down / flat / up)."""
    return CLASS_NAMES.get(n_classes, tuple(f"class {i}" for i in range(n_classes)))


def metrics_markdown(tidy: pd.DataFrame, metrics: tuple[str, ...] = DEFAULT_METRICS) -> str:
    """One model × metric markdown table per horizon from a tidy (model, horizon, metric, value) frame.

    Rows keep the frame's model order (the model first, then baselines, then the oracle ceiling);
    a metric a row does not have (the oracle's log loss) is left blank.
    """
    if tidy.empty:
        return "no metrics"
    frame = tidy[tidy["metric"].isin(metrics)]
    order = list(dict.fromkeys(frame["model"]))
    parts = []
    for horizon in sorted(frame["horizon"].unique()):
        table = frame[frame["horizon"] == horizon].pivot_table(
            index="model", columns="metric", values="value", aggfunc="mean"
        )
        table = table.reindex([m for m in order if m in table.index])
        table = table[[m for m in metrics if m in table.columns]].round(4)
        table = table.astype(object).where(table.notna(), None)
        parts.append(f"**{int(horizon)} min**\n\n" + table.to_markdown(missingval=""))
    return "\n\n".join(parts)


def long_markdown(values: Mapping[str, Any], key_names: Sequence[str], value_name: str = "value") -> str:
    """A nested mapping as a narrow long table: one row per leaf (e.g. series · book · field · value)."""
    rows = []

    def walk(node: Any, keys: tuple[str, ...]) -> None:
        if isinstance(node, Mapping):
            for key, child in node.items():
                walk(child, (*keys, str(key)))
        elif len(keys) >= len(key_names):
            head = keys[: len(key_names) - 1]
            rows.append([*head, ".".join(keys[len(key_names) - 1 :]), node])
        else:
            rows.append([*keys, *[""] * (len(key_names) - len(keys)), node])

    walk(values, ())
    if not rows:
        return "nothing yet"
    frame = pd.DataFrame(rows, columns=[*key_names, value_name])
    frame[value_name] = [round(v, 4) if isinstance(v, float) else v for v in frame[value_name]]
    return frame.to_markdown(index=False)


def drift_markdown(drift: pd.DataFrame, symbols: Sequence[str], models: Sequence[str]) -> str:
    """Feature drift sorted by PSI (worst first), with the symbols and models it concerns and integer
    counts. ``symbols``/``models`` label frames that pool them (a frame's own columns win)."""
    if drift.empty:
        return "no drift reference yet"
    frame = drift.copy()
    if "symbol" not in frame:
        frame.insert(0, "symbol", ", ".join(symbols) or "all")
    if "model" not in frame:
        frame.insert(1, "model", ", ".join(models) or "none")
    for column in [
        c for c in frame.columns if c.startswith("n_") and pd.api.types.is_numeric_dtype(frame[c])
    ]:
        frame[column] = frame[column].round().astype("Int64")
    frame = frame.sort_values("psi", ascending=False, na_position="last")
    return frame.round(4).to_markdown(index=False)


def image_markdown(path: Path, title: str, max_bytes: int = MAX_EMBEDDED_BYTES) -> str:
    """Markdown embedding the PNG at ``path`` (downscaled until it is at most ``max_bytes``)."""
    from PIL import Image

    data = Path(path).read_bytes()
    if len(data) > max_bytes:
        image = Image.open(io.BytesIO(data))
        while len(data) > max_bytes and image.width > 64:
            image = image.resize((int(image.width * 0.8), int(image.height * 0.8)), Image.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=True)
            data = buffer.getvalue()
    if len(data) > max_bytes:
        raise ValueError(f"{path}: cannot shrink the plot below {max_bytes} bytes")
    return f"![{title}](data:image/png;base64,{base64.b64encode(data).decode()})"


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_confusion(
    y_true: np.ndarray, proba: np.ndarray, horizons: Sequence[int], path: Path, title: str
) -> Path:
    """Confusion matrices (counts) of every horizon; ``y_true`` [N, H], ``proba`` [N, H, C]."""
    plt = _pyplot()
    names = class_names(proba.shape[-1])
    fig, axes = plt.subplots(1, len(horizons), figsize=(3.2 * len(horizons), 3.2), squeeze=False)
    for h, (ax, horizon) in enumerate(zip(axes[0], horizons, strict=True)):
        matrix = confusion(y_true[:, h], proba[:, h], n_classes=proba.shape[-1])
        ax.imshow(matrix, cmap="Blues")
        threshold = matrix.max() / 2 if matrix.size else 0
        for (i, j), value in np.ndenumerate(matrix):
            colour = "white" if value > threshold else "black"
            ax.text(j, i, int(value), ha="center", va="center", color=colour, fontsize=11)
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(names)), names, rotation=90, va="center")
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual" if h == 0 else "")
        ax.set_title(f"{horizon} min")
    fig.suptitle(f"{title}: confusion matrix")
    fig.tight_layout()
    return _save(fig, path)


def plot_calibration(
    y_true: np.ndarray, proba: np.ndarray, horizons: Sequence[int], path: Path, title: str
) -> Path:
    """Reliability curves of every horizon (top) and each bin's sample count (bottom)."""
    plt = _pyplot()
    fig, (ax, counts) = plt.subplots(
        2, 1, figsize=(5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    width = 0.1 / (len(horizons) + 1)
    for h, horizon in enumerate(horizons):
        colour = COLOURS[h % len(COLOURS)]
        curve = calibration_curve(y_true[:, h], proba[:, h], n_bins=10)
        filled = curve[curve["count"] > 0]
        ax.plot(filled["mean_confidence"], filled["accuracy"], "o-", color=colour, label=f"{horizon} min")
        centres = (curve["bin_lower"] + curve["bin_upper"]) / 2
        counts.bar(centres + (h - (len(horizons) - 1) / 2) * width, curve["count"], width=width, color=colour)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small")
    ax.set_title(f"{title}: calibration")
    counts.set_xlabel("confidence (arg-max probability)")
    counts.set_ylabel("samples")
    counts.set_xlim(0, 1)
    fig.tight_layout()
    return _save(fig, path)


def plot_predictions_vs_outcomes(
    predicted: np.ndarray, realized: np.ndarray, horizons: Sequence[int], path: Path, title: str
) -> Path:
    """Predicted vs realized forward return (bps) of every horizon; arrays [N, H]."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(horizons), figsize=(3.4 * len(horizons), 3.4), squeeze=False)
    for h, (ax, horizon) in enumerate(zip(axes[0], horizons, strict=True)):
        ax.scatter(predicted[:, h] * 1e4, realized[:, h] * 1e4, s=4, alpha=0.4, color=COLOURS[0])
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel("predicted (bps)")
        ax.set_ylabel("realized (bps)" if h == 0 else "")
        ax.set_title(f"{horizon} min")
    fig.suptitle(f"{title}: forward return")
    fig.tight_layout()
    return _save(fig, path)
