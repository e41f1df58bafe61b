"""The worker-side guards of the Celery deployment on a real (ephemeral) instance: a run is claimed
only in STARTING, only with the worker's own code version (else it is failed with an error naming
both versions), and the claim records the worker's identity; queues route by topic."""

from __future__ import annotations

import dagster as dg
import pytest

from antmeter_assets.code_version import code_version, source_hash
from antmeter_deploy import celery_app
from antmeter_deploy.celery_app import CODE_VERSION_TAG, WORKER_DATA_DIR_TAG, WORKER_TAG


@dg.op
def noop() -> None:
    return None


@dg.job
def tiny_job():
    noop()


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def starting_run(instance: dg.DagsterInstance, version: str | None) -> dg.DagsterRun:
    tags = {CODE_VERSION_TAG: version} if version is not None else {}
    run = instance.create_run_for_job(tiny_job, tags=tags)
    instance.handle_run_event(
        run.run_id,
        dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.RUN_STARTING.value, job_name=run.job_name, message="starting"
        ),
    )
    return instance.get_run_by_id(run.run_id)


def test_code_version_is_a_stable_source_hash(monkeypatch):
    monkeypatch.delenv("ANTMETER_CODE_VERSION", raising=False)
    assert code_version() == source_hash() and len(source_hash()) == 16
    monkeypatch.setenv("ANTMETER_CODE_VERSION", "v1.2.3")
    assert code_version() == "v1.2.3"


def test_claim_records_the_worker(instance, monkeypatch, tmp_path):
    monkeypatch.setenv("ANTMETER_DATA_DIR", str(tmp_path))
    run = starting_run(instance, code_version())
    assert celery_app.claim_run(instance, run.run_id, "worker_edge@box") is not None
    tags = instance.get_run_by_id(run.run_id).tags
    assert tags[WORKER_TAG] == "worker_edge@box" and tags[WORKER_DATA_DIR_TAG] == str(tmp_path)


def test_other_code_version_is_refused_with_a_clear_error(instance):
    run = starting_run(instance, "0123456789abcdef")
    assert celery_app.claim_run(instance, run.run_id, "worker_trainer@pc") is None
    refused = instance.get_run_by_id(run.run_id)
    assert refused.status == dg.DagsterRunStatus.FAILURE
    [failure] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "worker_trainer@pc refuses run" in failure.message
    assert "0123456789abcdef" in failure.message and code_version() in failure.message
    assert WORKER_TAG not in refused.tags


def test_unstamped_run_is_refused(instance):
    run = starting_run(instance, None)
    assert celery_app.claim_run(instance, run.run_id, "worker_edge@box") is None
    [failure] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert f"carries no {CODE_VERSION_TAG} tag" in failure.message


def test_redelivered_task_of_a_started_run_is_dropped(instance):
    run = starting_run(instance, code_version())
    instance.handle_run_event(
        run.run_id,
        dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.RUN_START.value, job_name=run.job_name, message="start"
        ),
    )
    assert celery_app.claim_run(instance, run.run_id, "worker_edge@other") is None
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    assert WORKER_TAG not in instance.get_run_by_id(run.run_id).tags


def test_queues_route_by_topic_and_unknown_queues_fail():
    app = celery_app.make_worker_app()
    queues = {q.name: q for q in app.conf.task_queues}
    assert set(queues) == {"edge", "trainer"}
    assert queues["trainer"].exchange.type == "topic" and queues["trainer"].routing_key == "trainer.#"
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1 and not app.conf.task_create_missing_queues
    with pytest.raises(ValueError, match="queue 'gpu'"):
        celery_app.worker_argv("celery", "gpu", "w")
    assert "threads" in celery_app.worker_argv("celery", "edge", "worker_edge")
