"""The training graph (dataset -> LSTM candidate -> promotion gate) on a real MLflow store, as a
negative control: on a simulated market without a predictable component (a martingale) the candidate
is trained, logged and registered like any other, and the gate must not promote it over the naive
baselines.

One training run (module fixture) backs every test here; it is the slow part of the Dagster suite.
The outcome is deterministic (seeded simulator, seeded training). The gate's statistics (paired
Diebold-Mariano tests, their false-positive rate and power) are tested on synthetic losses in
``antmeter_tests/unit/test_promotion.py``; here the plumbing: the per-row test on the candidate's own
holdout rows, "no champion" recorded as a state (a passing check), the decision, statistic, p-value,
rows and fingerprint in Dagster metadata and MLflow, and the refusal of a dataset that is not the
candidate's.
"""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import pytest

from antmeter.learn.bundle import ONNX_FP32, ONNX_INT8, SERVING_FILE
from antmeter.learn.recipe import RecipeConfig
from antmeter.registry import tracking, versions
from antmeter_assets import features, market, models, serving
from antmeter_resources import AntmeterSettings, CandleSourceResource
from antmeter_tests.dagster.conftest import Pipeline, check_results, make_pipeline, step_error, symbol_day

REPO = Path(__file__).resolve().parents[2]
DAYS = [str(d.date()) for d in pd.date_range("2024-01-02", periods=5, freq="D")]
SYMBOLS = ["BTCUSDT"]
SIMULATOR_SEED = 11
REGISTERED = "antmeter-lstm"
TRAINING = [
    a for a in models.model_assets if a.key.path[0] in ("training_dataset", "lstm_candidate", "lstm_champion")
]
NAIVE = ("majority", "persistence")


def prepare(pipeline: Pipeline, days: list[str], symbols: list[str]) -> None:
    """Candles of every day, then features and labels of all but the last (which only completes labels)."""
    for day in days:
        for symbol in symbols:
            assert pipeline.materialize([market.ohlcv], symbol_day(day, symbol)).success
    for day in days[:-1]:
        for symbol in symbols:
            assert pipeline.materialize([features.features, features.labels], symbol_day(day, symbol)).success


