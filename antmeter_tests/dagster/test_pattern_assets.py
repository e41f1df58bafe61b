"""End to end: planted simulator patterns -> TA-Lib spans and the shipped annotation file -> the pattern
dataset -> RandomForest and HistGradientBoosting classifiers scored on a later held-out day, logged
and registered in a real MLflow store behind the macro-F1 gate; the served ONNX bundle predicts spans."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest

from antmeter.learn.patterns import PatternBundle, predict_spans_from_candles
from antmeter.learn.spans import DISAGREEMENT_KINDS, disagreements
from antmeter.market.annotations import read_annotations
from antmeter.registry import versions
from antmeter_assets import features, market, patterns
from antmeter_assets.patterns import EXAMPLE_ANNOTATIONS_DIR, example_annotation_coverage
from antmeter_resources import CandleSourceResource
from antmeter_tests.dagster.conftest import make_pipeline, step_error, symbol_day

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
UNPARTITIONED = [a for a in patterns.pattern_assets if a.key.path[0] != "candlestick_patterns"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The pattern graph over the shipped example's days, materialized once for this module."""
    tmp = tmp_path_factory.mktemp("patterns")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("symbols", SYMBOLS)
    pipeline = make_pipeline(instance, tmp / "data", f"sqlite:///{tmp / 'market.sqlite'}")
    pipeline.use_candles(CandleSourceResource(kind="simulator", plant_patterns=True))
    days, _ = example_annotation_coverage()
    for day in days:
        for symbol in SYMBOLS:
            key = symbol_day(day, symbol)
            assert pipeline.materialize([market.ohlcv], key).success
            assert pipeline.materialize(
                [features.features, features.labels, patterns.candlestick_patterns], key
            ).success
    first = pipeline.materialize(UNPARTITIONED)
    assert first.success, step_error(first)
    yield pipeline, first, days
    instance.dispose()


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.path[0] == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_candlestick_partition_counts_patterns(trained):
    pipeline, _, days = trained
    result = pipeline.materialize([patterns.candlestick_patterns], symbol_day(days[1], "BTCUSDT"))
    meta = metadata(result, "candlestick_patterns")
    assert meta["rows"] == sum(meta["counts"].values()) > 100
    assert set(meta["counts"]) >= {"bullish_engulfing", "bearish_engulfing", "bullish_hammer"}


def test_annotations_are_stored_idempotently(trained):
    pipeline, first, _ = trained
    shipped = json.loads((EXAMPLE_ANNOTATIONS_DIR / "planted_patterns.json").read_text())["annotations"]
    for result in (first, pipeline.materialize([patterns.annotations])):
        meta = metadata(result, "annotations")
        assert meta["records_read"] == meta["rows"] == len(shipped)
    assert len(read_annotations(pipeline.market())) == len(shipped)


def test_bad_annotation_file_names_the_record_and_writes_nothing(trained, tmp_path):
    pipeline, _, _ = trained
    bad = json.loads((EXAMPLE_ANNOTATIONS_DIR / "planted_patterns.json").read_text())
    bad["annotations"][0]["start_time"] = "2024-01-01T00:00:00Z"
    bad["annotations"][2]["symbol"] = "NOPEUSDT"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    before = read_annotations(pipeline.market())
    result = dg.materialize(
        [patterns.annotations],
        instance=pipeline.instance,
        resources=pipeline.resources,
        run_config={"ops": {"annotations": {"config": {"directory": str(tmp_path)}}}},
        raise_on_error=False,
    )
    assert not result.success
    assert "annotations[2].symbol: unknown symbol 'NOPEUSDT'" in step_error(result)
    pd.testing.assert_frame_equal(read_annotations(pipeline.market()), before)


def test_dataset_statistics(trained):
    _, first, _ = trained
    meta = metadata(first, "pattern_dataset")
    assert meta["samples"] > 5000
    assert {"double_top", "double_bottom", "head_and_shoulders", "inverse_head_and_shoulders"} <= set(
        meta["spans_per_label"]
    )
    assert meta["class_distribution"]["O"] < 0.9 and sum(
        meta["class_distribution"].values()
    ) == pytest.approx(1)
    assert (
        20 <= meta["mean_span_length"]["double_top"] <= 40
        and meta["mean_span_length"]["bullish_engulfing"] == 2
    )
    assert 0 <= meta["agreement_rate"] <= 1


@pytest.mark.parametrize("kind", ["rf", "hgb"])
def test_classifier_logged_registered_and_gated(trained, kind):
    pipeline, first, days = trained
    meta = metadata(first, f"pattern_{kind}_classifier")
    client = pipeline.resources["mlflow"].client()
    run = client.get_run(meta["mlflow_run_id"])
    logged = run.data.metrics
    for key in (
        "holdout.accuracy",
        "holdout.f1_macro",
        "holdout.f1_weighted",
        "holdout.span_f1",
        "holdout.precision.double_top",
        "holdout.recall.double_top",
        "holdout.f1.double_top",
        "baseline.majority.f1_macro",
        "baseline.talib_rule.span_f1",
        "fold0.f1_macro",
        "onnx_label_agreement",
    ):
        assert key in logged, key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "confusion_matrix.json",
        "classification_report.txt",
        "feature_importance.json",
        "model",
    } <= artifacts
    # the held-out day is later than every training row, and the model beats the majority class there
    assert logged["holdout.f1_macro"] > logged["baseline.majority.f1_macro"]
    name = meta["registered_model"]
    first_version = client.get_model_version(name, meta["model_version"])
    assert first_version.tags["gate"] == meta["gate"]
    champion = versions.champion(client, name)
    assert (champion is not None) == (meta["gate"] == "promoted")
    assert "block-bootstrap p" in meta["gate_reason"]
    # the registered bundle is served from ONNX and predicts spans over raw candles
    version = champion or first_version
    bundle = PatternBundle.load(versions.download_version(version))
    candles = pipeline.market().read_candles(
        "BTCUSDT",
        "1m",
        pd.Timestamp(days[-1], tz="UTC"),
        pd.Timestamp(days[-1], tz="UTC") + pd.Timedelta(days=1),
    )
    spans = predict_spans_from_candles(bundle, candles, "BTCUSDT", min_confidence=0.0)
    assert len(spans) > 10 and spans["confidence"].between(0, 1).all()
    human = read_annotations(
        pipeline.market(), symbols=["BTCUSDT"], time_range=(candles.open_time.iloc[0], None)
    )
    found = disagreements(human, spans[spans["candles"] >= 10])
    assert set(found["kind"]) <= set(DISAGREEMENT_KINDS)
