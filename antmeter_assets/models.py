"""Training assets: the dataset, one candidate and one champion (promotion gate) per model type."""

import json
import os
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from antmeter_assets.partitions import utc_now
from antmeter_resources import (
    AntmeterSettings,
    CandleSourceResource,
    MarketStoreResource,
    MlflowResource,
    enabled_model_types,
)

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
    use_tuned: bool = True  # train with the HPO study's best parameters (tuned.json) when present

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


def ddp_settings() -> dict[str, Any]:
    """``ANTMETER_DDP`` (e.g. ``{"processes": 2}``): full training as a Lightning DDP process group of its
    own (torchrun, never inside the run's process); empty for one process."""
    from dataclasses import asdict

    from antmeter.learn.distributed import DistributedConfig

    config = DistributedConfig.from_env()
    return asdict(config) if config.world_size > 1 else {}


def training_days(settings: AntmeterSettings, available: list[str]) -> list[str]:
    """The newest ``training_days`` complete days, leaving the newest ``serving_days`` (and today) out."""
    today = str(utc_now().date())
    complete = sorted(d for d in available if d < today)
    usable = complete[: max(len(complete) - settings.serving_days, 0)]
    return usable[-settings.training_days :]


def training_window(settings: AntmeterSettings, market, symbols: list[str]) -> dict[str, Any]:
    """What a training run would read now: its days, symbols and feature settings (``days.json``)."""
    return {
        "days": training_days(settings, _materialized_days(market, symbols)),
        "symbols": symbols,
        "feature_config": settings.features.model_dump(mode="json"),
    }


def run_config_key(config: "TrainingRunConfig") -> dict[str, Any]:
    """The part of a training run's config that changes its candidate (for the retrain key)."""
    return {**config.recipe_overrides(), "use_tuned": config.use_tuned}


@dg.asset(
    group_name="models",
    kinds={"numpy"},
    deps=["features", "labels"],
    pool="training",
)
def training_dataset(
    context: dg.AssetExecutionContext, settings: AntmeterSettings, store: MarketStoreResource
) -> dg.MaterializeResult:
    """Windowed samples (``settings.window`` candles each, pooled symbols with a symbol id) from features + labels of
    the training window; rows spanning gaps, missing warm-up or unobserved horizons are excluded.

    Features and labels are read from the market store (``partition_frames``), which every machine
    reaches; the trainer needs no copy of another machine's files."""
    from antmeter.features.pipeline import model_feature_columns
    from antmeter.learn.datasets import DatasetSpec, build_samples, save_samples
    from antmeter.learn.models import load_preset
    from antmeter.learn.recipe import dataset_fingerprint

    symbols = sorted(context.instance.get_dynamic_partitions("symbols"))
    market = store.get()
    window = training_window(settings, market, symbols)
    days = window["days"]
    if not days:
        raise ValueError(
            "no complete days of features/labels before the serving window; run the harvest first"
        )
    feature_config = window["feature_config"]
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
    stride = settings.sample_stride or load_preset(settings.preset, "lstm")["dataset"].get("stride", 1)
    spec = DatasetSpec(
        window=settings.window,
        stride=stride,
        horizons=tuple(settings.horizons),
        task=settings.task,
        interval=settings.interval,
    )
    samples = build_samples(frames, columns, spec)
    directory = save_samples(samples, settings.path(*DATASET_DIR, "x").parent)
    (directory / "days.json").write_text(json.dumps(window))
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
            "feature_config": dg.MetadataValue.json(feature_config),
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


def tuned_path(settings: AntmeterSettings, model_type: str) -> Path:
    """The HPO study's best parameters for the next candidate training of ``model_type``."""
    return settings.path("models", model_type, "tuned.json")


