"""MLflow logging of a training run: config, lineage tags, per-epoch and per-fold metrics, holdout
metrics next to the baselines, plots, and the model bundle registered as a new version."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
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


# The experiment opens as model training in the MLflow UI (not the GenAI view).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


# Where `bash run.sh mlflow` serves the UI of the local store (ANTMETER_MLFLOW_UI_URL overrides).
LOCAL_UI_URL = "http://127.0.0.1:5000"


def run_url(client, tracking_uri: str, run_id: str) -> str:
    """The run's page in the MLflow UI: the tracking server's when one is configured, else the local UI's."""
    base = os.environ.get("ANTMETER_MLFLOW_UI_URL") or (
        tracking_uri if tracking_uri.startswith(("http://", "https://")) else LOCAL_UI_URL
    )
    experiment = client.get_run(run_id).info.experiment_id
    return f"{base.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"


def _metric_key(*parts: object) -> str:
    """A ``/``-separated metric name (MLflow groups metrics by their prefixes)."""
    return "/".join(str(p) for p in parts).replace("@", "_")


@contextlib.contextmanager
def training_run(
    client, registered_name: str, mode: str, config: dict[str, Any], tags: dict[str, str] | None = None
) -> Iterator[Any]:
    """The MLflow run of one candidate, open while it trains (so the run's duration is the training's)."""
    import mlflow

    lineage = {"git_commit": git_commit(), "config_hash": config_hash(config), "mode": mode, **(tags or {})}
    with mlflow.start_run(run_name=f"{registered_name}-{mode}", tags=lineage) as run:
        client.set_experiment_tag(run.info.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        mlflow.log_params({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in config.items()})
        yield run


def log_candidate(
    client,
    registered_name: str,
    result: CandidateResult,
    config: dict[str, Any],
    dataset: dict[str, Any],
    tags: dict[str, str] | None = None,
    dataset_source: str | None = None,
) -> tuple[str, str]:
    """Log one candidate to MLflow and register its bundle; returns (run id, model version).

    Logs into the active run (opened by :func:`training_run` when training started), or a new one.
    Metrics: ``train/fold{k}/<loss>`` per epoch (steps = epochs), ``cv/fold{k}/<model>/<metric>_<h>m``
    per fold, ``cv/mean/...`` over folds and ``holdout/<model>/<metric>_<h>m`` (models, baselines and,
    on the simulator, the oracle ceiling of the same rows).
    """
    import mlflow

    with contextlib.ExitStack() as stack:
        if mlflow.active_run() is None:
            stack.enter_context(training_run(client, registered_name, result.mode, config, tags))
        run = mlflow.active_run()
        lineage = {
            "dataset_fingerprint": str(dataset.get("fingerprint", "")),
            "trained_until": str(result.trained_until),
        }
        mlflow.set_tags(lineage)
        mlflow.log_dict(dataset, "dataset.json")
        mlflow.log_input(_dataset_entity(dataset, dataset_source), context="training")
        for (fold, seed), rows in _epochs_by_fold(result.history).items():
            prefix = f"train/fold{fold}" + (f"/seed{seed}" if seed else "")
            for epoch, row in enumerate(rows):
                mlflow.log_metrics(
                    {
                        f"{prefix}/{k}": float(v)
                        for k, v in row.items()
                        if k not in ("fold", "seed", "epoch") and pd.notna(v)
                    },
                    step=int(row.get("epoch", epoch)),
                )
        if not result.fold_metrics.empty:
            mlflow.log_metrics(
                {
                    _metric_key("cv", f"fold{int(r.fold)}", r.model, f"{r.metric}_{r.horizon}m"): float(
                        r.value
                    )
                    for r in result.fold_metrics.groupby(
                        ["fold", "model", "metric", "horizon"], as_index=False
                    )["value"]
                    .mean()
                    .itertuples()
                    if pd.notna(r.value)
                }
            )
            summary = summarize_folds(result.fold_metrics)
            mlflow.log_metrics(
                {
                    _metric_key("cv", "mean", r.model, f"{r.metric}_{r.horizon}m"): float(r["mean"])
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
                f"holdout/edge_ratio_{h}m": r
                for h, r in result.edge_ratios(str(config.get("model_type", ""))).items()
            }
        )
        mlflow.log_metrics(
            {
                f"parity/{k}": float(v)
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
        write_mlmodel(result.bundle_dir, run.info.run_id)
        all_tags = {**run.data.tags, **lineage}
        version = versions.register_bundle(
            client,
            registered_name,
            run.info.run_id,
            result.bundle_dir,
            tags={k: str(v) for k, v in all_tags.items() if not k.startswith("mlflow.")},
        )
        describe_version(client, registered_name, str(version.version), result, dataset)
    return run.info.run_id, str(version.version)


def _epochs_by_fold(history: list[dict[str, float]]) -> dict[tuple[int, int], list[dict[str, float]]]:
    grouped: dict[tuple[int, int], list[dict[str, float]]] = {}
    for row in history:
        grouped.setdefault((int(row.get("fold", 0)), int(row.get("seed", 0))), []).append(row)
    return grouped


def _dataset_entity(dataset: dict[str, Any], source: str | None):
    """The training samples as an MLflow dataset (name, digest = fingerprint, where they lie)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    return MetaDataset(
        source=resolve_dataset_source(source or "unknown"),
        name=f"antmeter-training-{dataset.get('samples', '?')}-samples",
        digest=str(dataset.get("fingerprint", ""))[:36],
    )


def onnx_signature(path: Path):
    """The ONNX model's input/output tensor schema as an MLflow signature (dynamic axes as -1)."""
    import onnx
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    graph = onnx.load(str(path), load_external_data=False).graph

    def spec(value) -> TensorSpec:
        tensor = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        return TensorSpec(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type), shape, value.name)

    return ModelSignature(
        inputs=Schema([spec(v) for v in graph.input]), outputs=Schema([spec(v) for v in graph.output])
    )


def write_mlmodel(bundle_dir: Path, run_id: str) -> Path:
    """An ``MLmodel`` file in the bundle: the ONNX (INT8) flavor with its input/output signature, so the
    registered version shows its schema in the MLflow UI."""
    import onnx
    from mlflow.models import Model

    from antmeter.learn.bundle import ONNX_INT8

    model = Model(artifact_path="model", run_id=run_id, signature=onnx_signature(bundle_dir / ONNX_INT8))
    model.add_flavor("onnx", onnx_version=onnx.__version__, data=ONNX_INT8)
    path = Path(bundle_dir) / "MLmodel"
    model.save(str(path))
    return path


def describe_version(
    client, name: str, version: str, result: CandidateResult, dataset: dict[str, Any]
) -> None:
    """The version's description: what it is and what it was trained on (the gate adds its result)."""
    serving = json.loads((Path(result.bundle_dir) / "serving.json").read_text())
    days = serving.get("training_days") or []
    lines = [
        f"{serving.get('model_type')} ({result.mode} training), {serving.get('task')} direction classifier "
        f"+ return regression for horizons {serving.get('horizons')} min; ONNX fp32 + INT8 with scalers.",
        f"Trained on {dataset.get('samples', '?')} samples of {', '.join(serving.get('symbols', []))}"
        + (f", days {days[0]} .. {days[-1]}" if days else "")
        + f", until {result.trained_until} (dataset {dataset.get('fingerprint', '?')}).",
    ]
    client.update_model_version(name, version, description="\n\n".join(lines)[:5000])


def gate_description(client, name: str, version: str, gate: str) -> None:
    """Append the gate's result to the version's description."""
    current = client.get_model_version(name, version).description or ""
    kept = current.split("\n\nGate: ")[0]
    client.update_model_version(name, version, description=f"{kept}\n\nGate: {gate}"[:5000])


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
