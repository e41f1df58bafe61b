"""Verify predictions against realized outcomes and report rolling quality next to baselines.

Time convention (see :mod:`antmeter.market.candles`): a prediction keyed ``prediction_time = t`` is made once
candle ``t`` has closed and uses candles up to and including ``t``. Its horizon-``h`` outcome is
``log(close[t + h] / close[t])``, known only when candle ``t + h`` has closed, i.e. at
``t + h + 1 min``. Verification never uses a candle that has not closed by ``now`` and never guesses
a missing candle: such predictions simply stay unverified until the candle arrives.

Baselines are evaluated on exactly the rows the model is evaluated on:

* ``majority`` -- always predicts the most frequent class of the *training* set (the caller passes the
  training class rates, so nothing is estimated on the evaluation rows); its probabilities are those
  rates.
* ``persistence`` -- predicts from the sign of the last ``h``-minute return at prediction time,
  ``log(close[t] / close[t - h])``. With ``persistence_rates`` (the training persistence baseline's class
  rates given that sign, written by the recipe into the bundle's ``serving.json``) its probabilities
  are those rates, exactly like the persistence baseline of training; without them it is the hard
  rule (class of the trailing return under the outcome's label rule, one-hot probabilities).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from antmeter.learn.metrics import ECE_BINS
from antmeter.live._frames import (
    LiveInputError,
    candle_closes,
    candle_spans,
    check_task,
    classify_returns,
    horizon_minutes,
    lookup_close,
    require_columns,
    utc_ns,
    utc_timestamp,
)
from antmeter.market.candles import interval_timedelta

KEY_COLUMNS = ["symbol", "prediction_time", "horizon_min", "model_name", "model_version"]
PREDICTION_COLUMNS = [
    *KEY_COLUMNS,
    "prob_down",
    "prob_flat",
    "prob_up",
    "predicted_class",
    "confidence",
    "predicted_return",
    "created_at",
]
VERIFICATION_COLUMNS = [*KEY_COLUMNS, "realized_return", "realized_class", "correct", "verified_at"]
BASELINES = ("majority", "persistence")
MODEL = "model"
GROUP_COLUMNS = ["symbol", "horizon_min", "model_name", "model_version"]
METRIC_COLUMNS = ["n", "accuracy", "balanced_accuracy", "brier", "ece"]
REPORT_COLUMNS = [*GROUP_COLUMNS, "window_end", "predictor", *METRIC_COLUMNS]

ClassRates = float | Sequence[float] | Mapping[object, float | Sequence[float]]
Candles = Mapping[str, pd.DataFrame] | pd.DataFrame


def prepare_predictions(predictions: pd.DataFrame, source: str) -> pd.DataFrame:
    """Prediction rows with normalized key dtypes (UTC ns times, int horizons/classes); duplicate keys rejected."""
    require_columns(predictions, [*KEY_COLUMNS, "predicted_class"], source)
    out = predictions.reset_index(drop=True).copy()
    for column in ("symbol", "model_name", "model_version"):
        out[column] = out[column].astype("str")
    out["prediction_time"] = utc_ns(out["prediction_time"], "prediction_time", source)
    out["horizon_min"] = horizon_minutes(out["horizon_min"], source)
    classes = pd.to_numeric(out["predicted_class"], errors="coerce").astype("float64").to_numpy()
    if not np.isfinite(classes).all():
        i = int(np.flatnonzero(~np.isfinite(classes))[0])
        raise LiveInputError(
            source, i, "predicted_class", f"not a class id: {out['predicted_class'].iloc[i]!r}"
        )
    out["predicted_class"] = classes.astype("int64")
    dup = out.duplicated(KEY_COLUMNS)
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise LiveInputError(source, i, ",".join(KEY_COLUMNS), "duplicate prediction key")
    return out


def verify_predictions(
    predictions: pd.DataFrame,
    candles: Candles,
    now: pd.Timestamp,
    task: str = "binary",
    flat_band_bps: float | None = None,
    interval: str = "1m",
) -> pd.DataFrame:
    """Verification rows (:data:`VERIFICATION_COLUMNS`) for the predictions whose outcome is known at ``now``.

    A prediction ``(t, h)`` (``h`` in candles of ``interval``) is verified only when candles ``t`` and
    ``t + h`` both exist and candle ``t + h`` has closed by ``now`` (``t + (h + 1) candles <= now``). Everything else is left out (it stays
    unverified; nothing is guessed). ``candles`` is a mapping symbol -> candle frame or one frame with
    a ``symbol`` column. ``task="three_class"`` needs ``flat_band_bps``; classes are 0 down / 1 flat / 2 up.
    """
    check_task(task, flat_band_bps)
    now = utc_timestamp(now, "now")
    preds = prepare_predictions(predictions, "predictions")
    closes = candle_closes(candles)
    candle = interval_timedelta(interval)
    closes = closes[closes["open_time"] + candle <= now]
    outcome_time = preds["prediction_time"] + candle_spans(preds["horizon_min"], interval)
    due = preds[outcome_time + candle <= now]
    start = lookup_close(closes, due["symbol"], due["prediction_time"])
    end = lookup_close(closes, due["symbol"], outcome_time[due.index])
    known = np.isfinite(start) & np.isfinite(end)
    out = due.loc[known, KEY_COLUMNS].reset_index(drop=True)
    realized = np.log(end[known] / start[known])
    realized_class = classify_returns(realized, task, flat_band_bps).astype("int64")
    out["realized_return"] = realized
    out["realized_class"] = realized_class
    out["correct"] = due["predicted_class"].to_numpy()[known] == realized_class
    out["verified_at"] = pd.Series([now] * len(out), dtype="datetime64[ns, UTC]")
    return out[VERIFICATION_COLUMNS]


def join_verification(predictions: pd.DataFrame, verification: pd.DataFrame) -> pd.DataFrame:
    """Predictions joined one-to-one with their verification rows (unverified predictions dropped)."""
    preds = prepare_predictions(predictions, "predictions")
    require_columns(verification, VERIFICATION_COLUMNS, "verification")
    ver = verification[VERIFICATION_COLUMNS].copy()
    for column in ("symbol", "model_name", "model_version"):
        ver[column] = ver[column].astype("str")
    ver["prediction_time"] = utc_ns(ver["prediction_time"], "prediction_time", "verification")
    ver["horizon_min"] = horizon_minutes(ver["horizon_min"], "verification")
    preds = preds.drop(
        columns=[c for c in VERIFICATION_COLUMNS if c in preds.columns and c not in KEY_COLUMNS]
    )
    return preds.merge(ver, on=KEY_COLUMNS, how="inner", validate="one_to_one")


def _rates_for(class_rates: ClassRates, symbol: str, horizon: int, n_classes: int) -> np.ndarray | None:
    """Training-set class rates for one (symbol, horizon), or None when a mapping has no entry for it."""
    value: object = class_rates
    if isinstance(class_rates, Mapping):
        for key in ((symbol, horizon), symbol):
            if key in class_rates:
                value = class_rates[key]
                break
        else:
            return None
    if np.ndim(value) == 0:
        if n_classes != 2:
            raise ValueError(
                "class_rates must give one rate per class (down, flat, up) for task='three_class'"
            )
        rates = np.array([1.0 - float(value), float(value)])
    else:
        rates = np.asarray(value, dtype="float64")
    if rates.shape != (n_classes,) or not np.all((rates >= 0) & (rates <= 1)) or abs(rates.sum() - 1) > 1e-6:
        raise ValueError(
            f"class_rates for ({symbol!r}, {horizon}) must be {n_classes} rates in [0, 1] summing to 1, got {value!r}"
        )
    return rates


def _set_baseline(out: pd.DataFrame, name: str, classes: np.ndarray, probs: np.ndarray, task: str) -> None:
    """Write ``{name}_class`` / ``{name}_prob_*`` (and ``{name}_correct`` when outcomes are known)."""
    out[f"{name}_class"] = pd.array(np.where(np.isnan(classes), pd.NA, classes), dtype="Int64")
    if task == "binary":
        out[f"{name}_prob_up"] = probs[:, 1]
        out[f"{name}_prob_flat"] = np.nan
        out[f"{name}_prob_down"] = probs[:, 0]
    else:
        out[f"{name}_prob_down"], out[f"{name}_prob_flat"], out[f"{name}_prob_up"] = probs.T
    if "realized_class" in out.columns:
        out[f"{name}_correct"] = out[f"{name}_class"] == out["realized_class"].astype("Int64")


def add_baselines(
    frame: pd.DataFrame,
    candles: Candles | None = None,
    class_rates: ClassRates | None = None,
    task: str = "binary",
    flat_band_bps: float | None = None,
    persistence_rates: Mapping[object, Sequence[Sequence[float]]] | None = None,
    interval: str = "1m",
) -> pd.DataFrame:
    """Add baseline predictions for the rows of ``frame`` (predictions, or predictions joined with outcomes).

    ``majority`` is added when ``class_rates`` is given: a float (binary training up-rate), a sequence of
    per-class rates, or a mapping keyed ``(symbol, horizon_min)`` or ``symbol`` to either (series without
    an entry get ``<NA>``; an empty mapping counts as not given); ties go to the lower class id. ``persistence``
    is added when ``candles`` is given (``h`` candles of ``interval``); it is missing (``<NA>``) where candle
    ``t - h`` or ``t`` is absent.
    Adds ``{b}_class``, ``{b}_prob_down``, ``{b}_prob_flat``, ``{b}_prob_up`` and, when ``realized_class``
    is present, ``{b}_correct`` (nullable boolean).
    """
    n_classes = check_task(task, flat_band_bps)
    require_columns(frame, ["symbol", "prediction_time", "horizon_min"], "frame")
    out = frame.reset_index(drop=True).copy()
    out["symbol"] = out["symbol"].astype("str")
    out["prediction_time"] = utc_ns(out["prediction_time"], "prediction_time", "frame")
    out["horizon_min"] = horizon_minutes(out["horizon_min"], "frame")
    if class_rates is not None and not (isinstance(class_rates, Mapping) and not class_rates):
        probs = np.full((len(out), n_classes), np.nan)
        for (symbol, horizon), rows in out.groupby(["symbol", "horizon_min"]).groups.items():
            rates = _rates_for(class_rates, str(symbol), int(horizon), n_classes)
            if rates is not None:
                probs[out.index.get_indexer(rows)] = rates
        known = ~np.isnan(probs).any(axis=1)
        classes = np.full(len(out), np.nan)
        classes[known] = probs[known].argmax(axis=1)
        _set_baseline(out, "majority", classes, probs, task)
    if candles is not None:
        closes = candle_closes(candles)
        now_close = lookup_close(closes, out["symbol"], out["prediction_time"])
        past_close = lookup_close(
            closes, out["symbol"], out["prediction_time"] - candle_spans(out["horizon_min"], interval)
        )
        trailing = np.log(now_close / past_close)
        classes = classify_returns(trailing, task, flat_band_bps)
        probs = np.full((len(out), n_classes), np.nan)
        known = ~np.isnan(classes)
        probs[known] = np.eye(n_classes)[classes[known].astype("int64")]
        if persistence_rates:
            sign = (np.sign(np.nan_to_num(trailing)) + 1).astype("int64")  # 0 down, 1 unchanged, 2 up
            for horizon in np.unique(out["horizon_min"]):
                table = persistence_rates.get(str(int(horizon)), persistence_rates.get(int(horizon)))
                rows = known & (out["horizon_min"].to_numpy() == horizon)
                if table is not None and rows.any():
                    rates = np.asarray(table, dtype="float64")
                    if rates.shape != (3, n_classes):
                        raise ValueError(
                            f"persistence_rates[{horizon}] must be 3 x {n_classes} rates, got {rates.shape}"
                        )
                    probs[rows] = rates[sign[rows]]
                    classes[rows] = probs[rows].argmax(axis=1)
        _set_baseline(out, "persistence", classes, probs, task)
    return out


def _probability_matrix(frame: pd.DataFrame, prefix: str, task: str, source: str) -> np.ndarray:
    """Probabilities (n, K) of one predictor, checked to be finite and within [0, 1]."""
    columns = (
        [f"{prefix}prob_up"] if task == "binary" else [f"{prefix}prob_{c}" for c in ("down", "flat", "up")]
    )
    require_columns(frame, columns, source)
    values = frame[columns].to_numpy(dtype="float64", na_value=np.nan)
    bad = ~(np.isfinite(values) & (values >= 0) & (values <= 1))
    if bad.any():
        i, j = (int(v[0]) for v in np.nonzero(bad))
        raise LiveInputError(source, i, columns[j], f"not a probability in [0, 1]: {values[i, j]!r}")
    return np.column_stack([1.0 - values[:, 0], values[:, 0]]) if task == "binary" else values


def _predictor_prefix(predictor: str) -> tuple[str, str]:
    """(class column, probability-column prefix) of a predictor."""
    return ("predicted_class", "") if predictor == MODEL else (f"{predictor}_class", f"{predictor}_")


def _metric_terms(
    classes: np.ndarray, probs: np.ndarray, actual: np.ndarray, task: str, bins: int
) -> np.ndarray:
    """Per-row additive terms whose window sums give every metric (see :func:`_metrics_from_sums`).

    Columns: n, correct, brier, then per class k (actual_k, hit_k), then per calibration bin (count, sum
    of confidence, sum of arg-max correctness). Definitions are those of :mod:`antmeter.learn.metrics` (Brier of
    P(up) for binary, summed over classes otherwise; top-label ECE in equal-width bins ``(b/n, (b+1)/n]``),
    written as window sums so that every rolling window costs O(1).
    """
    n_rows, n_classes = probs.shape
    one_hot = np.eye(n_classes)[actual]
    correct = (classes == actual).astype("float64")
    brier = (probs[:, 1] - one_hot[:, 1]) ** 2 if task == "binary" else ((probs - one_hot) ** 2).sum(axis=1)
    confidence = probs.max(axis=1)
    argmax_correct = (probs.argmax(axis=1) == actual).astype("float64")
    terms = [np.ones(n_rows), correct, brier]
    for k in range(n_classes):
        terms += [one_hot[:, k], one_hot[:, k] * correct]
    which = np.clip(np.ceil(confidence * bins).astype("int64") - 1, 0, bins - 1)
    for b in range(bins):
        in_bin = (which == b).astype("float64")
        terms += [in_bin, in_bin * confidence, in_bin * argmax_correct]
    return np.column_stack(terms)


def _metrics_from_sums(sums: np.ndarray, n_classes: int, bins: int) -> dict[str, np.ndarray]:
    """Window metrics from summed :func:`_metric_terms` columns."""
    n = np.rint(sums[:, 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.rint(sums[:, 1]) / n
        brier = sums[:, 2] / n
        class_cols = sums[:, 3 : 3 + 2 * n_classes]
        actual, hits = np.rint(class_cols[:, 0::2]), np.rint(class_cols[:, 1::2])
        present = actual > 0
        recall_sum = np.where(present, hits / np.where(present, actual, 1), 0).sum(axis=1)
        balanced = np.where(present.any(axis=1), recall_sum / present.sum(axis=1), np.nan)
        bin_cols = sums[:, 3 + 2 * n_classes :].reshape(len(sums), bins, 3)
        ece = np.abs(bin_cols[:, :, 1] - bin_cols[:, :, 2]).sum(axis=1) / n
    return {
        "n": n.astype("int64"),
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        "brier": brier,
        "ece": ece,
    }


def _class_ids(values: pd.Series, n_classes: int, task: str) -> np.ndarray:
    """Realized class ids as int64, or an error naming the first bad row."""
    actual = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = ~(np.isfinite(actual) & (actual >= 0) & (actual < n_classes))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise LiveInputError(
            "verified", values.index[i], "realized_class", f"not a {task} class id: {actual[i]!r}"
        )
    return actual.astype("int64")


def _check_window(window: str | int) -> str | int:
    if isinstance(window, bool) or not isinstance(window, int | str):
        raise ValueError(f"window must be a row count (int >= 1) or a time span such as '6h', got {window!r}")
    if isinstance(window, int):
        if window < 1:
            raise ValueError(f"window must be >= 1 rows, got {window}")
        return window
    try:
        offset = to_offset(window)
        pd.Timedelta(offset)
    except (ValueError, TypeError):
        raise ValueError(f"window {window!r} is not a fixed time span such as '6h' or '90min'") from None
    return window


def rolling_report(
    verified: pd.DataFrame,
    window: str | int,
    *,
    candles: Candles | None = None,
    class_rates: ClassRates | None = None,
    task: str = "binary",
    flat_band_bps: float | None = None,
    min_periods: int = 1,
    every: int = 1,
    ece_bins: int = ECE_BINS,
    interval: str = "1m",
) -> pd.DataFrame:
    """Rolling accuracy, balanced accuracy, Brier score, ECE and n for the model and its baselines.

    ``verified`` is predictions joined with verification (:func:`join_verification`). Windows trail each
    prediction per (symbol, horizon_min, model_name, model_version), ordered by ``prediction_time``:
    ``window`` is a row count (int) or a time span over ``prediction_time`` (e.g. ``"6h"``). Baselines are
    computed from ``candles`` / ``class_rates`` (see :func:`add_baselines`) or taken from ``{b}_*``
    columns already present. All predictors are scored on the same rows: rows where any reported
    baseline is undefined (a missing candle) are left out for every predictor. ``window_end`` is the
    ``prediction_time`` of the window's last row; rows are emitted every ``every`` predictions (and at
    the last) once a window holds ``min_periods`` rows. Returns :data:`REPORT_COLUMNS`, one row per
    window end and predictor.
    """
    n_classes = check_task(task, flat_band_bps)
    window = _check_window(window)
    if min_periods < 1 or every < 1 or ece_bins < 1:
        raise ValueError("min_periods, every and ece_bins must all be >= 1")
    require_columns(verified, [*KEY_COLUMNS, "predicted_class", "realized_class"], "verified")
    frame = prepare_predictions(verified, "verified")
    if candles is not None or class_rates is not None:
        frame = add_baselines(
            frame,
            candles=candles,
            class_rates=class_rates,
            task=task,
            flat_band_bps=flat_band_bps,
            interval=interval,
        )
    predictors = [MODEL, *[b for b in BASELINES if f"{b}_class" in frame.columns]]
    pieces = []
    for key, group in frame.groupby(GROUP_COLUMNS, sort=True):
        group = group.sort_values("prediction_time", kind="stable")
        # a baseline with no prediction at all in this series is left out; otherwise rows where any
        # predictor is undefined are left out for every predictor, so all are scored on the same rows
        available = [p for p in predictors if group[_predictor_prefix(p)[0]].notna().any()]
        group = group[group[[_predictor_prefix(p)[0] for p in available]].notna().all(axis=1)]
        actual = _class_ids(group["realized_class"], n_classes, task)
        times = pd.DatetimeIndex(group["prediction_time"])
        emit = np.zeros(len(group), dtype=bool)
        emit[::every] = True
        emit[-1:] = True
        for p in available:
            class_column, prob_prefix = _predictor_prefix(p)
            probs = _probability_matrix(group, prob_prefix, task, "verified")
            terms = _metric_terms(
                group[class_column].to_numpy(dtype="float64"), probs, actual, task, ece_bins
            )
            rolled = pd.DataFrame(terms, index=times).rolling(window, min_periods=1).sum()
            metrics = _metrics_from_sums(rolled.to_numpy(), n_classes, ece_bins)
            keep = emit & (metrics["n"] >= min_periods)
            piece = pd.DataFrame({name: values[keep] for name, values in metrics.items()})
            piece.insert(0, "predictor", p)
            piece.insert(0, "window_end", times[keep])
            for column, value in zip(GROUP_COLUMNS, key, strict=True):
                piece.insert(0, column, value)
            pieces.append(piece)
    if not pieces:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in REPORT_COLUMNS})
    report = pd.concat(pieces, ignore_index=True)[REPORT_COLUMNS]
    order = {p: i for i, p in enumerate([MODEL, *BASELINES])}
    report["_order"] = report["predictor"].map(order)
    report = report.sort_values([*GROUP_COLUMNS, "window_end", "_order"], kind="stable")
    return report.drop(columns="_order").reset_index(drop=True)


def latest_windows(report: pd.DataFrame) -> pd.DataFrame:
    """The last window of each (symbol, horizon_min, model_name, model_version, predictor)."""
    require_columns(report, REPORT_COLUMNS, "report")
    last = report.groupby([*GROUP_COLUMNS, "predictor"], sort=False)["window_end"].transform("max")
    return report[report["window_end"] == last].reset_index(drop=True)


def to_markdown(frame: pd.DataFrame, latest_only: bool = True, floatfmt: str = ".3f") -> str:
    """A markdown table of a report (by default only each group's latest window)."""
    table = latest_windows(frame) if latest_only and set(REPORT_COLUMNS) <= set(frame.columns) else frame
    if table.empty:
        return "_no verified predictions_"
    return table.to_markdown(index=False, floatfmt=floatfmt)


def plot_rolling_accuracy(
    report: pd.DataFrame, path: str | Path, title: str | None = None, warmup: str | pd.Timedelta | None = None
) -> Path:
    """Plot rolling accuracy of the model vs its baselines over time, one panel per group; returns the PNG path.

    ``warmup`` (the rolling window's span) leaves out each group's windows that do not yet span it (their
    accuracy is over a handful of rows). An empty report gives a placeholder figure (so a scheduled
    report never fails for lack of data).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    require_columns(report, REPORT_COLUMNS, "report")
    if warmup is not None and len(report):
        first = report.groupby(GROUP_COLUMNS)["window_end"].transform("min")
        report = report[report["window_end"] >= first + pd.Timedelta(warmup)]
    groups = list(report.groupby(GROUP_COLUMNS, sort=True))
    figure = Figure(figsize=(10, 3.2 * max(len(groups), 1)), layout="constrained")
    FigureCanvasAgg(figure)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not groups:
        empty = "rolling window not yet full" if warmup is not None else "no verified predictions yet"
        figure.text(0.5, 0.5, empty, ha="center", va="center")
        figure.savefig(path, dpi=100)
        return path
    axes = figure.subplots(len(groups), 1, squeeze=False)[:, 0]
    styles = {MODEL: "-", "majority": ":", "persistence": "--"}
    for ax, (key, group) in zip(axes, groups, strict=True):
        for predictor, lines in group.groupby("predictor", sort=False):
            ax.plot(lines["window_end"], lines["accuracy"], styles.get(predictor, "-."), label=str(predictor))
        ax.axhline(0.5, color="grey", linewidth=0.8)
        symbol, horizon, model_name, model_version = key
        ax.set_title(f"{symbol}  h={horizon} min  {model_name} {model_version}")
        ax.set_ylabel("rolling accuracy")
        ax.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("window end (prediction time, UTC)")
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=100)
    return path