def build_model_assets(model_type: str) -> list[dg.AssetsDefinition]:
    """The candidate (train/fine-tune, export, register) and champion (gate) assets of one type."""

    @dg.asset(
        name=f"{model_type}_candidate",
        group_name="models",
        kinds={"pytorch", "onnx", "mlflow"},
        deps=[training_dataset, f"{model_type}_hpo"],
        pool="training",
        tags={"antmeter/model_type": model_type},
    )
    def candidate(
        context: dg.AssetExecutionContext,
        config: TrainingRunConfig,
        settings: AntmeterSettings,
        mlflow: MlflowResource,
        candles: CandleSourceResource,
    ) -> dg.MaterializeResult:
        """Purged walk-forward training (or an incremental fine-tune of the champion), scored next
        to the baselines (and, on the simulator, the Bayes oracle's ceiling) on the same rows,
        exported to ONNX fp32 + INT8 and registered in MLflow. Metadata: the metric tables per
        horizon, the plots as pictures (files kept under the run's directory) and a link to the
        MLflow run."""
        from antmeter.learn.datasets import load_samples
        from antmeter.learn.oracle import ORACLE
        from antmeter.learn.recipe import RecipeConfig, dataset_fingerprint, train_candidate
        from antmeter.live.policy import retrain_key
        from antmeter.registry import versions
        from antmeter.registry.tracking import log_candidate, run_url, training_run

        if config.mode not in ("full", "incremental"):
            raise ValueError(f"training mode must be 'full' or 'incremental', got {config.mode!r}")
        samples = load_samples(settings.path(*DATASET_DIR, "x").parent)
        client = mlflow.client()
        name = mlflow.registered_name(model_type)
        work = settings.path("runs", model_type, context.run_id, "x").parent
        base = None
        champion = versions.champion(client, name)
        if config.mode == "incremental":
            if champion is None:
                raise ValueError(
                    f"incremental retraining needs a champion of {name}; run the full training first"
                )
            base = versions.download_version(champion, work / "champion")
        tuned_file = tuned_path(settings, model_type)
        tuned = (
            json.loads(tuned_file.read_text())["params"] if config.use_tuned and tuned_file.exists() else {}
        )
        recipe = RecipeConfig(
            model_type=model_type,
            preset=settings.preset,
            primary_horizon=settings.primary_horizon,
            seeds=tuple(settings.seeds),
            holdout_fraction=settings.holdout_fraction,
            tuned=tuned,
            ddp=ddp_settings(),
            **config.recipe_overrides(),
        )
        days = json.loads((settings.path(*DATASET_DIR, "days.json")).read_text())
        dataset = {"fingerprint": dataset_fingerprint(samples), **samples.metadata()}
        tags = {"dagster_run_id": context.run_id, "dataset_fingerprint": dataset["fingerprint"]}
        with training_run(client, name, config.mode, recipe.to_dict(), tags):
            result = train_candidate(
                samples,
                recipe,
                work,
                progress=context.log.info,
                base_bundle=base,
                extra_serving={"training_days": days["days"], "feature_config": days.get("feature_config")},
                ceiling=_oracle_ceiling(samples, candles),
            )
            run_id, version = log_candidate(
                client,
                name,
                result,
                recipe.to_dict(),
                dataset,
                tags=tags,
                dataset_source=str(settings.path(*DATASET_DIR, "x").parent),
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
            # the gate compares with the baselines; the oracle is a ceiling, not a baseline
            "holdout_metrics": result.holdout_metrics[result.holdout_metrics["model"] != ORACLE].to_dict(
                orient="records"
            ),
            "baseline_proba_file": str(work / "holdout_baselines.npz"),
            "seed": result.chosen_seed,
            "retrain_key": retrain_key(
                config.mode,
                data_window=days,
                run_config=run_config_key(config),
                base_version=None if champion is None else champion.version,
            ),
        }
        np.savez(work / "holdout_baselines.npz", **result.holdout_baseline_proba)
        _manifest_path(settings, model_type, "candidate").write_text(json.dumps(manifest, default=str))
        return dg.MaterializeResult(
            metadata={
                "model_version": version,
                "mlflow_run_id": dg.MetadataValue.md(
                    f"[{run_id}]({run_url(client, mlflow.tracking_uri, run_id)})"
                ),
                "mode": result.mode,
                **candidate_presentation(result),
                # (model − majority) / (oracle − majority) accuracy on the holdout: the simulator only
                f"edge_ratio_{settings.primary_horizon}m": dg.MetadataValue.float(edge)
                if (edge := result.edge_ratios(model_type).get(settings.primary_horizon)) is not None
                else dg.MetadataValue.text("n/a (no oracle on this market)"),
                "parity": dg.MetadataValue.json(result.parity),
                "parity_problems": dg.MetadataValue.json(result.parity_problems),
                "dataset_fingerprint": dataset["fingerprint"],
                "trained_until": str(result.trained_until),
                "seconds": round(result.seconds, 1),
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
                description="The champion's INT8 ONNX model loads and gives finite, non-constant "
                "probabilities on the holdout rows; 'no champion: <reason>' is a state, not a failure.",
            )
        ],
    )
    def champion(
        context: dg.AssetExecutionContext, settings: AntmeterSettings, mlflow: MlflowResource
    ) -> dg.MaterializeResult:
        """The promotion gate: the candidate (already exported and parity-checked) becomes champion
        only if it is significantly better than the current champion on the same fresh holdout rows
        and non-inferior to the best fitted baseline (the first champion: significantly better than
        the naive baselines), and passes the sanity checks."""
        return run_gate(context, settings, mlflow, model_type)

    return [candidate, champion]


