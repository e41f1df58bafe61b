"""Training assets: the dataset, one candidate and one champion (promotion gate) per model type."""

import json
import os
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from antmeter_assets.partitions import utc_now
from antmeter_resources import AntmeterSettings, MarketStoreResource, MlflowResource, enabled_model_types

# The model types of this code location (ANTMETER_MODEL_TYPES, default all three).
MODEL_TYPES = tuple(enabled_model_types())
DATASET_DIR = ("datasets", "training")
FINE_TUNE_FIELDS = ("fine_tune_epochs", "fine_tune_lr", "fine_tune_days")


class TrainingRunConfig(dg.Config):
    """``full`` trains from scratch on walk-forward folds; ``incremental`` fine-tunes the champion.

    The fine-tune settings (epochs, constant learning rate, days of the newest pre-holdout data it
    trains on) default to the training recipe's; the incremental job's defaults come from
    ``ANTMETER_FINE_TUNE`` (see :func:`fine_tune_defaults`), and a launched run may set its own.
    """

    mode: str = "full"
    fine_tune_epochs: int | None = Field(default=None, ge=1)
    fine_tune_lr: float | None = Field(default=None, gt=0)
    fine_tune_days: float | None = Field(default=None, gt=0)

    def recipe_overrides(self) -> dict[str, Any]:
        """The fine-tune settings this run sets (the rest keep the recipe's defaults)."""
        return {name: getattr(self, name) for name in FINE_TUNE_FIELDS if getattr(self, name) is not None}


def fine_tune_defaults() -> dict[str, Any]:
    """``ANTMETER_FINE_TUNE``: a JSON object of fine-tune settings for the incremental job's default
    config, e.g. ``{"fine_tune_lr": 0.005, "fine_tune_epochs": 4, "fine_tune_days": 1.5}``."""
    raw = os.environ.get("ANTMETER_FINE_TUNE")
    if not raw:
        return {}
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"ANTMETER_FINE_TUNE is not valid JSON: {exc}") from None
    if not isinstance(values, dict) or set(values) - set(FINE_TUNE_FIELDS):
        raise ValueError(
            f"ANTMETER_FINE_TUNE must be a JSON object with keys among {list(FINE_TUNE_FIELDS)}, got {raw!r}"
        )
    return TrainingRunConfig(mode="incremental", **values).recipe_overrides()


def training_days(settings: AntmeterSettings, available: list[str]) -> list[str]:
    """The newest ``training_days`` complete days, leaving the newest ``serving_days`` (and today) out."""
    today = str(utc_now().date())
    complete = sorted(d for d in available if d < today)
    usable = complete[: max(len(complete) - settings.serving_days, 0)]
    return usable[-settings.training_days :]


@dg.asset(
    group_name="models",
    kinds={"numpy"},
    deps=["features", "labels"],
    pool="training",
)
def training_dataset(
    context: dg.AssetExecutionContext, settings: AntmeterSettings, store: MarketStoreResource
) -> dg.MaterializeResult:
    """Windowed samples (60-minute windows, pooled symbols with a symbol id) from features + labels of
    the training window; rows spanning gaps, missing warm-up or unobserved horizons are excluded.

    Features and labels are read from the market store (``partition_frames``), which every machine
    reaches; the trainer needs no copy of another machine's files."""
    from antmeter.features.pipeline import model_feature_columns
    from antmeter.learn.datasets import DatasetSpec, build_samples, save_samples
    from antmeter.learn.models import load_preset
    from antmeter.learn.recipe import dataset_fingerprint

    symbols = sorted(context.instance.get_dynamic_partitions("symbols"))
    market = store.get()
    days = training_days(settings, _materialized_days(market, symbols))
    if not days:
        raise ValueError(
            "no complete days of features/labels before the serving window; run the harvest first"
        )
    columns = model_feature_columns(settings.feature_config())
    frames = {}
    for symbol in symbols:
        parts = [
            market.read_partition_frame("features", symbol, d).merge(
                market.read_partition_frame("labels", symbol, d), on="open_time"
            )
            for d in days
        ]
        frames[symbol] = pd.concat(parts, ignore_index=True)
    stride = load_preset(settings.preset, "lstm")["dataset"].get("stride", 1)
    spec = DatasetSpec(window=60, stride=stride, horizons=tuple(settings.horizons), task=settings.task)
    samples = build_samples(frames, columns, spec, interval=settings.interval)
    directory = save_samples(samples, settings.path(*DATASET_DIR, "x").parent)
    (directory / "days.json").write_text(json.dumps({"days": days, "symbols": symbols}))
    fingerprint = dataset_fingerprint(samples)
    context.log.info(
        f"{len(samples)} samples from {len(days)} days x {len(symbols)} symbols; excluded {samples.excluded}"
    )
    return dg.MaterializeResult(
        metadata={
            "samples": len(samples),
            "fingerprint": fingerprint,
            "days": f"{days[0]} .. {days[-1]}",
            "symbols": ", ".join(symbols),
            "features": len(columns),
            "excluded": dg.MetadataValue.json(dict(samples.excluded)),
            "spec": dg.MetadataValue.json(spec.__dict__ | {"horizons": list(spec.horizons)}),
        },
        data_version=dg.DataVersion(fingerprint),
    )


