"""Hyperparameter search: an Optuna study over a preset's search space, scored on the purged
walk-forward folds of the training recipe (the holdout is never touched), pruned from inside
Lightning, stored in a database so a killed study resumes. No Dagster, no MLflow: callers log it.

What a trial is scored on: each fold trains with early stopping on its validation block; the fold's
score is its best validation loss (the multi-task loss the models are trained on). The trial's value
is the mean over folds (lower is better). What the pruner sees: after every epoch of fold ``k`` the
Lightning pruning callback reports, at step ``k * max_epochs + epoch``, the running mean of the fold
validation losses so far (the best loss of each finished fold and the current loss of fold ``k``),
so trials are compared at equal progress; the first fold is never pruned (warm-up steps).
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from antmeter.learn.datasets import SampleSet
from antmeter.learn.metrics import evaluate_predictions
from antmeter.learn.models import load_preset, load_search_space
from antmeter.learn.recipe import RecipeConfig, _fit_fold, dataset_fingerprint, split

Progress = Callable[[str], None]
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
HEARTBEAT_S = 5
GRACE_S = 15
MAX_PICTURE_BYTES = 100_000


@dataclass(frozen=True)
class HpoConfig:
    """One study: the recipe it tunes (model type, preset, folds), its budget and its storage."""

    recipe: RecipeConfig
    n_trials: int = 2
    timeout_minutes: float | None = None
    storage_url: str = "sqlite:///optuna.sqlite"
    study_name: str | None = None  # default: <model type>-<preset>-<dataset fingerprint>
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_trials < 0:
            raise ValueError(f"HPO n_trials must be >= 0, got {self.n_trials}")
        if self.timeout_minutes is not None and self.timeout_minutes <= 0:
            raise ValueError(f"HPO timeout_minutes must be > 0, got {self.timeout_minutes}")


@dataclass
class StudySummary:
    """What a study found: the best trial, counts per state, importance and the pictures."""

    study_name: str
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    trials: list[dict[str, Any]]
    counts: dict[str, int]
    importance: dict[str, float]
    ran_now: int
    seconds: float
    pictures: dict[str, bytes] = field(default_factory=dict)

    def pictures_markdown(self) -> str:
        """The pictures as inline base64 PNGs (Dagster ``MetadataValue.md``)."""
        return "\n\n".join(
            f"**{name}**\n\n![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"
            for name, png in self.pictures.items()
        )


class _FoldRunningMean:
    """The trial as the Lightning pruning callback sees it during fold ``fold``: ``report`` turns the
    epoch's validation loss into the running mean over folds at a step that keeps growing across folds."""

    def __init__(self, trial: optuna.Trial, fold: int, max_epochs: int, finished: list[float]):
        self._trial, self._fold, self._max_epochs, self._finished = trial, fold, max_epochs, finished

    def report(self, value: float, step: int) -> None:
        running = (sum(self._finished) + value) / (len(self._finished) + 1)
        self._trial.report(running, step=self._fold * self._max_epochs + step)

    def should_prune(self) -> bool:
        return self._trial.should_prune()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One value per ``"section.name"`` of the search space (see ``load_search_space``)."""
    values: dict[str, Any] = {}
    for key, spec in space.items():
        kind = spec["type"]
        if kind == "float":
            values[key] = trial.suggest_float(key, spec["low"], spec["high"], log=bool(spec.get("log")))
        elif kind == "int":
            values[key] = trial.suggest_int(
                key, spec["low"], spec["high"], step=spec.get("step", 1), log=bool(spec.get("log"))
            )
        else:
            values[key] = trial.suggest_categorical(key, spec["choices"])
    return values


def open_study(config: HpoConfig, samples: SampleSet) -> optuna.Study:
    """The study in its database (created, or loaded to resume); its trials' heartbeat lets a later
    run mark the trials of a killed process as failed."""
    name = config.study_name or (
        f"{config.recipe.model_type}-{config.recipe.preset}-{dataset_fingerprint(samples)}"
    )
    storage = optuna.storages.RDBStorage(
        config.storage_url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
    )
    max_epochs = load_preset(config.recipe.preset, config.recipe.model_type)["training"]["max_epochs"]
    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction="minimize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=max_epochs),
    )


def _objective(samples: SampleSet, config: HpoConfig, work_dir: Path, progress: Progress):
    from optuna_integration import PyTorchLightningPruningCallback

    from antmeter.learn.lightning_loop import predict

    folds, _holdout = split(samples, config.recipe)  # the holdout is left alone
    space = load_search_space(config.recipe.preset, config.recipe.model_type)
    if config.recipe.primary_horizon not in samples.spec.horizons:
        raise ValueError(
            f"HPO primary_horizon {config.recipe.primary_horizon} is not a dataset horizon {samples.spec.horizons}"
        )

    def objective(trial: optuna.Trial) -> float:
        tuned = {**config.recipe.tuned, **suggest(trial, space)}
        recipe = replace(config.recipe, tuned=tuned)
        max_epochs = load_preset(recipe.preset, recipe.model_type, overrides=tuned)["training"]["max_epochs"]
        losses: list[float] = []
        fold_log_loss: list[float] = []
        progress(f"trial {trial.number}: {tuned}")
        for k, fold in enumerate(folds):
            pruning = PyTorchLightningPruningCallback(
                _FoldRunningMean(trial, k, max_epochs, losses), monitor="val_loss"
            )
            result, _, scaled = _fit_fold(
                samples,
                fold,
                recipe,
                recipe.seeds[0],
                work_dir / f"trial-{trial.number}" / f"fold-{k}",
                lambda _message: None,
                callbacks=(pruning,),
            )
            losses.append(result.best_val_loss)
            view = scaled.view(fold.validation)
            proba, reg = predict(result.model, view, target_scaler=result.target_scaler)
            table = evaluate_predictions("model", view.y_class, view.y_reg, proba, reg, samples.spec.horizons)
            chosen = (table["metric"] == "log_loss") & (table["horizon"] == config.recipe.primary_horizon)
            fold_log_loss.append(float(table.loc[chosen, "value"].iloc[0]))
            progress(f"trial {trial.number} fold {k + 1}/{len(folds)}: best val_loss {losses[-1]:.5f}")
        trial.set_user_attr("fold_val_loss", losses)
        trial.set_user_attr(f"fold_log_loss_{config.recipe.primary_horizon}", fold_log_loss)
        return float(np.mean(losses))

    return objective


def run_study(
    samples: SampleSet, config: HpoConfig, work_dir: Path, *, progress: Progress = print
) -> StudySummary:
    """Run the study until it holds ``n_trials`` finished (complete or pruned) trials or the time
    budget is spent; trials from earlier (also killed) runs of the same study count."""
    started = time.monotonic()
    study = open_study(config, samples)
    optuna.storages.fail_stale_trials(study)
    done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
    remaining = max(config.n_trials - done, 0)
    progress(f"study {study.study_name}: {done} finished trial(s) stored, {remaining} to run")
    if remaining:
        study.optimize(
            _objective(samples, config, work_dir, progress),
            n_trials=remaining,
            timeout=config.timeout_minutes * 60 if config.timeout_minutes else None,
            catch=(),
            gc_after_trial=True,
        )
    return summarize(study, ran_now=remaining, seconds=time.monotonic() - started)


def summarize(study: optuna.Study, ran_now: int = 0, seconds: float = 0.0) -> StudySummary:
    """Best trial, per-trial rows, counts per state, parameter importance and the two pictures."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    best = min(complete, key=lambda t: t.value) if complete else None
    importance: dict[str, float] = {}
    if len(complete) >= 2:
        try:
            importance = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
        except (RuntimeError, ValueError):  # e.g. no parameter varied across trials
            importance = {}
    rows = [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            "params": dict(t.params),
            "intermediate": {int(k): float(v) for k, v in t.intermediate_values.items()},
            "user_attrs": dict(t.user_attrs),
            "start": t.datetime_start.isoformat() if t.datetime_start else None,
            "end": t.datetime_complete.isoformat() if t.datetime_complete else None,
        }
        for t in trials
    ]
    summary = StudySummary(
        study_name=study.study_name,
        best_value=float(best.value) if best else None,
        best_params=dict(best.params) if best else {},
        best_trial=best.number if best else None,
        trials=rows,
        counts=counts,
        importance=importance,
        ran_now=ran_now,
        seconds=seconds,
    )
    summary.pictures = study_pictures(summary)
    return summary