def _oracle_ceiling(samples, candles: CandleSourceResource):
    """On the simulator: the Bayes oracle's accuracy on any sample rows (None for real markets)."""
    if candles.kind != "simulator" or samples.spec.n_classes != 2:
        return None
    from antmeter.learn.oracle import oracle_metrics

    config = candles.simulator_config()
    return lambda indices: oracle_metrics(samples, indices, config)


def candidate_presentation(result) -> dict[str, dg.MetadataValue]:
    """The candidate's tables (one per horizon, oracle ceiling included) and plots as pictures."""
    from antmeter.learn.plots import image_markdown, metrics_markdown

    return {
        "holdout_vs_baselines": dg.MetadataValue.md(metrics_markdown(result.holdout_metrics)),
        "walk_forward_vs_baselines": dg.MetadataValue.md(
            metrics_markdown(result.fold_metrics) if not result.fold_metrics.empty else "fine-tune"
        ),
        **{
            f"plot_{k}": dg.MetadataValue.md(image_markdown(v, k.replace("_", " ")))
            for k, v in result.plots.items()
        },
        **{f"plot_{k}_file": dg.MetadataValue.path(str(v)) for k, v in result.plots.items()},
    }


def run_gate(
    context, settings: AntmeterSettings, mlflow: MlflowResource, model_type: str
) -> dg.MaterializeResult:
    """Refuse a dataset that is not the candidate's; test the candidate per row (see
    :mod:`antmeter.registry.promotion`) on the holdout rows no earlier gate of this type used (or, when
    too few are fresh, on all of them at a spent level); record the decision everywhere."""
    import numpy as np

    from antmeter.learn.datasets import load_samples
    from antmeter.learn.recipe import dataset_fingerprint
    from antmeter.registry import promotion, tracking, versions

    manifest = json.loads(_manifest_path(settings, model_type, "candidate").read_text())
    samples = load_samples(settings.path(*DATASET_DIR, "x").parent)
    fingerprint = dataset_fingerprint(samples)
    if fingerprint != manifest.get("dataset_fingerprint"):
        raise ValueError(
            f"{model_type} gate: the dataset on disk (fingerprint {fingerprint}) is not the one candidate "
            f"v{manifest['version']} was trained and held out on ({manifest.get('dataset_fingerprint')}); "
            "re-run the candidate on this dataset"
        )
    indices = np.asarray(manifest["holdout_indices"], dtype=np.int64)
    with np.load(manifest["baseline_proba_file"], allow_pickle=False) as stored:
        baseline_proba = {name: stored[name] for name in stored.files}
    gate = settings.gate_config()
    ledger = GateLedger(_manifest_path(settings, model_type, "gate_blocks"))
    times = pd.DatetimeIndex(samples.sample_time[indices], tz="UTC")
    rows, level, reuse = ledger.choose_rows(times, gate, samples.spec.max_horizon_minutes)
    client = mlflow.client()
    name = manifest["registered_name"]
    current = versions.champion(client, name)
    champ_dir = None
    if current is not None and str(current.version) != manifest["version"]:
        champ_dir = versions.download_version(
            current, settings.path("runs", model_type, context.run_id, "champion")
        )
    decision = promotion.gate_candidate(
        manifest["bundle_dir"],
        champ_dir,
        samples,
        indices,
        gate,
        baseline_proba,
        extra_problems=manifest["parity_problems"],
        rows=rows,
        level=level,
    )
    used = times[rows]
    ledger.add(used.min(), used.max(), manifest["version"], decision.promote)
    versions.record_gate(client, name, manifest["version"], decision.promote, decision.summary)
    record = decision.record()
    champion_fingerprint = _bundle_fingerprint(champ_dir)
    gate_info = {
        **{k: v for k, v in record.items() if k != "tests"},
        "dataset_fingerprint": fingerprint,
        "champion_fingerprint": champion_fingerprint,
        "block": f"{used.min()} .. {used.max()}",
        "block_reuse": reuse,
    }
    tracking.gate_description(client, name, manifest["version"], decision.summary)
    client.set_tag(manifest["run_id"], "gate", gate_info["decision"])
    client.set_tag(manifest["run_id"], "gate_reason", decision.summary[:5000])
    client.log_dict(manifest["run_id"], {**gate_info, "tests": record["tests"]}, "gate.json")
    client.log_metric(manifest["run_id"], "gate.rows_used", decision.rows_used)
    if record["p_value"] is not None:
        client.log_metric(manifest["run_id"], "gate.p_value", record["p_value"])
        client.log_metric(manifest["run_id"], "gate.statistic", _finite(record["statistic"]))
    context.log.info(decision.summary)
    serving = versions.champion(client, name)
    state = (
        f"serving v{serving.version}"
        if serving is not None
        else "no champion: " + "; ".join(decision.reasons)
    )
    check = _champion_check(serving, samples, indices, gate, settings, model_type, context.run_id, state)
    return dg.MaterializeResult(
        metadata={
            "gate": gate_info["decision"],
            "gated_at": str(utc_now()),
            "state": state[:2000],
            "reason": dg.MetadataValue.md(decision.summary),
            "candidate_version": manifest["version"],
            "candidate_score": decision.candidate_score,
            "champion_score_before": decision.champion_score
            if decision.champion_score is not None
            else "none",
            "champion_version": str(serving.version) if serving else "none",
            "p_value": record["p_value"] if record["p_value"] is not None else "none",
            "statistic": _finite(record["statistic"]) if record["statistic"] is not None else "none",
            "rows_used": decision.rows_used,
            "n_effective": round(decision.n_effective, 1),
            "level": decision.level,
            "dataset_fingerprint": fingerprint,
            "champion_fingerprint": champion_fingerprint or "none (re-scored on this dataset)",
            "gate_block": gate_info["block"],
            "retrain_key": manifest.get("retrain_key", "none"),
            "gate_tests": dg.MetadataValue.json(record["tests"]),
            "baseline_scores": dg.MetadataValue.json(decision.baseline_scores),
            "mode": manifest["mode"],
        },
        check_results=[check],
    )


