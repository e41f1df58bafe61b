"""The Celery deployment: Dagster runs as Celery tasks in long-lived workers, routed by queue.

* ``AntmeterCeleryRunLauncher`` (named in ``deploy/celery/dagster.yaml``) is dagster-celery's
  ``CeleryRunLauncher`` plus three things: it stamps each run with the code server's code version
  (``antmeter/code_version``, read from the code location's ``Definitions`` metadata) before the
  task is sent; the queues are declared explicitly (a topic exchange, ``edge.#`` / ``trainer.#``) so a
  run tagged with an unknown queue fails at launch instead of vanishing; and its worker health check
  asks the worker that claimed the run (``antmeter/celery_worker``) whether it still runs the task, so
  run monitoring marks a dead worker's run failed within one poll interval instead of
  ``max_runtime_seconds``.
* **Broker restarts.** Before sending a run's task the launcher waits up to ``broker_wait_seconds``
  (launcher config, default 120) for the broker, so a run dequeued while RabbitMQ restarts is launched
  once it is back instead of failing; queues and messages are durable, workers reconnect by
  themselves. While the broker cannot be reached the health check answers *unknown*, never *failed*:
  a cut-off monitor says nothing about the worker, whose run goes on.
* ``app`` is the worker side: ``celery -A antmeter_deploy.celery_app worker -Q edge --pool threads``
  (see :func:`worker_argv`). Its ``execute_job`` task refuses a run whose code version differs from
  the worker's own (clear error in the run's log, run failed), records the worker's identity on the
  run, and drops redelivered messages of runs that already started (``task_acks_late``: a task of a
  killed worker is redelivered; its run has been failed by monitoring and retried under a new id).

The launcher alone is used, not also dagster-celery's step executor: a run task that waits for step
tasks fails ("Never call result.get() within a task", dagster #32915 / #29660), and the in-process
executor inside an already-warm worker is what removes the per-run process start and re-imports.

Pool: ``threads`` with ``--concurrency 1``; scale out with more worker processes, not threads:
Dagster reconfigures Python logging (``dictConfig`` of the instance's ``python_logs``) at each run's
start, which deadlocks against another run's thread emitting a log record in the same process (seen
here: two concurrent runs in one worker hung on logging's module lock and a handler lock). Prefork forks a child after the parent imported torch (OpenMP/thread pools do not
survive a fork: hangs), and its children re-import per restart; ``solo`` blocks the worker's main
loop during a task, so the broker's remote-control messages go unanswered and the health check above
could not tell a busy worker from a dead one. Threads keep imports and loaded models warm across runs
and answer ``inspect`` while a run executes; torch's intra-op threads are set per process.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from celery import Celery
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
from dagster._cli.api import _execute_run_command_body
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import unpack_value
from dagster_celery.config import TASK_EXECUTE_JOB_NAME, TASK_RESUME_JOB_NAME
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.make_app import make_app
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG, DAGSTER_CELERY_TASK_ID_TAG
from kombu import Exchange, Queue
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from antmeter_assets.code_version import CODE_VERSION_ENV, code_version, source_hash

BROKER_ENV = "ANTMETER_CELERY_BROKER_URL"
BACKEND_ENV = "ANTMETER_CELERY_BACKEND_URL"
DEFAULT_BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
DEFAULT_BACKEND = "redis://127.0.0.1:6379/0"
QUEUES = ("edge", "trainer")
EXCHANGE = Exchange("antmeter_runs", type="topic", durable=True)
CODE_VERSION_TAG = "antmeter/code_version"
WORKER_TAG = "antmeter/celery_worker"
WORKER_PID_TAG = "antmeter/celery_worker_pid"
WORKER_DATA_DIR_TAG = "antmeter/celery_worker_data_dir"
CODE_VERSION_METADATA = "antmeter/code_version"
INSPECT_TIMEOUT_S = 3.0
BROKER_WAIT_S = 120.0
# Settings both sides share: a task is acknowledged only when it finished (a killed worker's task
# returns to the queue), one task is reserved at a time, results expire after a day.
APP_CONFIG: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "task_acks_on_failure_or_timeout": True,
    "worker_prefetch_multiplier": 1,
    "task_track_started": True,
    "task_create_missing_queues": False,
    "task_default_queue": "edge",
    "broker_connection_retry_on_startup": True,
    "broker_heartbeat": 10,
    "result_expires": 86400,
    "result_extended": True,
    "worker_hijack_root_logger": False,
}


class CodeVersionMismatch(RuntimeError):
    """The worker's code differs from the code server's: the run is refused."""


def configure(app: Celery) -> Celery:
    """Antmeter's queues and delivery settings on a dagster-celery app (launcher or worker side)."""
    app.conf.update(APP_CONFIG)
    app.conf.task_queues = [
        Queue(name, EXCHANGE, routing_key=f"{name}.#", durable=True, queue_arguments={"x-max-priority": 10})
        for name in QUEUES
    ]
    app.conf.task_routes = {
        name: {"exchange": EXCHANGE.name, "exchange_type": "topic"}
        for name in (TASK_EXECUTE_JOB_NAME, TASK_RESUME_JOB_NAME)
    }
    return app


