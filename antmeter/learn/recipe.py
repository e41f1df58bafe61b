"""The training recipe: purged walk-forward folds, baselines on the same rows, the newest block held
out, an ONNX fp32 + INT8 bundle with parity checked. No Dagster, no MLflow: callers log the result.

Fold layout: the newest ``holdout_fraction`` of sample times is held out (with purge + embargo) and
never touched until the end. The rest is split into ``n_folds`` expanding walk-forward folds. Each
fold fits its own feature scaler on its training rows, trains with early stopping on its validation
block, and is scored next to the baselines on that block. The final model is the last fold's model
(trained on everything before the last validation block); it and the baselines are then scored on
the holdout — the numbers the promotion gate uses.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from antmeter.learn import plots
from antmeter.learn.baselines import fit_all_baselines
from antmeter.learn.bundle import ONNX_FP32, ONNX_INT8, SERVING_FILE
from antmeter.learn.datasets import FeatureScaler, SampleSet
from antmeter.learn.folds import Fold, holdout_split, walk_forward_folds
from antmeter.learn.metrics import evaluate_predictions

Progress = Callable[[str], None]
# Scores a ceiling (the simulator's oracle) on sample indices: tidy (model, horizon, metric, value) rows.
Ceiling = Callable[[np.ndarray], pd.DataFrame]


@dataclass(frozen=True)
class RecipeConfig:
    """What to train and how to validate it."""

    model_type: str
    preset: str = "laptop"
    n_folds: int = 3
    holdout_fraction: float = 0.15
    embargo_minutes: int | None = None
    seeds: tuple[int, ...] = (0,)
    primary_horizon: int = 5
    persistence_feature: str = "log_return_1"
    fine_tune_epochs: int = 2
    fine_tune_lr: float = 2e-4
    fine_tune_days: float = 3.0
    gate_start: str | None = None
    seed_selection: str = "best_validation"
    # Lightning DDP (antmeter.learn.distributed.DistributedConfig fields, e.g. {"processes": 2});
    # empty: one process. Applies to the walk-forward folds, not to fine-tunes or HPO trials.
    ddp: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("RecipeConfig.seeds must name at least one seed")
        if self.seed_selection != "best_validation":
            raise ValueError(
                f"RecipeConfig.seed_selection must be 'best_validation', got {self.seed_selection!r}"
            )

    # tuned hyperparameters ("section.name" -> value, e.g. an HPO study's best) replacing the preset's
    tuned: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class CandidateResult:
    """Everything a training run produced, ready to be logged and gated."""

    bundle_dir: Path
    fold_metrics: pd.DataFrame
    holdout_metrics: pd.DataFrame
    history: list[dict[str, float]]
    parity: dict[str, Any]
    parity_problems: list[str]
    holdout_indices: np.ndarray
    trained_until: pd.Timestamp
    plots: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    mode: str = "full"
    holdout_baseline_proba: dict[str, np.ndarray] = field(default_factory=dict)
    chosen_seed: int | None = None

    def edge_ratios(self, model: str) -> dict[int, float]:
        """Per horizon, the share of the oracle's edge over the majority class that ``model`` captures
        on the holdout (:func:`~antmeter.learn.metrics.edge_ratio`); empty without a ceiling."""
        from antmeter.learn.metrics import edge_ratio

        ratios = {
            int(h): edge_ratio(self.holdout_metrics, model, int(h))
            for h in self.holdout_metrics["horizon"].unique()
        }
        return {h: r for h, r in sorted(ratios.items()) if r is not None}

    def holdout_score(self, model: str, metric: str, horizon: int) -> float:
        rows = self.holdout_metrics.query("model == @model and metric == @metric and horizon == @horizon")
        if rows.empty:
            raise KeyError(f"no holdout {metric}@{horizon}m for {model}")
        return float(rows["value"].iloc[0])


def dataset_fingerprint(samples: SampleSet) -> str:
    """A stable hash of what the models see: features, targets, times and the sample spec."""
    digest = hashlib.sha256()
    for array in (
        samples.X,
        samples.end_index,
        samples.y_class,
        samples.y_reg,
        samples.sample_time.view("int64"),
        samples.symbol_id,
    ):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(
        json.dumps(
            [samples.spec.__dict__, list(samples.schema.names), list(samples.symbols)],
            sort_keys=True,
            default=str,
        ).encode()
    )
    return digest.hexdigest()[:16]


def split(samples: SampleSet, config: RecipeConfig) -> tuple[list[Fold], Fold]:
    """Walk-forward folds inside the pre-holdout part, and the holdout split itself."""
    window, max_h = samples.spec.window_minutes, samples.spec.max_horizon_minutes
    held: dict[str, Any] = {"fraction": config.holdout_fraction}
    if config.gate_start is not None:
        newest = pd.Timestamp(samples.sample_time.max(), tz="UTC")
        span = (newest - pd.Timestamp(config.gate_start)) / pd.Timedelta(minutes=1)
        if span < 0:
            raise ValueError(f"gate_start {config.gate_start} is after the newest sample {newest}")
        held = {"holdout_minutes": int(span) + 1}
    holdout = holdout_split(
        samples.sample_time,
        **held,
        window_minutes=window,
        max_horizon_minutes=max_h,
        embargo_minutes=config.embargo_minutes,
    )
    inner = walk_forward_folds(
        samples.sample_time[holdout.train],
        n_folds=config.n_folds,
        window_minutes=window,
        max_horizon_minutes=max_h,
        embargo_minutes=config.embargo_minutes,
    )
    folds = [Fold(holdout.train[f.train], holdout.train[f.validation]) for f in inner]
    return folds, holdout


def _training_options(config: RecipeConfig) -> dict[str, Any]:
    from antmeter.learn.models import load_preset

    preset = load_preset(config.preset, config.model_type, overrides=config.tuned)
    return {"params": preset["model"], "loss": preset["loss"], **preset["training"]}


def _fit_fold(
    samples: SampleSet,
    fold: Fold,
    config: RecipeConfig,
    seed: int,
    checkpoint_dir: Path,
    progress: Progress,
    callbacks: tuple = (),
):
    from antmeter.learn.distributed import DistributedConfig
    from antmeter.learn.lightning_loop import train_model

    scaler = samples.fit_scaler(fold.train)
    scaled = samples.scaled(scaler)
    distributed = DistributedConfig(**config.ddp) if config.ddp else None
    if distributed is not None and distributed.world_size > 1:
        progress(f"  DDP: {distributed.world_size} processes ({distributed.backend})")
    result = train_model(
        config.model_type,
        scaled.view(fold.train),
        scaled.view(fold.validation),
        n_features=len(samples.schema),
        window=samples.spec.window,
        horizons=samples.spec.horizons,
        n_classes=samples.spec.n_classes,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        on_epoch_end=lambda row: progress(
            f"  epoch {int(row.get('epoch', 0))}: "
            + ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch")
        ),
        callbacks=callbacks,
        distributed=distributed,
        **_training_options(config),
    )
    return result, scaler, scaled


def _evaluate(
    name_model: str,
    result,
    scaled: SampleSet,
    train_idx: np.ndarray,
    eval_idx: np.ndarray,
    config: RecipeConfig,
    include_model: bool = True,
    ceiling: Ceiling | None = None,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    from threadpoolctl import threadpool_limits

    from antmeter.learn.lightning_loop import predict

    view = scaled.view(eval_idx)
    frames = []
    baseline_proba: dict[str, np.ndarray] = {}
    proba = reg = None
    if include_model:
        proba, reg = predict(result.model, view, target_scaler=result.target_scaler)
        frames.append(
            evaluate_predictions(name_model, view.y_class, view.y_reg, proba, reg, scaled.spec.horizons)
        )
    with threadpool_limits(1):
        baselines = fit_all_baselines(scaled.view(train_idx), return_feature=config.persistence_feature)
        for name, baseline in baselines.items():
            b_proba, b_reg = baseline.predict(view)
            baseline_proba[name] = b_proba
            frames.append(
                evaluate_predictions(name, view.y_class, view.y_reg, b_proba, b_reg, scaled.spec.horizons)
            )
    if ceiling is not None:
        frames.append(ceiling(eval_idx))
    return pd.concat(frames, ignore_index=True), proba, reg, baseline_proba


def _validation_loss(metrics: pd.DataFrame, model: str, horizon: int) -> float:
    rows = metrics.query("model == @model and metric == 'log_loss' and horizon == @horizon")
    return float(rows["value"].iloc[0]) if len(rows) else float("inf")


def train_candidate(
    samples: SampleSet,
    config: RecipeConfig,
    work_dir: Path,
    *,
    progress: Progress = print,
    base_bundle: Path | None = None,
    extra_serving: dict[str, Any] | None = None,
    ceiling: Ceiling | None = None,
) -> CandidateResult:
    """Train (``base_bundle`` None) or fine-tune (``base_bundle`` = the champion's bundle) a candidate.

    Returns fold and holdout metrics next to the baselines (and ``ceiling``'s rows, e.g. the
    simulator's oracle) on the same rows, and a bundle directory with weights, scalers, ONNX fp32 +
    INT8 and a parity report on the holdout windows.
    """
    started = time.monotonic()
    folds, holdout = split(samples, config)
    fold_frames, history = [], []
    if base_bundle is None:
        mode = "full"
        best: tuple[float, int, Any] | None = None
        for seed in config.seeds:
            for k, fold in enumerate(folds):
                progress(
                    f"{config.model_type} seed {seed} fold {k + 1}/{len(folds)}: "
                    f"{len(fold.train)} train / {len(fold.validation)} validation samples"
                )
                result, scaler, scaled = _fit_fold(
                    samples, fold, config, seed, work_dir / f"ckpt-seed{seed}-fold{k}", progress
                )
                metrics, _, _, _ = _evaluate(
                    config.model_type, result, scaled, fold.train, fold.validation, config, ceiling=ceiling
                )
                fold_frames.append(metrics.assign(fold=k, seed=seed))
                history.extend({**row, "fold": k, "seed": seed} for row in result.history)
            loss = _validation_loss(metrics, config.model_type, config.primary_horizon)
            if best is None or loss < best[0]:  # the last fold of the best seed (see the module doc)
                best = (loss, seed, (result, scaler, scaled))
        assert best is not None
        chosen_seed = best[1]
        final, final_scaler, final_scaled = best[2]
        final_train = folds[-1].train
    else:
        mode = "incremental"
        final, final_scaler, final_scaled, final_train = _fine_tune(
            samples, holdout, base_bundle, config, work_dir, progress
        )
        history.extend({**row, "fold": -1, "seed": config.seeds[0]} for row in final.history)
        chosen_seed = config.seeds[0]
    holdout_metrics, proba, reg, baseline_proba = _evaluate(
        config.model_type, final, final_scaled, final_train, holdout.validation, config, ceiling=ceiling
    )
    bundle = work_dir / "bundle"
    trained_until = pd.Timestamp(samples.sample_time[final_train].max(), tz="UTC")
    class_rates = {
        str(h): np.bincount(samples.y_class[final_train, i], minlength=samples.spec.n_classes)
        .astype(float)
        .tolist()
        for i, h in enumerate(samples.spec.horizons)
    }
    class_rates = {h: [c / sum(v) for c in v] for h, v in class_rates.items()}
    serving_extra = {
        "trained_until": str(trained_until),
        "class_rates": class_rates,
        "persistence_rates": _persistence_rates(final_scaled, final_train, config),
        "validated_accuracy": validated_accuracy(proba, final_scaled, holdout.validation),
        "seed": chosen_seed,
        **(extra_serving or {}),
    }
    parity, problems = _export_bundle(
        final, final_scaler, final_scaled, holdout.validation, bundle, samples, config, serving_extra
    )
    plots = _plots(final_scaled, holdout.validation, proba, reg, config, work_dir / "plots")
    progress(f"{config.model_type} {mode}: done in {time.monotonic() - started:.1f}s")
    return CandidateResult(
        bundle_dir=bundle,
        fold_metrics=pd.concat(fold_frames, ignore_index=True) if fold_frames else pd.DataFrame(),
        holdout_metrics=holdout_metrics,
        history=history,
        parity=parity,
        parity_problems=problems,
        holdout_indices=holdout.validation,
        trained_until=trained_until,
        plots=plots,
        seconds=time.monotonic() - started,
        mode=mode,
        holdout_baseline_proba=baseline_proba,
        chosen_seed=chosen_seed,
    )


def validated_accuracy(proba: np.ndarray, scaled: SampleSet, eval_idx: np.ndarray) -> dict[str, dict]:
    """The served model's accuracy per horizon on the holdout block (never trained on), with its rows and
    effective rows (distinct sample times, each an ``h``-candle outcome sampled every ``stride`` candles
    counting ``min(1, stride / h)``): the level the retrain policy's validated chart holds it to."""
    y = scaled.y_class[eval_idx]
    distinct_times = np.unique(scaled.sample_time[eval_idx]).size
    out = {}
    for i, h in enumerate(scaled.spec.horizons):
        correct = proba[:, i, :].argmax(axis=1) == y[:, i]
        out[str(h)] = {
            "accuracy": float(correct.mean()) if correct.size else float("nan"),
            "n": int(correct.size),
            "n_effective": float(distinct_times * min(1.0, scaled.spec.stride / h)),
        }
    return out


def _persistence_rates(scaled: SampleSet, train_idx: np.ndarray, config: RecipeConfig) -> dict[str, list]:
    """The persistence baseline's training class rates given the sign of the trailing ``h``-minute
    return (rows: down, unchanged, up), per horizon: the live verification's probabilistic persistence."""
    from antmeter.learn.baselines import PersistenceBaseline

    if config.persistence_feature not in scaled.schema.names:
        return {}
    fitted = PersistenceBaseline(config.persistence_feature).fit(scaled.view(train_idx))
    return {str(h): fitted.proba_[j].tolist() for j, h in enumerate(scaled.spec.horizons)}


def _fine_tune(
    samples: SampleSet,
    holdout: Fold,
    base_bundle: Path,
    config: RecipeConfig,
    work_dir: Path,
    progress: Progress,
):
    """Fine-tune the champion on the most recent pre-holdout data, keeping its feature scaler (batches of
    the preset's size; epochs and the constant learning rate are the fine-tune's own)."""
    from antmeter.learn.lightning_loop import fine_tune, load_target_scaler, load_weights

    scaler = FeatureScaler.load(base_bundle)
    scaler.schema.verify(list(samples.schema.names), ignore=())
    scaled = samples.scaled(scaler)
    times = samples.sample_time[holdout.train]
    recent = holdout.train[times >= times.max() - np.timedelta64(int(config.fine_tune_days * 1440), "m")]
    folds = walk_forward_folds(
        samples.sample_time[recent],
        n_folds=1,
        window_minutes=samples.spec.window_minutes,
        max_horizon_minutes=samples.spec.max_horizon_minutes,
        embargo_minutes=config.embargo_minutes,
    )
    train_idx, val_idx = recent[folds[0].train], recent[folds[0].validation]
    progress(
        f"{config.model_type} fine-tune: {len(train_idx)} recent train / {len(val_idx)} validation samples, "
        f"{config.fine_tune_epochs} epochs at lr {config.fine_tune_lr}"
    )
    result = fine_tune(
        load_weights(base_bundle),
        scaled.view(train_idx),
        scaled.view(val_idx),
        epochs=config.fine_tune_epochs,
        lr=config.fine_tune_lr,
        target_scaler=load_target_scaler(base_bundle),
        seed=config.seeds[0],
        batch_size=_training_options(config)["batch_size"],
        checkpoint_dir=work_dir / "ckpt-finetune",
    )
    return result, scaler, scaled, train_idx


def _export_bundle(
    result,
    scaler: FeatureScaler,
    scaled: SampleSet,
    holdout_idx: np.ndarray,
    bundle: Path,
    samples: SampleSet,
    config: RecipeConfig,
    extra: dict[str, Any],
) -> tuple[dict, list[str]]:
    from antmeter.learn.lightning_loop import save_weights
    from antmeter.learn.onnx import check_parity, export_onnx, parity_report, quantize_int8

    bundle.mkdir(parents=True, exist_ok=True)
    save_weights(result.model, bundle, target_scaler=result.target_scaler)
    scaler.save(bundle)
    export_onnx(result.model, len(samples.schema), samples.spec.window, bundle / ONNX_FP32)
    quantize_int8(bundle / ONNX_FP32, bundle / ONNX_INT8)
    windows, y_class, _, _ = scaled.view(holdout_idx).batch()
    report = parity_report(
        result.model, bundle / ONNX_FP32, bundle / ONNX_INT8, windows, samples.spec.task, y_class=y_class
    )
    serving = {
        "model_type": config.model_type,
        "window": samples.spec.window,
        "interval": samples.spec.interval,
        "horizons": list(samples.spec.horizons),
        "task": samples.spec.task,
        "n_classes": samples.spec.n_classes,
        "symbols": list(samples.symbols),
        "target_scaler": result.target_scaler.to_dict(),
        "recipe": config.to_dict(),
        "dataset_fingerprint": dataset_fingerprint(samples),
        **extra,
    }
    (bundle / SERVING_FILE).write_text(json.dumps(serving, indent=2, default=str))
    (bundle / "parity.json").write_text(json.dumps(report, indent=2, default=str))
    return report, check_parity(report)


def _plots(
    scaled: SampleSet,
    idx: np.ndarray,
    proba: np.ndarray,
    reg: np.ndarray,
    config: RecipeConfig,
    directory: Path,
) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    horizons = list(scaled.spec.horizons)
    view = scaled.view(idx)
    title = f"{config.model_type} holdout"
    return {
        "confusion_matrix": plots.plot_confusion(
            view.y_class, proba, horizons, directory / "confusion_matrix.png", title
        ),
        "calibration": plots.plot_calibration(
            view.y_class, proba, horizons, directory / "calibration.png", title
        ),
        "predictions_vs_outcomes": plots.plot_predictions_vs_outcomes(
            reg, view.y_reg, horizons, directory / "predictions_vs_outcomes.png", title
        ),
    }


def summarize_folds(fold_metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over folds and seeds per (model, horizon, metric)."""
    grouped = fold_metrics.groupby(["model", "horizon", "metric"])["value"]
    return grouped.agg(["mean", "std", "count"]).reset_index()


def summarize_seeds(fold_metrics: pd.DataFrame) -> pd.DataFrame:
    """Per (model, horizon, metric): the fold-averaged value of each seed, then mean ± std over seeds
    (``std`` is NaN with one seed) and the number of seeds."""
    per_seed = fold_metrics.groupby(["model", "horizon", "metric", "seed"])["value"].mean()
    grouped = per_seed.groupby(["model", "horizon", "metric"])
    return grouped.agg(mean="mean", std="std", seeds="count").reset_index()