def _finite(value: float) -> float:
    """JSON/metadata-safe: infinities become large finite numbers."""
    return float(max(min(value, 1e9), -1e9))


def _bundle_fingerprint(bundle_dir) -> str | None:
    """The dataset fingerprint a champion's bundle was trained on (None for bundles that predate it);
    either way the champion is re-scored on the candidate's rows, never trusted from its own record."""
    if bundle_dir is None:
        return None
    path = Path(bundle_dir) / "serving.json"
    return json.loads(path.read_text()).get("dataset_fingerprint") if path.exists() else None


class GateLedger:
    """The sample-time blocks earlier gates of one model type tested on (a JSON file).

    :meth:`choose_rows` keeps the holdout rows newer than every recorded block (plus the longest
    horizon, so no outcome overlaps); when those give fewer than ``min_effective_samples`` it tests on
    all holdout rows at ``level / 2^k``, ``k`` = the earlier gates whose blocks overlap them (the
    level spent on one block over any number of gates stays below ``2 * level``).
    """

    def __init__(self, path: Path):
        self.path = path
        self.blocks = json.loads(path.read_text()) if path.exists() else []

    def choose_rows(self, times: pd.DatetimeIndex, gate, max_horizon_minutes: float):
        from antmeter.registry.promotion import effective_samples

        if not self.blocks:
            return np.ones(len(times), dtype=bool), gate.level, 0
        newest_used = max(pd.Timestamp(b["end"]) for b in self.blocks)
        fresh = np.asarray(times > newest_used + pd.Timedelta(minutes=max_horizon_minutes))
        if (
            fresh.sum() >= 3
            and effective_samples(times[fresh], gate.horizon_minutes) >= gate.min_effective_samples
        ):
            return fresh, gate.level, 0
        overlapping = sum(
            1
            for b in self.blocks
            if pd.Timestamp(b["end"]) >= times.min() and pd.Timestamp(b["start"]) <= times.max()
        )
        return np.ones(len(times), dtype=bool), gate.level / 2**overlapping, overlapping

    def add(self, start: pd.Timestamp, end: pd.Timestamp, version: str, promoted: bool) -> None:
        self.blocks.append({"start": str(start), "end": str(end), "version": version, "promoted": promoted})
        self.path.write_text(json.dumps(self.blocks))


def _champion_check(
    serving, samples, indices, gate, settings, model_type, run_id, state: str
) -> dg.AssetCheckResult:
    """Fails only for a champion that cannot serve; "no champion" is a recorded state, not a failure."""
    from antmeter.registry import promotion, versions

    if serving is None:
        target = settings.path("models", model_type, "champion")
        if target.exists():
            shutil.rmtree(target)
        return dg.AssetCheckResult(
            check_name="champion_servable",
            passed=True,
            description=state[:2000],
            metadata={"state": "no champion", "version": "none"},
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
        metadata={"state": "serving", "version": str(serving.version)},
    )


model_assets = [training_dataset, *(a for t in MODEL_TYPES for a in build_model_assets(t))]
