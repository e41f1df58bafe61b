"""Pattern assets: TA-Lib candlestick spans per symbol × day, human annotations, the pattern dataset,
and one RandomForest / HistGradientBoosting pattern classifier each, registered behind a gate."""

import json
import os
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from antmeter_assets.features import partition_file
from antmeter_assets.partitions import symbol_and_day, symbol_day_partitions, with_previous_day
from antmeter_resources import AntmeterSettings, MarketStoreResource, MlflowResource
from antmeter_resources.resources import REPO_ROOT

EXAMPLE_ANNOTATIONS_DIR = REPO_ROOT / "examples" / "annotations"
PATTERN_KINDS = ("rf", "hgb")
PATTERN_DATASET_DIR = ("datasets", "patterns")


def annotations_dir() -> Path:
    """``ANTMETER_ANNOTATIONS_DIR`` or the shipped example (annotations of the simulator's planted patterns)."""
    return Path(os.environ.get("ANTMETER_ANNOTATIONS_DIR") or EXAMPLE_ANNOTATIONS_DIR)


def example_annotation_coverage() -> tuple[list[str], list[str]]:
    """The UTC days and the symbols the annotation files cover (the main job harvests those days when
    the planter is on, and trains the pattern classifiers only when it harvests every such symbol)."""
    days: set[str] = set()
    symbols: set[str] = set()
    for path in sorted(annotations_dir().glob("*.json")):
        for record in json.loads(path.read_text()).get("annotations", []):
            days.update(str(pd.Timestamp(record[k]).date()) for k in ("start_time", "end_time"))
            symbols.add(str(record.get("symbol")))
    return sorted(days), sorted(symbols)


