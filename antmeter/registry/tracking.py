"""MLflow logging of a training run: config, lineage tags, per-epoch and per-fold metrics, holdout
metrics next to the baselines, plots, and the model bundle registered as a new version."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from antmeter.learn.recipe import CandidateResult, summarize_folds
from antmeter.registry import versions


def git_commit() -> str:
    """The checked-out commit (``ANTMETER_GIT_COMMIT`` in images without .git), or ``unknown``."""
    if os.environ.get("ANTMETER_GIT_COMMIT"):
        return os.environ["ANTMETER_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _metric_key(*parts: object) -> str:
    return ".".join(str(p) for p in parts).replace("@", "_")


def log_candidate(
    client,
    registered_name: str,
    result: CandidateResult,
    config: dict[str, Any],
    dataset: dict[str, Any],
    tags: dict[str, str] | None = None,
) -> tuple[str, str]:
    """Log one candidate to MLflow and register its bundle; returns (run id, model version)."""
    import mlflow

    lineage = {
        "git_commit": git_commit(),
        "config_hash": config_hash(config),
        "dataset_fingerprint": str(dataset.get("fingerprint", "")),
        "mode": result.mode,
        "trained_until": str(result.trained_until),
        **(tags or {}),
    }
    with mlflow.start_run(run_name=f"{registered_name}-{result.mode}", tags=lineage) as run:
        mlflow.log_params({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in config.items()})
        mlflow.log_dict(dataset, "dataset.json")
        for step, row in enumerate(result.history):
            prefix = f"fold{int(row.get('fold', 0))}"
            mlflow.log_metrics(
                {
                    f"{prefix}.{k}": float(v)
                    for k, v in row.items()
                    if k not in ("fold", "seed", "epoch") and pd.notna(v)
                },
                step=step,
            )
        if not result.fold_metrics.empty:
            summary = summarize_folds(result.fold_metrics)
            mlflow.log_metrics(
                {
                    _metric_key("cv", r.model, f"{r.metric}_{r.horizon}m"): float(r["mean"])
                    for _, r in summary.iterrows()
                    if pd.notna(r["mean"])
                }
            )
        mlflow.log_metrics(
            {
                _metric_key("holdout", r.model, f"{r.metric}_{r.horizon}m"): float(r.value)
                for r in result.holdout_metrics.itertuples()
                if pd.notna(r.value)
            }
        )
        mlflow.log_metrics(
            {
                f"parity.{k}": float(v)
                for k, v in result.parity.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            tables = Path(tmp)
            result.holdout_metrics.to_csv(tables / "holdout_metrics.csv", index=False)
            if not result.fold_metrics.empty:
                result.fold_metrics.to_csv(tables / "fold_metrics.csv", index=False)
            (tables / "classification_report.md").write_text(classification_report(result))
            mlflow.log_artifacts(str(tables), "reports")
        for path in result.plots.values():
            mlflow.log_artifact(str(path), "plots")
        version = versions.register_bundle(
            client,
            registered_name,
            run.info.run_id,
            result.bundle_dir,
            tags={k: str(v) for k, v in lineage.items()},
        )
    return run.info.run_id, str(version.version)


def classification_report(result: CandidateResult) -> str:
    """Markdown: holdout metrics of the model next to every baseline, and parity."""
    from antmeter.learn.plots import metrics_markdown

    parts = [
        "# Holdout (newest block, never used for training or early stopping)",
        metrics_markdown(result.holdout_metrics),
        "",
        "# ONNX parity",
        json.dumps(result.parity, indent=2, default=str),
    ]
    if not result.fold_metrics.empty:
        parts[2:2] = [
            "",
            "# Walk-forward validation (mean over folds)",
            metrics_markdown(result.fold_metrics),
        ]
    return "\n".join(parts)


def log_study(summary, model_type: str, tags: dict[str, str] | None = None) -> str:
    """Log an HPO study (``antmeter.learn.hpo.StudySummary``) to MLflow: one parent run with the best
    parameters, state counts, importance and the two pictures, and one nested run per trial (its
    parameters, state, value and the running fold mean it reported per step). Returns the parent run id."""
    import mlflow

    with mlflow.start_run(
        run_name=f"hpo-{model_type}",
        tags={
            "antmeter/kind": "hpo",
            "study": summary.study_name,
            "git_commit": git_commit(),
            **(tags or {}),
        },
    ) as parent:
        mlflow.log_params({f"best.{k}": v for k, v in summary.best_params.items()})
        mlflow.log_metrics({f"trials_{state}": float(n) for state, n in summary.counts.items()})
        if summary.best_value is not None:
            mlflow.log_metric("best_mean_fold_val_loss", summary.best_value)
        mlflow.log_metrics({f"importance.{k}": v for k, v in summary.importance.items()})
        mlflow.log_dict({"trials": summary.trials, "importance": summary.importance}, "study.json")
        with tempfile.TemporaryDirectory() as tmp:
            for name, png in summary.pictures.items():
                (Path(tmp) / f"{name}.png").write_bytes(png)
            mlflow.log_artifacts(tmp, artifact_path="hpo")
        for trial in summary.trials:
            with mlflow.start_run(
                run_name=f"trial-{trial['number']}",
                nested=True,
                tags={"antmeter/kind": "hpo_trial", "state": trial["state"], "study": summary.study_name},
            ):
                mlflow.log_params(trial["params"])
                if trial["value"] is not None:
                    mlflow.log_metric("mean_fold_val_loss", float(trial["value"]))
                for step, value in sorted(trial["intermediate"].items()):
                    mlflow.log_metric("running_fold_mean_val_loss", value, step=step)
        return parent.info.run_id