def _redacted(url: str) -> str:
    """A broker URL without its password (for errors and logs)."""
    return maybe_sanitize_url(url)


def broker_url() -> str:
    return os.environ.get(BROKER_ENV, DEFAULT_BROKER)


def backend_url() -> str:
    return os.environ.get(BACKEND_ENV, DEFAULT_BACKEND)


# --------------------------------------------------------------------------- launcher side
class AntmeterCeleryRunLauncher(CeleryRunLauncher):
    """dagster-celery's run launcher with explicit queues, a code-version stamp and a health check
    that notices a dead worker (see the module docstring)."""

    def __init__(self, default_queue: str, broker_wait_seconds: float = BROKER_WAIT_S, **kwargs: Any) -> None:
        super().__init__(default_queue, **kwargs)
        configure(self.celery)
        self.celery.conf.task_default_queue = default_queue
        self.broker_wait_seconds = float(broker_wait_seconds)

    @classmethod
    def config_type(cls):
        from dagster import Field

        return {
            **super().config_type(),
            "broker_wait_seconds": Field(
                float,
                is_required=False,
                default_value=BROKER_WAIT_S,
                description="How long a launch waits for an unreachable broker (e.g. restarting).",
            ),
        }

    def wait_for_broker(self, timeout_s: float) -> bool:
        """Whether the broker accepts a connection within ``timeout_s`` (retried every 1-5 s)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with self.celery.connection_for_write() as connection:
                    connection.ensure_connection(max_retries=1, timeout=5.0)
                return True
            except (OSError, OperationalError):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                time.sleep(min(2.0, left))

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        queue = run.tags.get(DAGSTER_CELERY_QUEUE_TAG, self.default_queue)
        if queue not in QUEUES:
            raise ValueError(
                f"run {run.run_id} ({run.job_name}): tag {DAGSTER_CELERY_QUEUE_TAG}={queue!r} names no "
                f"queue of this deployment; expected one of {list(QUEUES)}"
            )
        self._instance.add_run_tags(run.run_id, {CODE_VERSION_TAG: code_server_version(context)})
        if not self.wait_for_broker(self.broker_wait_seconds):
            raise ConnectionError(
                f"run {run.run_id} ({run.job_name}): the Celery broker {_redacted(self.celery.conf.broker_url)} "
                f"did not answer within broker_wait_seconds={self.broker_wait_seconds:g}"
            )
        super().launch_run(context)

    @property
    def supports_resume_run(self) -> bool:
        # a lost run is failed and retried by policy (run_retries), never resumed half-way
        return False

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        reported = super().check_run_worker_health(run)
        if reported.status == WorkerStatus.FAILED:
            return reported
        current = self._instance.get_run_by_id(run.run_id)
        if current is not None and current.is_finished:
            return CheckRunHealthResult(WorkerStatus.SUCCESS)
        # the task state alone is not enough: a killed worker's task stays STARTED, and its redelivered
        # copy, dropped by claim_run, ends SUCCESS while the run never finished
        worker = run.tags.get(WORKER_TAG)
        task_id = run.tags.get(DAGSTER_CELERY_TASK_ID_TAG)
        if worker is None or task_id is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "not claimed by a worker yet")
        if not self.wait_for_broker(0):
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "the broker is unreachable (restarting?)")
        try:
            replies = (
                self.celery.control.inspect(destination=[worker], timeout=INSPECT_TIMEOUT_S).active() or {}
            )
        except (OSError, OperationalError):
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "the broker dropped the health check")
        if worker in replies and task_id in {task["id"] for task in replies[worker]}:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        current = self._instance.get_run_by_id(run.run_id)
        if current is not None and current.is_finished:
            return CheckRunHealthResult(WorkerStatus.SUCCESS)
        why = (
            "does not answer (killed, or cut off from the broker)"
            if worker not in replies
            else "answers but no longer runs this task (it was restarted)"
        )
        return CheckRunHealthResult(WorkerStatus.FAILED, f"Celery worker {worker} {why}; task {task_id}.")


def code_server_version(context: LaunchRunContext) -> str:
    """The code version in the ``Definitions`` metadata of the run's code location (its code server)."""
    run = context.dagster_run
    origin = run.remote_job_origin
    if context.workspace is None or origin is None:
        raise CodeVersionMismatch(f"run {run.run_id}: no workspace/origin to read the code server's version")
    location = context.workspace.get_code_location(origin.location_name)
    repository = location.get_repository(origin.repository_origin.repository_name)
    metadata = repository.repository_snap.metadata or {}
    if CODE_VERSION_METADATA not in metadata:
        raise CodeVersionMismatch(
            f"code location {origin.location_name!r} publishes no {CODE_VERSION_METADATA!r} metadata"
        )
    return str(metadata[CODE_VERSION_METADATA].value)