def _materialized_days(market, symbols: list[str]) -> list[str]:
    """Days for which every symbol has both a features and a labels frame in the store."""
    days = None
    for symbol in symbols:
        have = set(market.partition_frame_days("features", symbol))
        have &= set(market.partition_frame_days("labels", symbol))
        days = have if days is None else days & have
    return sorted(days or [])


def _manifest_path(settings: AntmeterSettings, model_type: str, kind: str) -> Path:
    return settings.path("models", model_type, f"{kind}.json")


def build_model_assets(model_type: str) -> list[dg.AssetsDefinition]:
    """The candidate (train/fine-tune, export, register) and champion (gate) assets of one type."""

    @dg.asset(
        name=f"{model_type}_candidate",
        group_name="models",
        kinds={"pytorch", "onnx", "mlflow"},
        deps=[training_dataset],
        pool="training",
        tags={"antmeter/model_type": model_type},
    )
    def candidate(
        context: dg.AssetExecutionContext,
        config: TrainingRunConfig,
        settings: AntmeterSettings,
        mlflow: MlflowResource,
    ) -> dg.MaterializeResult:
        """Purged walk-forward training (or an incremental fine-tune of the champion), scored next
        to the baselines on the same rows, exported to ONNX fp32 + INT8 and registered in MLflow."""
        from antmeter.learn.datasets import load_samples
        from antmeter.learn.plots import metrics_markdown
        from antmeter.learn.recipe import RecipeConfig, dataset_fingerprint, train_candidate
        from antmeter.registry import versions
        from antmeter.registry.tracking import log_candidate

        if config.mode not in ("full", "incremental"):
            raise ValueError(f"training mode must be 'full' or 'incremental', got {config.mode!r}")
        samples = load_samples(settings.path(*DATASET_DIR, "x").parent)
        client = mlflow.client()
        name = mlflow.registered_name(model_type)
        work = settings.path("runs", model_type, context.run_id, "x").parent
        base = None
        if config.mode == "incremental":
            champion = versions.champion(client, name)
            if champion is None:
                raise ValueError(
                    f"incremental retraining needs a champion of {name}; run the full training first"
                )
            base = versions.download_version(champion, work / "champion")
        recipe = RecipeConfig(
            model_type=model_type,
            preset=settings.preset,
            primary_horizon=settings.primary_horizon,
            **config.recipe_overrides(),
        )
        days = json.loads((settings.path(*DATASET_DIR, "days.json")).read_text())
        result = train_candidate(
            samples,
            recipe,
            work,
            progress=context.log.info,
            base_bundle=base,
            extra_serving={"training_days": days["days"]},
        )
        dataset = {"fingerprint": dataset_fingerprint(samples), **samples.metadata()}
        run_id, version = log_candidate(
            client, name, result, recipe.to_dict(), dataset, tags={"dagster_run_id": context.run_id}
        )
        manifest = {
            "model_type": model_type,
            "registered_name": name,
            "version": version,
            "run_id": run_id,
            "bundle_dir": str(result.bundle_dir),
            "mode": result.mode,
            "holdout_indices": result.holdout_indices.tolist(),
            "parity_problems": result.parity_problems,
            "trained_until": str(result.trained_until),
            "dataset_fingerprint": dataset["fingerprint"],
            "holdout_metrics": result.holdout_metrics.to_dict(orient="records"),
        }
        _manifest_path(settings, model_type, "candidate").write_text(json.dumps(manifest, default=str))
        return dg.MaterializeResult(
            metadata={
                "model_version": version,
                "mlflow_run_id": run_id,
                "mode": result.mode,
                "holdout_vs_baselines": dg.MetadataValue.md(metrics_markdown(result.holdout_metrics)),
                "walk_forward_vs_baselines": dg.MetadataValue.md(
                    metrics_markdown(result.fold_metrics) if not result.fold_metrics.empty else "fine-tune"
                ),
                "parity": dg.MetadataValue.json(result.parity),
                "parity_problems": dg.MetadataValue.json(result.parity_problems),
                "dataset_fingerprint": dataset["fingerprint"],
                "trained_until": str(result.trained_until),
                "seconds": round(result.seconds, 1),
                **{f"plot_{k}": dg.MetadataValue.path(str(v)) for k, v in result.plots.items()},
            }
        )

    @dg.asset(
        name=f"{model_type}_champion",
        group_name="models",
        kinds={"mlflow", "onnx"},
        deps=[candidate],
        tags={"antmeter/model_type": model_type},
        check_specs=[
            dg.AssetCheckSpec(
                "champion_servable",
                asset=f"{model_type}_champion",
                blocking=True,
                description="The champion's INT8 ONNX model loads and gives finite, "
                "non-constant probabilities on the holdout rows.",
            )
        ],
    )
    def champion(
        context: dg.AssetExecutionContext, settings: AntmeterSettings, mlflow: MlflowResource
    ) -> dg.MaterializeResult:
        """The promotion gate: the candidate (already exported and parity-checked) becomes champion
        only if it beats the current champion on the same holdout rows by the margin (or, for the
        first champion, beats the naive baselines), and passes the sanity checks."""
        return run_gate(context, settings, mlflow, model_type)

    return [candidate, champion]