@dg.asset(
    partitions_def=symbol_day_partitions,
    group_name="features",
    kinds={"pandas", "parquet"},
    deps=[dg.AssetDep("ohlcv", partition_mapping=with_previous_day)],
)
def candlestick_patterns(
    context: dg.AssetExecutionContext, settings: AntmeterSettings, store: MarketStoreResource
) -> dg.MaterializeResult:
    """Programmatic labels: spans of the configured TA-Lib ``CDL*`` patterns ending in this symbol × day,
    labelled ``bullish_<pattern>`` / ``bearish_<pattern>``; counts per label in metadata."""
    from antmeter.features.patterns import WARMUP_MINUTES, PatternConfig, programmatic_spans, span_counts

    symbol, day = symbol_and_day(context)
    config = PatternConfig()
    candles = store.get().read_candles(
        symbol, settings.interval, day.start - pd.Timedelta(minutes=WARMUP_MINUTES), day.end
    )
    spans = programmatic_spans(candles, day.start, day.end, config)
    path = partition_file(settings, "candlestick_patterns", symbol, str(day.start.date()))
    spans.to_parquet(path, index=False)
    return dg.MaterializeResult(
        metadata={
            "rows": len(spans),
            "counts": dg.MetadataValue.json(span_counts(spans, config)),
            "patterns": ", ".join(config.patterns),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


class AnnotationsConfig(dg.Config):
    """Where annotation JSON files are read from (every ``*.json`` directly in the directory)."""

    directory: str = Field(default_factory=lambda: str(annotations_dir()))


@dg.asset(group_name="patterns", kinds={"json", "sql"}, deps=["ohlcv"])
def annotations(
    context: dg.AssetExecutionContext, config: AnnotationsConfig, store: MarketStoreResource
) -> dg.MaterializeResult:
    """Human span annotations: every file validated (errors name the file and record; nothing is
    written then), then upserted idempotently into the market store's ``annotations`` table."""
    from antmeter.market.annotations import read_annotation_file, read_annotations, store_annotations

    market = store.get()
    known = set(market.symbols()) | set(context.instance.get_dynamic_partitions("symbols"))
    files = sorted(Path(config.directory).glob("*.json"))
    frames = [read_annotation_file(path, known) for path in files]  # validate all before writing any
    written = sum(store_annotations(market, frame) for frame in frames)
    stored = read_annotations(market)
    return dg.MaterializeResult(
        metadata={
            "files": len(files),
            "records_read": sum(len(f) for f in frames),
            "rows": len(stored),
            "rows_written": written,
            "by_source": dg.MetadataValue.json(
                {k: int(v) for k, v in stored.groupby("source").size().items()}
            ),
            "by_label": dg.MetadataValue.json({k: int(v) for k, v in stored.groupby("label").size().items()}),
            "directory": dg.MetadataValue.path(config.directory),
        }
    )


@dg.asset(group_name="patterns", kinds={"numpy"}, deps=["annotations", "candlestick_patterns", "features"])
def pattern_dataset(
    context: dg.AssetExecutionContext, settings: AntmeterSettings, store: MarketStoreResource
) -> dg.MaterializeResult:
    """Per-candle pattern samples over the days the stored annotations cover (confidence >= the spec's
    minimum): centred feature windows, targets from human annotations merged with TA-Lib spans
    (``human_priority``); dataset statistics in metadata."""
    from antmeter.learn.patterns import PatternModelSpec, build_pattern_samples, save_pattern_samples
    from antmeter.market.annotations import read_annotations

    spec = PatternModelSpec()
    human = read_annotations(store.get(), min_confidence=spec.min_confidence)
    if human.empty:
        raise ValueError("no stored annotations with enough confidence: materialize `annotations` first")
    symbols = sorted(set(human["symbol"]))
    days = sorted({str(d.date()) for d in pd.concat([human["start_time"], human["end_time"]]).dt.floor("D")})
    present = [
        d
        for d in days
        if all(
            partition_file(settings, kind, s, d).exists()
            for s in symbols
            for kind in ("features", "candlestick_patterns")
        )
    ]
    if not present:
        raise ValueError(f"no features/candlestick_patterns partitions for the annotated days {days}")
    features = {
        s: pd.concat(
            [pd.read_parquet(partition_file(settings, "features", s, d)) for d in present], ignore_index=True
        )
        for s in symbols
    }
    programmatic = pd.concat(
        [
            pd.read_parquet(partition_file(settings, "candlestick_patterns", s, d)).assign(symbol=s)
            for s in symbols
            for d in present
        ],
        ignore_index=True,
    )
    samples = build_pattern_samples(features, human, programmatic, spec)
    fingerprint = save_pattern_samples(samples, settings.path(*PATTERN_DATASET_DIR, "x").parent)
    stats = samples.statistics
    return dg.MaterializeResult(
        metadata={
            "samples": len(samples),
            "excluded": samples.excluded,
            "days": f"{present[0]} .. {present[-1]}",
            "symbols": ", ".join(symbols),
            "human_annotations": len(human),
            "annotations_by_source": dg.MetadataValue.json(
                {k: int(v) for k, v in human.groupby("source").size().items()}
            ),
            "spans_per_label": dg.MetadataValue.json(stats["spans_per_label"]),
            "class_distribution": dg.MetadataValue.json(stats["class_distribution"]),
            "mean_span_length": dg.MetadataValue.json(stats["mean_span_length"]),
            "agreement_rate": stats["agreement_rate"],
            "fingerprint": fingerprint,
        },
        data_version=dg.DataVersion(fingerprint),
    )


def _pattern_classifier(kind: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"pattern_{kind}_classifier",
        group_name="patterns",
        kinds={"sklearn", "onnx", "mlflow"},
        deps=["pattern_dataset"],
        pool="training",
    )
    def classifier(
        context: dg.AssetExecutionContext, settings: AntmeterSettings, mlflow: MlflowResource
    ) -> dg.MaterializeResult:
        """Walk-forward trained pattern classifier, scored on a later held-out day next to the majority
        class and the TA-Lib rule, exported to ONNX, registered, and promoted to ``champion`` only when
        its macro-F1 beats the champion (or the baselines) under a paired block bootstrap."""
        from antmeter.learn.patterns import PatternBundle, load_pattern_samples, train_pattern_candidate
        from antmeter.registry import versions
        from antmeter.registry.patterns import decide_pattern_promotion, log_pattern_candidate

        samples, fingerprint = load_pattern_samples(settings.path(*PATTERN_DATASET_DIR, "x").parent)
        candidate = train_pattern_candidate(samples, kind)
        client = mlflow.client()
        name = mlflow.registered_name(f"pattern-{kind}")
        champion = versions.champion(client, name)
        run_id, version, _, parity = log_pattern_candidate(
            client, name, candidate, samples, {"fingerprint": fingerprint}
        )
        y = samples.y[candidate.holdout]
        references = {
            "majority": np.full(
                len(y), pd.Series(np.delete(samples.y, candidate.holdout)).mode().iloc[0], dtype=object
            ),
            "talib_rule": samples.rule[candidate.holdout],
        }
        if champion is not None:
            served = PatternBundle.load(versions.download_version(champion))
            if served.config["input_columns"] == samples.columns:
                references = {
                    f"champion v{champion.version}": served.predict(samples.x[candidate.holdout])[0]
                }
            else:
                context.log.warning("champion's inputs differ from this dataset's: gating against baselines")
        labels = sorted(set(candidate.classes) | set(y))
        decision = decide_pattern_promotion(y, candidate.holdout_pred, references, labels)
        versions.record_gate(client, name, version, decision.promote, decision.reason)
        context.log.info(decision.reason)
        m = candidate.metrics
        return dg.MaterializeResult(
            metadata={
                "model_version": version,
                "registered_model": name,
                "mlflow_run_id": run_id,
                "gate": "promoted" if decision.promote else "rejected",
                "gate_reason": decision.reason,
                "holdout_samples": len(candidate.holdout),
                "f1_macro": m["f1_macro"],
                "f1_weighted": m["f1_weighted"],
                "accuracy": m["accuracy"],
                "span_f1": m["span_f1"],
                "baselines": dg.MetadataValue.json(
                    {
                        b: {k: s[k] for k in ("accuracy", "f1_macro", "f1_weighted", "span_f1")}
                        for b, s in candidate.baselines.items()
                    }
                ),
                "folds": dg.MetadataValue.json(candidate.folds),
                "onnx_parity": dg.MetadataValue.json(parity),
            }
        )

    return classifier


pattern_classifiers = [_pattern_classifier(kind) for kind in PATTERN_KINDS]
pattern_assets = [candlestick_patterns, annotations, pattern_dataset, *pattern_classifiers]
