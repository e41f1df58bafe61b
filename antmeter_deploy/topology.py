"""The deployed Dagster topology as real processes on one machine.

The three services of ``docker-compose.yml`` run as subprocesses: the code location
(``dagster api grpc``), the daemon and the webserver, both reading the repository's
``workspace.yaml``, with a ``DAGSTER_HOME`` holding the project's own ``dagster.yaml`` verbatim
(Postgres-backed). ``Topology.start()`` waits until each is healthy; ``stop()`` terminates every
process group it started (SIGTERM, then SIGKILL). Each process logs to its own file;
``Topology.log_tails()`` shows the last lines.

With a :class:`CeleryDeployment` the topology is the scale-out one (``deploy/celery/dagster.yaml``):
the launcher sends runs to RabbitMQ, and Celery workers (one process per queue, each with its own
``ANTMETER_DATA_DIR``; only the broker, PostgreSQL and MLflow URLs are shared, so a worker could be
on another machine) execute them; an MLflow server (``mlflow server --serve-artifacts``) is then
the only model store, reached over HTTP. ``Topology.kill_worker`` / ``start_worker`` exercise faults.

Used by ``bash run.sh deploy`` (persistent databases, fixed ports: ``python -m antmeter_deploy``),
by the integration tests and by ``bench/bench_live_latency.py`` (``running_topology``: fresh
databases created on a PostgreSQL server given by its admin URL and dropped on exit, free ports).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCATION = "antmeter"
REPOSITORY = "__repository__"
STARTUP_TIMEOUT_S = 120.0
CELERY_DAGSTER_YAML = REPO / "deploy" / "celery" / "dagster.yaml"
# Inherited settings that would leak the developer's own instance or store into the topology.
_SCRUBBED_PREFIXES = ("ANTMETER_", "DAGSTER_", "MLFLOW_")


@dataclass(frozen=True)
class CeleryDeployment:
    """The Celery scale-out: broker + result backend URLs and the workers to start (name -> queue)."""

    broker_url: str
    backend_url: str
    workers: Mapping[str, str] = field(
        default_factory=lambda: {"worker_edge": "edge", "worker_trainer": "trainer"}
    )
    concurrency: int = 1
    mlflow_server: bool = True

    @property
    def env(self) -> dict[str, str]:
        return {
            "ANTMETER_CELERY_BROKER_URL": self.broker_url,
            "ANTMETER_CELERY_BACKEND_URL": self.backend_url,
            "ANTMETER_EXECUTOR": "in_process",
        }


@contextlib.contextmanager
def fresh_rabbitmq_vhost(base_url: str, prefix: str = "antmeter_it") -> Iterator[str]:
    """A new vhost on the local RabbitMQ (``rabbitmqctl``), the URL's user granted on it; yields
    ``base_url`` pointed at it (so each topology has its own queues) and deletes it on exit."""
    vhost = f"{prefix}_{uuid.uuid4().hex[:12]}"
    parts = urllib.parse.urlsplit(base_url)
    user = parts.username or "guest"
    for argv in (
        ["rabbitmqctl", "-q", "add_vhost", vhost],
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
    ):
        subprocess.run(argv, check=True, capture_output=True, timeout=120)
    try:
        yield f"{parts.scheme}://{parts.netloc}/{vhost}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=120)


class TopologyError(RuntimeError):
    """A process of the topology did not become healthy, or died."""


def database_url(admin_url: str, database: str) -> str:
    """``admin_url`` (any database on the server) pointed at ``database``, password kept."""
    return sa.make_url(admin_url).set(database=database).render_as_string(hide_password=False)


def ensure_database(admin_url: str, database: str) -> str:
    """Create ``database`` on the server of ``admin_url`` unless it exists; returns its URL."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": database}
            ).first()
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{_identifier(database)}"'))
    finally:
        admin.dispose()
    return database_url(admin_url, database)


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"database name {name!r}: use letters, digits and underscores only")
    return name