def train(tmp_dir: Path, predictable: bool, seed: int = SIMULATOR_SEED, days=DAYS, symbols=SYMBOLS):
    """Simulated days -> features/labels -> training_dataset, lstm_candidate, lstm_champion in one run."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("symbols", symbols)
    # serving_days=0: train on every day with features and labels (the last harvested day only
    # completes the labels of the day before)
    pipeline = make_pipeline(
        instance,
        tmp_dir / "data",
        f"sqlite:///{tmp_dir / 'market.sqlite'}",
        model_types=["lstm"],
        serving_days=0,
    )
    pipeline.use_candles(CandleSourceResource(kind="simulator", seed=seed, predictable=predictable))
    prepare(pipeline, days, symbols)
    return pipeline, pipeline.materialize(TRAINING)


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory):
    pipeline, result = train(tmp_path_factory.mktemp("noise"), predictable=False)
    assert result.success, result.get_step_failure_events()
    client = mlflow.MlflowClient(
        tracking_uri=pipeline.resources["mlflow"].tracking_uri,
        registry_uri=pipeline.resources["mlflow"].tracking_uri,
    )
    yield pipeline, result, client
    pipeline.instance.dispose()


def metadata(result, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in event.metadata.items()}


def markdown_rows(table: str) -> set[str]:
    return {line.split("|")[1].strip() for line in table.splitlines()[2:]}


def test_dataset_covers_the_training_window(noise_run):
    _, result, _ = noise_run
    meta = metadata(result, "training_dataset")
    # every day with features and labels (the last harvested day only completes labels)
    assert meta["days"] == f"{DAYS[0]} .. {DAYS[-2]}"
    assert meta["symbols"] == ", ".join(SYMBOLS)
    assert meta["samples"] > 500
    assert re.fullmatch(r"[0-9a-f]{16}", meta["fingerprint"])


def test_candidate_is_registered_with_lineage(noise_run):
    _, result, client = noise_run
    candidate = metadata(result, "lstm_candidate")
    version = client.get_model_version(REGISTERED, candidate["model_version"])
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    assert version.tags["git_commit"] == (head or "unknown")
    assert version.tags["config_hash"] == tracking.config_hash(
        RecipeConfig(model_type="lstm", preset="laptop", primary_horizon=5).to_dict()
    )
    assert version.tags["dataset_fingerprint"] == metadata(result, "training_dataset")["fingerprint"]
    assert version.tags["dataset_fingerprint"] == candidate["dataset_fingerprint"]
    run = client.get_run(version.run_id)
    # the run id links to the run's page in the MLflow UI
    assert candidate["mlflow_run_id"] == (
        f"[{run.info.run_id}](http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id})"
    )
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert {f"holdout/{m}/log_loss_5m" for m in ("lstm", *NAIVE, "logistic", "gradient_boosting")} <= set(
        run.data.metrics
    )
    # the registered bundle holds files only (weights, scalers, ONNX), no pickles
    files = {Path(f.path).name for f in client.list_artifacts(version.run_id, "model")}
    assert {ONNX_FP32, ONNX_INT8, SERVING_FILE, "model.safetensors"} <= files
    assert not any(name.endswith((".pkl", ".pickle", ".pt", ".ckpt")) for name in files)


def test_candidate_metadata_compares_with_the_baselines(noise_run):
    _, result, _ = noise_run
    candidate = metadata(result, "lstm_candidate")
    expected = {"lstm", *NAIVE, "logistic", "gradient_boosting"}
    # one table per horizon, each with the model, the baselines and the oracle ceiling of the same rows
    for key in ("holdout_vs_baselines", "walk_forward_vs_baselines"):
        tables = candidate[key].split("\n\n")
        assert tables[0::2] == ["**5 min**", "**10 min**", "**30 min**"], key
        for table in tables[1::2]:
            assert markdown_rows(table) == expected | {"oracle"}, key
            assert table.splitlines()[0].split("|")[2].strip() == "accuracy"
            assert max(len(line) for line in table.splitlines()) < 160  # fits a 1,280 px page
    assert candidate["parity_problems"] == []
    plots = {k for k in candidate if k.startswith("plot_") and not k.endswith("_file")}
    assert plots == {"plot_confusion_matrix", "plot_calibration", "plot_predictions_vs_outcomes"}
    for key in plots:
        image = candidate[key]
        assert image.startswith(f"![{key.removeprefix('plot_').replace('_', ' ')}](data:image/png;base64,")
        png = base64.b64decode(image.split("base64,", 1)[1].rstrip(")"))
        assert png.startswith(b"\x89PNG") and len(png) <= 100_000, key
        # the file is kept, one per materialization (under the run's own directory)
        path = Path(candidate[f"{key}_file"])
        assert path.is_file() and result.run_id in path.parts, key


def test_oracle_ceiling_is_scored_on_the_same_rows(noise_run):
    """On this martingale market the oracle has nothing to know: its accuracy is about a coin's, and
    it sits next to the model in the holdout, walk-forward and MLflow figures."""
    _, result, client = noise_run
    candidate = metadata(result, "lstm_candidate")
    run = client.get_run(client.get_model_version(REGISTERED, candidate["model_version"]).run_id)
    for horizon in (5, 10, 30):
        oracle = run.data.metrics[f"holdout/oracle/accuracy_{horizon}m"]
        assert 0.4 < oracle < 0.6, (horizon, oracle)
        assert f"cv/mean/oracle/accuracy_{horizon}m" in run.data.metrics
        assert f"cv/fold0/oracle/accuracy_{horizon}m" in run.data.metrics
    # the gate compares with baselines, never with the ceiling
    assert "oracle" not in metadata(result, "lstm_champion")["baseline_scores"]
    # the edge ratio (model − majority) / (oracle − majority) of the same holdout rows, where the
    # oracle has an edge to share (on a martingale it may have none)
    accuracy = {m: run.data.metrics[f"holdout/{m}/accuracy_5m"] for m in ("lstm", "majority", "oracle")}
    room = accuracy["oracle"] - accuracy["majority"]
    if room > 0:
        expected = (accuracy["lstm"] - accuracy["majority"]) / room
        assert run.data.metrics["holdout/edge_ratio_5m"] == pytest.approx(expected, abs=1e-9)
        assert candidate["edge_ratio_5m"] == pytest.approx(expected, abs=1e-9)
    else:
        assert "holdout/edge_ratio_5m" not in run.data.metrics
        assert candidate["edge_ratio_5m"].startswith("n/a")


def test_mlflow_run_reads_as_model_training(noise_run):
    _, result, client = noise_run
    candidate = metadata(result, "lstm_candidate")
    version = client.get_model_version(REGISTERED, candidate["model_version"])
    run = client.get_run(version.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # the run was open while the model trained
    assert (run.info.end_time - run.info.start_time) / 1000 >= candidate["seconds"]
    # per-fold accuracy and per-epoch curves with steps
    assert "cv/fold2/lstm/accuracy_5m" in run.data.metrics
    curve = client.get_metric_history(run.info.run_id, "train/fold0/val_loss")
    assert len(curve) >= 2 and [m.step for m in curve] == sorted({m.step for m in curve})
    # the registered version: a description, a signature of the ONNX model, a logged dataset
    assert "lstm (full training)" in version.description
    assert "Gate: REJECTED" in version.description
    mlmodel = mlflow.models.Model.load(f"models:/{REGISTERED}/{version.version}")
    inputs = mlmodel.signature.inputs.to_dict()
    assert inputs[0]["name"] == "x" and inputs[0]["tensor-spec"]["shape"][0] == -1
    assert [o["name"] for o in mlmodel.signature.outputs.to_dict()] == ["proba", "regression"]
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == metadata(result, "training_dataset")["fingerprint"]


def test_gate_rejects_a_candidate_trained_on_a_martingale(noise_run):
    _, result, client = noise_run
    gate = metadata(result, "lstm_champion")
    assert gate["gate"] == "rejected"
    assert gate["champion_version"] == "none" and gate["champion_score_before"] == "none"
    baselines = gate["baseline_scores"]
    # the reason: it is not significantly better than the naive baselines (not a sanity problem) ...
    assert (
        gate["reason"].startswith("REJECTED: log_loss@5m candidate") and "(no champion yet)" in gate["reason"]
    )
    assert "not shown better than" in gate["reason"]
    assert gate["p_value"] >= gate["level"] == 0.05 and gate["rows_used"] > 100
    assert gate["dataset_fingerprint"] == metadata(result, "training_dataset")["fingerprint"]
    assert [t["other"] for t in gate["gate_tests"]][:2] == list(NAIVE)
    assert gate["state"].startswith("no champion: ")
    assert "constant predictor" not in gate["reason"] and "non-finite" not in gate["reason"]
    # ... and in fact it is worse than the best of them: no skill to find in a martingale
    assert gate["candidate_score"] > min(baselines[b] for b in NAIVE)

    version = client.get_model_version(REGISTERED, gate["candidate_version"])
    assert version.tags["gate"] == "rejected"
    assert version.tags["gate_reason"] == gate["reason"]
    run = client.get_run(version.run_id)
    assert run.data.tags["gate"] == "rejected"
    assert run.data.metrics["gate.p_value"] == pytest.approx(gate["p_value"])
    assert run.data.metrics["gate.rows_used"] == gate["rows_used"]
    assert versions.champion(client, REGISTERED) is None

    # "no champion" is a recorded state, not a failed check (failure is for a champion that cannot serve)
    servable = check_results(result)["champion_servable"]
    assert servable.passed and servable.metadata["state"].value == "no champion"
    assert servable.description.startswith("no champion: ")


def test_champion_servable_checks_the_serving_version(noise_run):
    """Lighter stand-in for a promotion (which this data must not produce): with a champion serving
    (the alias set as an earlier gate would have), the gate re-runs and the blocking check loads the
    served INT8 model, finds finite, varying probabilities and installs it for the live assets."""
    pipeline, first, client = noise_run
    version = metadata(first, "lstm_candidate")["model_version"]
    client.set_registered_model_alias(REGISTERED, versions.CHAMPION, version)
    result = pipeline.materialize([a for a in TRAINING if a.key.path[0] == "lstm_champion"])
    assert result.success
    gate = metadata(result, "lstm_champion")
    assert gate["champion_version"] == version
    servable = check_results(result)["champion_servable"]
    assert servable.passed, servable.description
    assert servable.metadata["version"].value == version
    served = pipeline.data_dir / "models" / "lstm" / "champion"
    assert (served / "registry.json").read_text() == f'{{"name": "{REGISTERED}", "version": "{version}"}}'
    assert (served / ONNX_INT8).is_file()


def test_champion_trained_on_other_features_refuses_to_serve(noise_run):
    """A champion whose feature schema differs from what the configured features (here: RSI over 7
    candles instead of 14, set in the launchpad) produce is not served; the error names the columns."""
    from antmeter_assets import serving

    pipeline, first, client = noise_run
    version = metadata(first, "lstm_candidate")["model_version"]
    client.set_registered_model_alias(REGISTERED, versions.CHAMPION, version)
    assert pipeline.materialize([a for a in TRAINING if a.key.path[0] == "lstm_champion"]).success
    result = dg.materialize(
        [serving.predictions],
        instance=pipeline.instance,
        resources=pipeline.resources,
        run_config={"resources": {"settings": {"config": {"features": {"rsi_windows": [7]}}}}},
        raise_on_error=False,
    )
    assert not result.success
    error = step_error(result)
    assert f"champion {REGISTERED} v{version}" in error
    assert "missing ['rsi_14']" in error and "extra ['rsi_7']" in error
    assert pipeline.market().read_frame("predictions").empty


def test_verification_report_reads_on_one_page_with_the_oracle(noise_run, monkeypatch):
    """With the champion served (previous test), predictions and their verification at a pinned clock on
    the last harvested day: the report's tables fit a page, the rolling plot is a picture in its own
    file, and the model's accuracy on the verified rows sits next to the oracle's on the same rows."""
    pipeline, _, _ = noise_run
    monkeypatch.setenv("ANTMETER_NOW", f"{DAYS[-1]}T12:00:00")
    result = pipeline.materialize([serving.predictions, serving.verification_report])
    assert result.success, result.get_step_failure_events()
    report = metadata(result, "verification_report")
    assert report["verified"] > 100
    lines = report["accuracy_vs_oracle"].splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "model_name",
        "model_version",
        "horizon_min",
        "n",
        "model",
        "oracle",
    ]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    assert [int(r[2]) for r in rows] == [5, 10, 30]
    for row in rows:
        assert int(row[3]) > 100 and abs(float(row[5]) - 0.5) < 0.1  # a martingale: the oracle is a coin
    rolling = report["rolling_vs_baselines"].split("\n\n")
    assert rolling[0::2] == ["**5 min**", "**10 min**", "**30 min**"]
    for text in (*rolling[1::2], report["after_fee_pnl"], report["drift"]):
        assert max(len(line) for line in text.splitlines()) < 180
    assert report["plot_rolling_accuracy"].startswith("![rolling accuracy](data:image/png;base64,")
    assert result.run_id in Path(report["plot_rolling_accuracy_file"]).name


def test_the_gate_refuses_a_dataset_that_is_not_the_candidates(noise_run):
    pipeline, first, _ = noise_run
    dataset = [a for a in TRAINING if a.key.path[0] == "training_dataset"]
    gate = [a for a in TRAINING if a.key.path[0] == "lstm_champion"]
    fewer_days = {
        "settings": AntmeterSettings(
            data_dir=str(pipeline.data_dir), model_types=["lstm"], serving_days=0, training_days=2
        )
    }
    assert pipeline.materialize(dataset, **fewer_days).success  # the dataset on disk changes
    result = pipeline.materialize(gate)
    assert not result.success
    assert "is not the one candidate" in step_error(result)
    assert metadata(first, "lstm_candidate")["dataset_fingerprint"] in step_error(result)