def run_gate(
    context, settings: AntmeterSettings, mlflow: MlflowResource, model_type: str
) -> dg.MaterializeResult:
    import numpy as np

    from antmeter.learn.datasets import load_samples
    from antmeter.registry import promotion, versions

    manifest = json.loads(_manifest_path(settings, model_type, "candidate").read_text())
    samples = load_samples(settings.path(*DATASET_DIR, "x").parent)
    indices = np.asarray(manifest["holdout_indices"], dtype=np.int64)
    gate = promotion.GateConfig(
        metric=settings.promotion_metric, horizon=settings.primary_horizon, margin=settings.promotion_margin
    )
    client = mlflow.client()
    name = manifest["registered_name"]
    current = versions.champion(client, name)
    champ_dir = None
    if current is not None and str(current.version) != manifest["version"]:
        champ_dir = versions.download_version(
            current, settings.path("runs", model_type, context.run_id, "champion")
        )
    baselines = promotion.holdout_baseline_scores(manifest["holdout_metrics"], gate, model_type)
    decision = promotion.gate_candidate(
        manifest["bundle_dir"],
        champ_dir,
        samples,
        indices,
        gate,
        baselines,
        extra_problems=manifest["parity_problems"],
    )
    versions.record_gate(client, name, manifest["version"], decision.promote, decision.summary)
    client.set_tag(manifest["run_id"], "gate", "promoted" if decision.promote else "rejected")
    client.set_tag(manifest["run_id"], "gate_reason", decision.summary[:5000])
    context.log.info(decision.summary)
    serving = versions.champion(client, name)
    check = _champion_check(serving, samples, indices, gate, settings, model_type, context.run_id)
    return dg.MaterializeResult(
        metadata={
            "gate": "promoted" if decision.promote else "rejected",
            "reason": dg.MetadataValue.md(decision.summary),
            "candidate_version": manifest["version"],
            "candidate_score": decision.candidate_score,
            "champion_score_before": decision.champion_score
            if decision.champion_score is not None
            else "none",
            "champion_version": str(serving.version) if serving else "none",
            "baseline_scores": dg.MetadataValue.json(decision.baseline_scores),
            "mode": manifest["mode"],
        },
        check_results=[check],
    )


def _champion_check(serving, samples, indices, gate, settings, model_type, run_id) -> dg.AssetCheckResult:
    from antmeter.registry import promotion, versions

    if serving is None:
        return dg.AssetCheckResult(
            check_name="champion_servable",
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="no champion yet: nothing is served for this model type",
        )
    bundle = versions.download_version(serving, settings.path("runs", model_type, run_id, "serving"))
    _, proba, reg, names = promotion.score_bundle(bundle, samples, indices, gate)
    problems = promotion.sanity_problems(proba, reg, list(samples.schema.names), names)
    target = settings.path("models", model_type, "champion")
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(bundle, target)
    (target / "registry.json").write_text(json.dumps({"name": serving.name, "version": str(serving.version)}))
    return dg.AssetCheckResult(
        check_name="champion_servable",
        passed=not problems,
        description="; ".join(problems)
        or f"version {serving.version} serves finite, non-constant probabilities",
        metadata={"version": str(serving.version)},
    )


model_assets = [training_dataset, *(a for t in MODEL_TYPES for a in build_model_assets(t))]
