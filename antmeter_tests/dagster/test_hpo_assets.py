"""The HPO asset in the training graph on a real PostgreSQL store (the study's storage), a real MLflow
store and simulated days: a budgeted study, every trial a nested MLflow run, the pictures in the
metadata, the best parameters feeding the next candidate, and a rerun that keeps the stored trials."""

from __future__ import annotations

import base64
import json
import re

import mlflow
import optuna
import pandas as pd

from antmeter_assets import hpo, jobs, models
from antmeter_assets.definitions import defs
from antmeter_tests.dagster.conftest import make_pipeline
from antmeter_tests.dagster.test_training_assets import prepare

DAYS = [str(d.date()) for d in pd.date_range("2024-01-02", periods=4, freq="D")]
LSTM = [
    a
    for a in [*models.model_assets, *hpo.hpo_assets]
    if a.key.path[0] in ("training_dataset", "lstm_hpo", "lstm_candidate")
]


def metadata(result, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in event.metadata.items()}


def test_hpo_runs_in_the_training_job_on_the_trainer_queue():
    job = defs.resolve_job_def("training_job")
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert {f"{t}_hpo" for t in models.MODEL_TYPES} <= keys
    node = job.graph.node_named("lstm_hpo")
    assert node.tags["dagster-celery/queue"] == "trainer"
    incremental = defs.resolve_job_def(jobs.incremental_retrain_job.name)
    assert not any(k.path[0].endswith("_hpo") for k in incremental.asset_layer.executable_asset_keys)


def test_study_in_postgres_feeds_the_candidate_and_resumes(instance, tmp_path, pg_url):
    pipeline = make_pipeline(
        instance, tmp_path / "data", pg_url, preset="ci", serving_days=0, hpo_trials=2, hpo_minutes=10.0
    )
    prepare(pipeline, DAYS, ["BTCUSDT"])
    result = pipeline.materialize(LSTM)
    assert result.success, result.get_step_failure_events()
    meta = metadata(result, "lstm_hpo")
    assert meta["trials_run_now"] == 2
    assert sum(meta["trials"].get(s, 0) for s in ("complete", "pruned")) == 2
    assert "postgresql" in meta["storage"]
    pictures = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", meta["pictures"])
    assert len(pictures) == 2
    assert all(len(base64.b64decode(p)) <= 100_000 for p in pictures)

    study = optuna.load_study(study_name=meta["study"], storage=pg_url)
    assert study.best_params == meta["best_params"] and study.best_value == meta["best_value"]
    tuned = json.loads((pipeline.data_dir / "models" / "lstm" / "tuned.json").read_text())
    assert tuned["params"] == study.best_params

    uri = pipeline.resources["mlflow"].tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    parent = client.get_run(meta["mlflow_run_id"])
    assert parent.data.tags["antmeter/kind"] == "hpo"
    assert {"hpo/optimization_history.png", "hpo/parameter_importance.png"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id, "hpo")
    }
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 2 and all(c.data.params for c in children)

    link = metadata(result, "lstm_candidate")["mlflow_run_id"]  # "[<run id>](<MLflow UI URL>)"
    candidate = client.get_run(link[1 : link.index("]")])
    assert json.loads(candidate.data.params["tuned"]) == study.best_params  # config, not code

    again = pipeline.materialize([a for a in LSTM if a.key.path[0] == "lstm_hpo"])
    assert again.success
    rerun = metadata(again, "lstm_hpo")
    assert rerun["trials_run_now"] == 0 and rerun["best_value"] == meta["best_value"]