def study_pictures(summary: StudySummary) -> dict[str, bytes]:
    """The optimization history (every finished trial's value, the running best, pruned trials at the
    last value they reported) and the parameter importance, as PNGs under 100 kB each."""
    from antmeter.learn.plots import _pyplot

    plt = _pyplot()
    pictures = {}
    fig, ax = plt.subplots(figsize=(6, 3.2))
    done = [r for r in summary.trials if r["state"] == "complete"]
    pruned = [r for r in summary.trials if r["state"] == "pruned" and r["intermediate"]]
    if done:
        xs = [r["number"] for r in done]
        ys = [r["value"] for r in done]
        ax.scatter(xs, ys, label="complete", color="tab:blue")
        ax.step(xs, np.minimum.accumulate(ys), where="post", color="tab:red", label="best so far")
    if pruned:
        last = [r["intermediate"][max(r["intermediate"])] for r in pruned]
        ax.scatter(
            [r["number"] for r in pruned], last, marker="x", color="grey", label="pruned (last report)"
        )
    ax.set_xlabel("trial")
    ax.set_ylabel("mean fold validation loss")
    ax.set_title(f"{summary.study_name}: optimization history", fontsize=9)
    if done or pruned:
        ax.legend(fontsize=7)
    pictures["optimization_history"] = _png(fig, plt)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if summary.importance:
        names = list(summary.importance)[::-1]
        ax.barh(names, [summary.importance[n] for n in names], color="tab:green")
        ax.set_xlabel("importance (fANOVA, share of variance)")
    else:
        ax.text(0.5, 0.5, "needs >= 2 complete trials with varying parameters", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title(f"{summary.study_name}: parameter importance", fontsize=9)
    pictures["parameter_importance"] = _png(fig, plt)
    return pictures


def _png(fig, plt) -> bytes:
    for dpi in (90, 70, 50):
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=dpi)
        if buffer.tell() <= MAX_PICTURE_BYTES:
            break
    plt.close(fig)
    return buffer.getvalue()
