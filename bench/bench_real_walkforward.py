"""Walk-forward and holdout scores of every model type next to the baselines on real January 2024 candles.

Data: Binance spot 1-minute candles of BTCUSDT and ETHUSDT, 2024-01-01 .. 2024-01-31 (44,641 rows each),
read with :func:`antmeter.market.file_import.read_candle_file`. No news exists for this window, so features are
built with ``FeatureConfig(include_sentiment=False)``; labels are the binary ``up_{h}`` for 5/10/30 minutes.
Both symbols are pooled into one :class:`~antmeter.learn.datasets.SampleSet` (60-minute windows; the ``laptop``
preset's stride, one sample every 5 minutes, unless ``--stride`` says otherwise).

Each model type goes through :func:`antmeter.learn.recipe.train_candidate`, the production recipe:
the newest 15% of sample times is held out (purged and embargoed), the rest is cut into ``--n-folds``
expanding walk-forward folds; each fold fits its own scaler and model and scores them next to the
baselines (majority, persistence, logistic, gradient boosting, all fit on the fold's training rows) on
its validation block; the last fold's model is then scored with the baselines on the holdout. The
baselines are deterministic, so every model type's run scores them identically (checked).

Reported per horizon: accuracy, balanced accuracy, log loss, Brier, MCC and IC (Spearman rank correlation
of the return forecast), as walk-forward mean +- std over folds and on the holdout, plus, per model and
metric, whether the model beats the best baseline on the holdout, and an approximate standard error of
holdout accuracy (``sqrt(p (1 - p) / n_eff)`` with ``n_eff = n * min(1, stride / h)`` for overlapping
outcomes) to read accuracy differences against. Prints a markdown summary, then ONE JSON object on the
last line.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from antmeter.features.labels import LabelConfig, compute_labels
from antmeter.features.pipeline import FeatureConfig, compute_features, model_feature_columns
from antmeter.learn.datasets import DatasetSpec, SampleSet, build_samples
from antmeter.learn.metrics import EVALUATION_COLUMNS
from antmeter.learn.models import load_preset
from antmeter.learn.recipe import RecipeConfig, summarize_folds, train_candidate
from antmeter.market.file_import import read_candle_file
from antmeter.registry.promotion import LOWER_IS_BETTER

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "binance-spot-1m-2024-01"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
HORIZONS = (5, 10, 30)
MODEL_TYPES = ("lstm", "transformer", "patchtst")
METRICS = ("accuracy", "balanced_accuracy", "log_loss", "brier", "mcc", "ic")
HIGHER_IS_BETTER = {**{m: not lower for m, lower in LOWER_IS_BETTER.items()}, "ic": True}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_samples_from_csv(data_dir: Path, stride: int) -> tuple[SampleSet, dict[str, int]]:
    """Features (no sentiment) + labels of both symbols, pooled into one sample set."""
    config = FeatureConfig(include_sentiment=False)
    frames, rows = {}, {}
    for symbol in SYMBOLS:
        candles = read_candle_file(data_dir / f"{symbol}.csv")
        rows[symbol] = len(candles)
        features = compute_features(candles, config)
        frames[symbol] = features.merge(
            compute_labels(candles, LabelConfig(horizons=HORIZONS)), on="open_time"
        )
    spec = DatasetSpec(window=60, stride=stride, horizons=HORIZONS, task="binary")
    return build_samples(frames, model_feature_columns(config), spec), rows


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 5)


def table(fold_summary: pd.DataFrame, holdout: pd.DataFrame) -> dict:
    """{horizon: {model: {metric: {wf_mean, wf_std, holdout}}}} for the reported metrics."""
    out: dict = {}
    for h in HORIZONS:
        per_model: dict = {}
        for model in holdout["model"].unique():
            entry = {}
            for metric in METRICS:
                wf = fold_summary.query("model == @model and horizon == @h and metric == @metric")
                ho = holdout.query("model == @model and horizon == @h and metric == @metric")
                entry[metric] = {
                    "wf_mean": _finite(wf["mean"].iloc[0]) if len(wf) else None,
                    "wf_std": _finite(wf["std"].iloc[0]) if len(wf) else None,
                    "holdout": _finite(ho["value"].iloc[0]) if len(ho) else None,
                }
            per_model[model] = entry
        out[str(h)] = per_model
    return out


def verdicts(results: dict, models: list[str], baselines: list[str]) -> dict:
    """Per model, horizon and metric: the model's holdout value minus the best baseline's (signed so that
    positive = model better) and whether it beats every baseline on the holdout and on the fold mean."""
    out: dict = {}
    for model in models:
        out[model] = {}
        for h, per_model in results.items():
            out[model][h] = {}
            for metric in METRICS:
                sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
                mine = per_model[model][metric]
                row = {}
                for where in ("holdout", "wf_mean"):
                    values = {
                        b: per_model[b][metric][where]
                        for b in baselines
                        if per_model[b][metric][where] is not None
                    }
                    if mine[where] is None or not values:
                        row[f"beats_best_baseline_{where}"] = None
                        continue
                    best = max(values, key=lambda b: sign * values[b])
                    edge = sign * (mine[where] - values[best])
                    row[f"beats_best_baseline_{where}"] = bool(edge > 0)
                    if where == "holdout":
                        row["best_baseline"] = best
                        row["edge_vs_best_baseline"] = round(edge, 5)
                out[model][h][metric] = row
    return out


def markdown(results: dict, accuracy_se: dict) -> str:
    lines = []
    for h, per_model in results.items():
        lines.append(f"\n### horizon {h} min (holdout accuracy s.e. ~ {accuracy_se[h]:.4f})\n")
        lines.append("| model | " + " | ".join(f"{m} wf (mean+-std) / holdout" for m in METRICS) + " |")
        lines.append("|---|" + "---|" * len(METRICS))
        for model, entry in per_model.items():
            cells = []
            for metric in METRICS:
                v = entry[metric]
                fmt = lambda x: "nan" if x is None else f"{x:.4f}"  # noqa: E731
                cells.append(f"{fmt(v['wf_mean'])}+-{fmt(v['wf_std'])} / {fmt(v['holdout'])}")
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", default=",".join(MODEL_TYPES))
    parser.add_argument(
        "--stride", type=int, default=None, help="minutes between samples (default: the preset's)"
    )
    parser.add_argument("--n-folds", type=int, default=3)
    parser.add_argument("--preset", default="laptop")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=15.0,
        help="skip the remaining model types once this much wall time has passed",
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    stride = args.stride or int(load_preset(args.preset, "lstm")["dataset"].get("stride", 1))
    samples, rows = load_samples_from_csv(args.data_dir, stride)
    log(
        f"{len(samples)} samples (stride {stride} min), {len(samples.schema)} features; excluded {samples.excluded}"
    )
    work = Path(tempfile.mkdtemp(prefix="antmeter-bench-wf-"))
    fold_frames, holdout_frames, seconds, skipped = [], [], {}, []
    baseline_holdouts = []
    first_holdout_indices = None
    try:
        for model_type in args.models.split(","):
            if time.monotonic() - started > args.budget_minutes * 60:
                skipped.append(model_type)
                log(f"{model_type}: skipped, {args.budget_minutes} min budget spent")
                continue
            t0 = time.monotonic()
            recipe = RecipeConfig(model_type=model_type, preset=args.preset, n_folds=args.n_folds)
            result = train_candidate(samples, recipe, work / model_type, progress=log)
            seconds[model_type] = round(time.monotonic() - t0, 1)
            if first_holdout_indices is None:
                first_holdout_indices = result.holdout_indices
            own = result.fold_metrics["model"] == model_type
            fold_frames.append(result.fold_metrics[own] if fold_frames else result.fold_metrics)
            own_h = result.holdout_metrics["model"] == model_type
            holdout_frames.append(result.holdout_metrics[own_h] if holdout_frames else result.holdout_metrics)
            baseline_holdouts.append(result.holdout_metrics[~own_h].reset_index(drop=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    baselines_identical = all(frame.equals(baseline_holdouts[0]) for frame in baseline_holdouts[1:])
    fold_metrics = pd.concat(fold_frames, ignore_index=True)
    holdout = pd.concat(holdout_frames, ignore_index=True)[EVALUATION_COLUMNS]
    results = table(summarize_folds(fold_metrics), holdout)
    trained = [m for m in args.models.split(",") if m in seconds]
    baselines = [m for m in holdout["model"].unique() if m not in trained]
    verdict = verdicts(results, trained, baselines)
    n_holdout = int(len(first_holdout_indices))
    accuracy_se = {}
    for h in HORIZONS:
        p = results[str(h)]["majority"]["accuracy"]["holdout"] or 0.5
        accuracy_se[str(h)] = math.sqrt(p * (1 - p) / (n_holdout * min(1.0, stride / h)))
    print(markdown(results, accuracy_se))
    beats = {
        m: {h: [k for k, v in verdict[m][h].items() if v["beats_best_baseline_holdout"]] for h in verdict[m]}
        for m in trained
    }
    significant = {
        m: {
            h: bool(verdict[m][h]["accuracy"]["edge_vs_best_baseline"] > 2 * accuracy_se[h])
            for h in verdict[m]
        }
        for m in trained
    }
    edges = [f"{m}@{h}m" for m, per in significant.items() for h, v in per.items() if v]
    log_loss_wins = [
        f"{m}@{h}m"
        for m in trained
        for h in verdict[m]
        if verdict[m][h]["log_loss"]["beats_best_baseline_holdout"]
    ]
    note = (
        "Holdout, metrics on which each model beats the best baseline: "
        + "; ".join(
            f"{m} " + ", ".join(f"{h}m [{', '.join(v) or 'none'}]" for h, v in per.items())
            for m, per in beats.items()
        )
        + f". Log-loss wins over every baseline: {', '.join(log_loss_wins) or 'none'}."
        + f" Accuracy edges over the best baseline larger than 2 s.e.: {', '.join(edges) or 'none'}."
        + (
            " Conclusion: on these real candles no model is reliably better than the baselines."
            if not edges
            else " Conclusion: see the edges above; everything else is within noise."
        )
    )
    print(f"\n{note}")
    summary = {
        "bench": "real_walkforward",
        "data": str(args.data_dir),
        "symbols": list(SYMBOLS),
        "candle_rows": rows,
        "period": "2024-01-01..2024-01-31",
        "sentiment": "none (FeatureConfig(include_sentiment=False))",
        "preset": args.preset,
        "stride_min": stride,
        "n_folds": args.n_folds,
        "holdout_fraction": RecipeConfig(model_type="lstm").holdout_fraction,
        "samples": len(samples),
        "holdout_samples": n_holdout,
        "features": len(samples.schema),
        "models": trained,
        "skipped_models": skipped,
        "baselines": baselines,
        "baselines_identical_across_runs": baselines_identical,
        "seconds_per_model": seconds,
        "wall_s": round(time.monotonic() - started, 1),
        "threads": args.threads,
        "holdout_accuracy_se": {h: round(v, 5) for h, v in accuracy_se.items()},
        "results": results,
        "verdict": verdict,
        "accuracy_edge_exceeds_2se": significant,
        "note": note,
    }
    print(json.dumps(summary, allow_nan=False))


if __name__ == "__main__":
    main()
