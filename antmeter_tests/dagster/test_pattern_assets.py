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


# ----------------------------------------------------------------------------- served through the API
TOKEN = "pattern-operator-token"


@pytest.fixture(scope="module")
def pattern_api(trained, tmp_path_factory):
    """The API app over the trained pipeline's store and MLflow registry (operator token set). When the
    gate declined both classifiers' first version, an operator moves the alias to the rf candidate, as
    one may in the MLflow UI: these tests are about serving, not about the gate (tested above)."""
    from starlette.testclient import TestClient

    from antmeter.live.service import ServiceSettings
    from antmeter.market.simulator import SimulatorConfig
    from antmeter_api.app import build_service, create_app
    from antmeter_api.settings import ApiSettings

    pipeline, first, _ = trained
    mlflow = pipeline.resources["mlflow"]
    client = mlflow.client()
    names = [mlflow.registered_name(f"pattern-{kind}") for kind in ("rf", "hgb")]
    if all(versions.champion(client, name) is None for name in names):
        client.set_registered_model_alias(
            names[0], versions.CHAMPION, metadata(first, "pattern_rf_classifier")["model_version"]
        )
    settings = ApiSettings(
        store_url=pipeline.store_url,
        tracking_uri=mlflow.tracking_uri,
        cache_dir=tmp_path_factory.mktemp("api") / "champions",
        dagster_url="http://127.0.0.1:9",
        operator_token=TOKEN,
        service=ServiceSettings(model_types=("lstm",), simulator=SimulatorConfig(plant_patterns=True)),
    )
    with TestClient(create_app(settings, build_service(settings)), raise_server_exceptions=False) as api:
        yield api


def test_api_serves_the_champion_pattern_classifier_and_its_labels(trained, pattern_api):
    pipeline, _, days = trained
    labels = pattern_api.get("/patterns/labels").json()
    info = labels["model_info"]
    assert info["uri"] == f"models:/{info['name']}@champion" and info["kind"] in ("rf", "hgb")
    names = {label["name"] for label in labels["labels"]}
    assert names == set(info["classes"]) - {"O"} and {"double_top", "head_and_shoulders"} <= names
    assert all(label["colour"].startswith("#") for label in labels["labels"])
    assert pattern_api.get("/patterns/labels?kind=xgb").status_code == 422

    # the stored candles of the last annotated day: the same spans as the bundle over those candles
    day = pd.Timestamp(days[-1], tz="UTC")
    body = {"symbol": "BTCUSDT", "start": day.isoformat(), "end": (day + pd.Timedelta(hours=12)).isoformat()}
    answer = pattern_api.post("/patterns/predict", json=body)
    assert answer.status_code == 200, answer.text
    spans = pd.DataFrame(answer.json()["spans"])
    assert len(spans) > 3 and spans["confidence"].between(0, 1).all()
    assert (pd.to_datetime(spans["start_time"]) >= day - pd.Timedelta(hours=1)).all()
    assert (pd.to_datetime(spans["start_time"]) < day + pd.Timedelta(hours=12)).all()
    found = answer.json()["disagreements"]
    assert found and {d["kind"] for d in found} <= set(DISAGREEMENT_KINDS)
    confident = pattern_api.post("/patterns/predict", json={**body, "min_confidence": 0.9}).json()["spans"]
    assert all(s["confidence"] >= 0.9 for s in confident) and len(confident) <= len(spans)

    # raw candles in the request: checked by the candle contract (a bad row is named, nothing crashes)
    candles = pipeline.market().read_candles("BTCUSDT", "1m", day, day + pd.Timedelta(hours=6))
    rows = [
        {**r, "open_time": r["open_time"].isoformat()}
        for r in candles[["open_time", "open", "high", "low", "close", "volume"]].to_dict("records")
    ]
    raw = pattern_api.post("/patterns/predict", json={"symbol": "BTCUSDT", "candles": rows})
    assert raw.status_code == 200 and raw.json()["spans"]
    rows[7]["high"] = rows[7]["low"] / 2
    bad = pattern_api.post("/patterns/predict", json={"symbol": "BTCUSDT", "candles": rows})
    assert bad.status_code == 422 and bad.json()["field"] == "high" and "row 7" in bad.json()["detail"]
    unknown = pattern_api.post("/patterns/predict", json={"symbol": "DOGEUSDT"})
    assert unknown.status_code == 404 and unknown.json()["field"] == "symbol"


def test_feedback_is_stored_exported_and_counted_by_the_next_dataset(trained, pattern_api):
    pipeline, _, days = trained
    day = pd.Timestamp(days[-1], tz="UTC")
    body = {"symbol": "ETHUSDT", "start": day.isoformat(), "end": (day + pd.Timedelta(hours=12)).isoformat()}
    spans = pattern_api.post("/patterns/predict", json=body).json()["spans"]
    accept, dismiss = spans[0], spans[1]
    verdict = {"symbol": "ETHUSDT", "confidence": 0.9}
    before = pattern_api.get("/annotations/export").json()["annotations"]

    # writes need the operator token
    refused = pattern_api.post(
        "/patterns/feedback",
        json={
            **verdict,
            "start_time": accept["start_time"],
            "end_time": accept["end_time"],
            "label": accept["label"],
            "accepted": True,
        },
    )
    assert refused.status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for span, accepted in ((accept, True), (dismiss, False)):
        stored = pattern_api.post(
            "/patterns/feedback",
            headers=auth,
            json={
                **verdict,
                "start_time": span["start_time"],
                "end_time": span["end_time"],
                "label": span["label"],
                "accepted": accepted,
            },
        )
        assert stored.status_code == 200, stored.text
    backwards = pattern_api.post(
        "/patterns/feedback",
        headers=auth,
        json={
            **verdict,
            "start_time": (pd.Timestamp(accept["end_time"]) + pd.Timedelta(minutes=5)).isoformat(),
            "end_time": accept["start_time"],
            "label": accept["label"],
            "accepted": True,
        },
    )
    assert backwards.status_code == 422 and "feedback" in backwards.json()["detail"]

    # both verdicts are in the export, in the pipeline's own annotation format ...
    export = pattern_api.get("/annotations/export?symbol=ETHUSDT").json()
    assert export["format"] == "antmeter-annotations" and export["version"] == 1
    new = [a for a in export["annotations"] if a["source"] != "model" and a not in before]
    by_start = {a["start_time"]: a for a in new}
    accepted_record = by_start[pd.Timestamp(accept["start_time"]).strftime("%Y-%m-%dT%H:%M:%SZ")]
    dismissed_record = by_start[pd.Timestamp(dismiss["start_time"]).strftime("%Y-%m-%dT%H:%M:%SZ")]
    assert accepted_record["label"] == accept["label"] and accepted_record["source"] == "human"
    assert dismissed_record["label"] == "O" and dismissed_record["source"] == "human_correction"
    assert dismissed_record["model_prediction"] == dismiss["label"]
    from antmeter.market.annotations import parse_annotations

    assert len(parse_annotations(export, ["BTCUSDT", "ETHUSDT"])) == len(export["annotations"])

    # ... and the next training dataset counts them
    result = pipeline.materialize([patterns.pattern_dataset])
    assert result.success, step_error(result)
    meta = metadata(result, "pattern_dataset")
    shipped = metadata(trained[1], "pattern_dataset")
    assert meta["human_annotations"] == shipped["human_annotations"] + 2
    assert meta["annotations_by_source"].get("human_correction", 0) == (
        shipped["annotations_by_source"].get("human_correction", 0) + 1
    )