@contextlib.contextmanager
def fresh_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A brand-new PostgreSQL database (``postgresql+psycopg2`` URL), dropped WITH (FORCE) on exit."""
    name = _identifier(f"{prefix}_{uuid.uuid4().hex[:12]}")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield database_url(admin_url, name)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now. All are held open
    while choosing: ports picked one at a time can repeat (the kernel may hand a just-closed one out
    again), and two services given one port leave one of them unable to bind."""
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)
        ]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (several at once: :func:`free_ports`)."""
    return free_ports(1)[0]


@contextlib.contextmanager
def scoped_env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, restoring the previous values."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Topology:
    """Handles on a running topology: URLs, ports, directories, the instance and its processes."""

    root: Path
    dagster_home: Path
    data_dir: Path
    dagster_db_url: str
    market_db_url: str
    grpc_port: int
    webserver_port: int
    code_env: dict[str, str]
    host: str = "127.0.0.1"
    celery: CeleryDeployment | None = None
    mlflow_port: int | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    _instance: dg.DagsterInstance | None = None

    # ---------------------------------------------------------------- processes
    @property
    def service_env(self) -> dict[str, str]:
        """What every service sees (the shared part of docker-compose's ``x-antmeter-env``)."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
        return {
            **inherited,
            "DAGSTER_HOME": str(self.dagster_home),
            "DAGSTER_PG_URL": self.dagster_db_url,
            "DAGSTER_GRPC_HOST": "127.0.0.1",
            "DAGSTER_GRPC_PORT": str(self.grpc_port),
            "PYTHONUNBUFFERED": "1",
            **(self.celery.env if self.celery else {}),
        }

    def spawn(
        self, name: str, argv: list[str], extra_env: Mapping[str, str] | None = None
    ) -> subprocess.Popen:
        """Start one service in its own process group (so teardown reaches its children too)."""
        log_path = self.root / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                cwd=REPO,
                env={**self.service_env, **(extra_env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.processes[name] = process
        self.logs[name] = log_path
        return process

    def start(self) -> None:
        """Start the code server, then the daemon and the webserver, each once the previous is up;
        with Celery first the MLflow server and last the workers."""
        if self.celery is not None and self.mlflow_port is not None:
            self._start_mlflow()
        self.spawn(
            "grpc",
            [
                str(BIN / "dagster"),
                "api",
                "grpc",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.grpc_port),
                "-m",
                "antmeter_assets.definitions",
            ],
            self.code_env,
        )
        self._wait("grpc", self._grpc_healthy)
        self.spawn("daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"])
        self.spawn(
            "webserver",
            [
                str(BIN / "dagster-webserver"),
                "-h",
                self.host,
                "-p",
                str(self.webserver_port),
                "-w",
                "workspace.yaml",
            ],
        )
        self._wait("webserver", self._webserver_healthy)
        self._wait("daemon", self._daemons_healthy)
        for name in self.celery.workers if self.celery else ():
            self.start_worker(name)

    # ---------------------------------------------------------------- celery
    def worker_env(self, name: str) -> dict[str, str]:
        """A worker's own environment: the code settings, but its own data directory."""
        data_dir = self.root / name / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        return {**self.code_env, "ANTMETER_DATA_DIR": str(data_dir)}

    def start_worker(self, name: str) -> subprocess.Popen:
        """Start (or restart) the Celery worker ``name`` and wait until it answers a ping."""
        from antmeter_deploy.celery_app import worker_argv

        assert self.celery is not None, "not a Celery topology"
        queue = self.celery.workers[name]
        process = self.spawn(
            name,
            worker_argv(str(BIN / "celery"), queue, name),
            self.worker_env(name),
        )
        self._wait(name, lambda: self.worker_node(name) in self.ping_workers())
        return process

    def kill_worker(self, name: str) -> None:
        """SIGKILL a worker's process group (no warm shutdown: the fault a crash or OOM kill is)."""
        process = self.processes.pop(name)
        _signal_group(process, signal.SIGKILL)
        process.wait(timeout=30)

    def worker_node(self, name: str) -> str:
        """The Celery node name of worker ``name`` (``name@host``)."""
        return f"{name}@{socket.gethostname()}"

    def ping_workers(self, timeout_s: float = 2.0) -> set[str]:
        """Node names of the workers that answer a broadcast ping."""
        from antmeter_deploy.celery_app import configure, make_app

        assert self.celery is not None
        app = configure(make_app({"broker": self.celery.broker_url, "backend": self.celery.backend_url}))
        try:
            return {node for reply in app.control.ping(timeout=timeout_s) or [] for node in reply}
        finally:
            app.close()

    def _start_mlflow(self) -> None:
        store = self.root / "mlflow_server"
        store.mkdir(parents=True, exist_ok=True)
        self.spawn(
            "mlflow",
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.mlflow_port),
                "--backend-store-uri",
                f"sqlite:///{store / 'mlflow.db'}",
                "--artifacts-destination",
                str(store / "artifacts"),
                "--serve-artifacts",
                "--workers",
                "1",
            ],
        )
        self._wait("mlflow", self._mlflow_healthy)

    def _mlflow_healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.mlflow_port}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM every process group we started, SIGKILL what is still alive after ``grace_s``."""
        if self._instance is not None:
            self._instance.dispose()
            self._instance = None
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for process in self.processes.values():
            # the group may hold run workers that outlive their parent: kill the group regardless
            _signal_group(process, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)

    def _wait(self, name: str, healthy: Callable[[], bool], timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for proc_name, process in self.processes.items():
                if process.poll() is not None:
                    raise TopologyError(
                        f"{proc_name} exited with {process.returncode} while waiting for {name}\n"
                        + self.log_tails()
                    )
            if healthy():
                return
            time.sleep(1.0)
        raise TopologyError(f"{name} not healthy after {timeout_s:.0f}s\n" + self.log_tails())

    def _grpc_healthy(self) -> bool:
        probe = subprocess.run(
            [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(self.grpc_port)],
            env=self.service_env,
            capture_output=True,
            timeout=60,
        )
        return probe.returncode == 0

    def _webserver_healthy(self) -> bool:
        try:
            if httpx.get(f"{self.webserver_url}/server_info", timeout=5).status_code != 200:
                return False
            status = self.graphql(
                "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                "locationOrLoadError { __typename } } } } }"
            )
        except (httpx.HTTPError, TopologyError):
            return False
        entries = {e["name"]: e for e in status["workspaceOrError"].get("locationEntries", [])}
        entry = entries.get(LOCATION)
        return bool(
            entry
            and entry["loadStatus"] == "LOADED"
            and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"
        )

    def _daemons_healthy(self) -> bool:
        instance = self.instance()
        return set(instance.get_required_daemon_types()) <= set(instance.get_daemon_heartbeats())

    def log_tails(self, lines: int = 40) -> str:
        """The last ``lines`` lines of every service's log."""
        parts = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace").splitlines() if path.exists() else []
            parts.append(f"----- {name} ({path}), last {lines} lines -----\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    # ---------------------------------------------------------------- clients
    @property
    def webserver_url(self) -> str:
        return f"http://127.0.0.1:{self.webserver_port}"

    def instance(self) -> dg.DagsterInstance:
        """The same Postgres-backed instance the services use, loaded from the copied dagster.yaml."""
        if self._instance is None:
            with scoped_env({"DAGSTER_PG_URL": self.dagster_db_url}):
                self._instance = dg.DagsterInstance.from_config(str(self.dagster_home))
        return self._instance

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST a query to the webserver's GraphQL endpoint; raise on transport or GraphQL errors."""
        response = httpx.post(
            f"{self.webserver_url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise TopologyError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def launch_run(
        self,
        job_name: str,
        tags: Mapping[str, str] | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> str:
        """Submit a run through the webserver (``launchRun``); returns its id. The queued run
        coordinator stores it QUEUED; the daemon dequeues and launches it on the code server."""
        data = self.graphql(
            LAUNCH_RUN,
            {
                "executionParams": {
                    "selector": {
                        "repositoryLocationName": LOCATION,
                        "repositoryName": REPOSITORY,
                        "jobName": job_name,
                    },
                    "runConfigData": dict(run_config or {}),
                    "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
                }
            },
        )
        result = data["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise TopologyError(f"launchRun of {job_name} failed: {result}")
        return result["run"]["runId"]

    def add_dynamic_partition(self, partitions_def_name: str, key: str) -> None:
        """Add a dynamic partition key through the webserver (``addDynamicPartition``)."""
        data = self.graphql(
            ADD_DYNAMIC_PARTITION,
            {
                "repositorySelector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY},
                "partitionsDefName": partitions_def_name,
                "partitionKey": key,
            },
        )
        result = data["addDynamicPartition"]
        if result["__typename"] != "AddDynamicPartitionSuccess":
            raise TopologyError(f"addDynamicPartition {partitions_def_name}={key} failed: {result}")

    def wait_for_run(
        self,
        run_id: str,
        timeout_s: float = 120.0,
        statuses: tuple[dg.DagsterRunStatus, ...] = (dg.DagsterRunStatus.SUCCESS,),
    ) -> dg.DagsterRun:
        """Poll the instance until the run reaches a finished status; raise if not one of ``statuses``."""
        run = self.wait_until(
            lambda: _finished(self.instance().get_run_by_id(run_id)), timeout_s, f"run {run_id} to finish"
        )
        if run.status not in statuses:
            raise TopologyError(
                f"run {run_id} ({run.job_name}) ended {run.status.value}, expected "
                f"{[s.value for s in statuses]}\n{self.run_failure_messages(run_id)}"
            )
        return run

    def wait_until(
        self, probe: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 1.0
    ) -> Any:
        """Call ``probe`` until it returns something truthy (returned); a service dying fails fast."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = probe()
            if value:
                return value
            dead = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
            if dead:
                raise TopologyError(f"{dead} exited while waiting for {what}\n{self.log_tails()}")
            if time.monotonic() > deadline:
                raise TopologyError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            time.sleep(interval_s)

    def run_failure_messages(self, run_id: str) -> str:
        """The failure events of a run's event log, with their errors and causes."""
        lines = []
        for record in self.instance().all_logs(run_id):
            event = record.dagster_event if record.is_dagster_event else None
            if event is None or not event.is_failure:
                continue
            error = getattr(event.event_specific_data, "error", None)
            lines.append(record.message + (f"\n{error.to_string()}" if error is not None else ""))
        return "\n".join(lines)

    def sql(self, url: str, statement: str, **params: Any) -> list[sa.Row]:
        """Rows of a parameterised SQL statement against one of the topology's databases."""
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(sa.text(statement), params))
        finally:
            engine.dispose()


def _finished(run: dg.DagsterRun | None) -> dg.DagsterRun | None:
    return run if run is not None and run.is_finished else None


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def build_topology(
    root: Path,
    *,
    dagster_db_url: str,
    market_db_url: str,
    grpc_port: int | None = None,
    webserver_port: int | None = None,
    code_env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    celery: CeleryDeployment | None = None,
) -> Topology:
    """A topology (not started) rooted at ``root``: ``dagster_home/`` with the project's
    ``dagster.yaml`` (``deploy/celery/dagster.yaml`` with ``celery``), ``data/`` for the code location,
    MLflow in ``mlflow.db`` (an MLflow server with ``celery``) unless ``code_env`` says otherwise.
    Ports default to free ones."""
    dagster_home = root / "dagster_home"
    data_dir = root / "data"
    dagster_home.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CELERY_DAGSTER_YAML if celery else REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    spare = iter(free_ports(3))  # distinct from each other, whichever the caller fixes
    mlflow_port = next(spare) if celery is not None and celery.mlflow_server else None
    mlflow_uri = f"http://127.0.0.1:{mlflow_port}" if mlflow_port else f"sqlite:///{root / 'mlflow.db'}"
    return Topology(
        root=root,
        dagster_home=dagster_home,
        data_dir=data_dir,
        dagster_db_url=dagster_db_url,
        market_db_url=market_db_url,
        grpc_port=grpc_port or next(spare),
        webserver_port=webserver_port or next(spare),
        host=host,
        celery=celery,
        mlflow_port=mlflow_port,
        code_env={
            "ANTMETER_DATA_DIR": str(data_dir),
            "ANTMETER_STORE_URL": market_db_url,
            "MLFLOW_TRACKING_URI": mlflow_uri,
            **(celery.env if celery else {}),
            **(code_env or {}),
        },
    )


@contextlib.contextmanager
def running_topology(
    root: Path,
    *,
    admin_url: str,
    code_env: Mapping[str, str] | None = None,
    symbols: tuple[str, ...] = (),
    start: bool = True,
    celery: CeleryDeployment | None = None,
) -> Iterator[Topology]:
    """Fresh databases (on the server of ``admin_url``) + DAGSTER_HOME, the three services started
    and healthy; all torn down on exit.

    ``code_env`` adds environment variables to the code server (and so to its run workers).
    ``symbols`` are added as dynamic ``symbols`` partitions before any service starts, so the first
    schedule tick already sees them. ``start=False`` leaves starting the services to the caller
    (``Topology.start()``), e.g. after writing history into the instance and stores first.
    ``celery`` makes it the Celery scale-out (see :class:`CeleryDeployment`).
    """
    with (
        fresh_database(admin_url, "antmeter_it_dagster") as dagster_url,
        fresh_database(admin_url, "antmeter_it_market") as market_url,
    ):
        topology = build_topology(
            root, dagster_db_url=dagster_url, market_db_url=market_url, code_env=code_env, celery=celery
        )
        try:
            if symbols:
                topology.instance().add_dynamic_partitions("symbols", list(symbols))
            if start:
                topology.start()
            yield topology
        finally:
            topology.stop()


LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on Error { message }
    ... on PythonError { stack }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

ADD_DYNAMIC_PARTITION = """
mutation AddPartition($repositorySelector: RepositorySelector!, $partitionsDefName: String!, $partitionKey: String!) {
  addDynamicPartition(repositorySelector: $repositorySelector, partitionsDefName: $partitionsDefName,
                      partitionKey: $partitionKey) {
    __typename
    ... on Error { message }
  }
}
"""