# --------------------------------------------------------------------------- worker side
def check_code_version(run: DagsterRun, worker: str) -> None:
    """Raise :class:`CodeVersionMismatch` unless the run was stamped with this worker's code version."""
    expected, mine = run.tags.get(CODE_VERSION_TAG), code_version()
    if expected is None:
        raise CodeVersionMismatch(
            f"worker {worker} refuses run {run.run_id} ({run.job_name}): it carries no {CODE_VERSION_TAG} "
            "tag (launch it through AntmeterCeleryRunLauncher)"
        )
    if expected != mine:
        raise CodeVersionMismatch(
            f"worker {worker} refuses run {run.run_id} ({run.job_name}): the code server runs code "
            f"version {expected}, this worker {mine}. Deploy the same version on both (or set "
            f"{CODE_VERSION_ENV} to the shipped version on both)."
        )


def claim_run(instance: DagsterInstance, run_id: str, worker: str) -> DagsterRun | None:
    """The run if this worker may execute it (recording its identity on the run), else None.

    None for a run that already left STARTING (a redelivered message: the first delivery's run
    started, and was failed by monitoring if its worker died). A code-version mismatch fails the run.
    """
    run = instance.get_run_by_id(run_id)
    if run is None or run.status not in (DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING):
        return None
    try:
        check_code_version(run, worker)
    except CodeVersionMismatch as error:
        instance.report_run_failed(run, message=str(error))
        return None
    instance.add_run_tags(
        run_id,
        {
            WORKER_TAG: worker,
            WORKER_PID_TAG: str(os.getpid()),
            WORKER_DATA_DIR_TAG: os.environ.get("ANTMETER_DATA_DIR", ""),
        },
    )
    return run


def _ignore(_event: Any) -> None:
    return None


def make_worker_app() -> Celery:
    """The worker's app: broker/backend from the environment, guarded run tasks registered."""
    app = configure(make_app({"broker": broker_url(), "backend": backend_url(), "include": []}))
    source_hash()  # pinned now: the version of the code this process imported, not of later edits

    @app.task(bind=True, name=TASK_EXECUTE_JOB_NAME, track_started=True)
    def execute_job(task, execute_job_args_packed) -> int:
        args = unpack_value(execute_job_args_packed, as_type=ExecuteRunArgs)
        worker = task.request.hostname or socket.gethostname()
        with DagsterInstance.get() as instance:
            if claim_run(instance, args.run_id, worker) is None:
                return 0
            return _execute_run_command_body(
                instance=instance, run_id=args.run_id, write_stream_fn=_ignore, set_exit_code_on_failure=True
            )

    return app


def worker_argv(celery_bin: str, queue: str, name: str) -> list[str]:
    """The command line of one worker serving ``queue``: the threads pool with one thread (see the
    module docstring); more throughput means more such processes."""
    if queue not in QUEUES:
        raise ValueError(f"queue {queue!r}: expected one of {list(QUEUES)}")
    return [
        celery_bin,
        "-A",
        "antmeter_deploy.celery_app",
        "worker",
        "-Q",
        queue,
        "-n",
        f"{name}@%h",
        "--pool",
        "threads",
        "--concurrency",
        "1",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]


app = make_worker_app()
