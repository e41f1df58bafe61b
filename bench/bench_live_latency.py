"""Live latency through the deployed topology: from a candle's close on the (simulated) clock to the
commit of its prediction rows, for the default run launcher and the Celery run launcher in the same
run, plus a scale sweep of the live minute at several symbol counts.

Each launcher runs in a child process of its own (``--one LAUNCHER``; the code location's resources
are bound to one topology's stores at import) with a fresh topology (``antmeter_deploy.topology``:
Postgres-backed instance, ``dagster api grpc``, ``dagster-daemon``, ``dagster-webserver``; for Celery
also RabbitMQ in a vhost of its own, Redis results, an MLflow server and the ``edge`` and ``trainer``
workers). Setup, in that child against the same instance and stores, on the same simulated clock
(``ANTMETER_CLOCK_*``; one simulated minute every ``--feed-interval-s`` wall seconds): simulated
days harvested, features and labels, ``training_job`` for the LSTM at the ``ci`` preset (when the
gate rejects the small model, the champion alias is moved to it by hand: latency, not skill, is
measured; the JSON says so). Then only ``live_minute_sensor`` is switched on: as each simulated
minute closes it requests one ``live_minute_job`` run, which harvests every symbol's new candle and
predicts on it (see ``antmeter_assets.live``). A poller sees when each (symbol, minute)'s prediction
rows are committed.

Stages of a candle (consecutive, clipped, summing to its latency): ``tick_wait`` (close → run
created by the sensor), ``queue`` (created → RUN_STARTING: the queued coordinator and the launcher),
``run_start`` (STARTING → STEP_START: a process start and imports for the default launcher, a
message to a warm worker for Celery), ``step`` (STEP_START → rows visible: harvest + features + ONNX
inference + write).

The sweep (Celery topology, ``--sweep`` symbol counts): after the same setup, ``live_minute_job`` runs
for ``--sweep-minutes`` simulated minutes at each count; reported: p95 of each minute's run wall time
(created → finished) and of its step, runs per day (one per minute, for any count; the per-symbol
asset path needs one harvest run per symbol per minute plus features runs), and instance growth per
day (event-log rows and bytes per run × runs per day, measured on the instance's tables).

Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from antmeter_deploy.topology import (
    LOCATION,
    REPOSITORY,
    CeleryDeployment,
    Topology,
    fresh_rabbitmq_vhost,
    running_topology,
)

MODEL_TYPE = "lstm"
REGISTERED = f"antmeter-{MODEL_TYPE}"
STAGES = ("tick_wait", "queue", "run_start", "step")
ET = dg.DagsterEventType
BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
BACKEND = "redis://127.0.0.1:6379/0"
GOALS_P95_S = {"celery": 15.0, "default": 60.0}


def percentiles(values) -> dict[str, float]:
    array = np.asarray(list(values), dtype=float)
    if array.size == 0:
        return {"n": 0}
    return {
        "n": int(array.size),
        "p50": round(float(np.percentile(array, 50)), 3),
        "p95": round(float(np.percentile(array, 95)), 3),
        "mean": round(float(array.mean()), 3),
        "max": round(float(array.max()), 3),
    }


@dataclass(frozen=True)
class SimulatedClock:
    """The deployment's simulated clock: ``origin`` at wall time ``wall_start``, ``speed`` x faster."""

    origin: pd.Timestamp
    wall_start: float
    speed: float

    def env(self) -> dict[str, str]:
        return {
            "ANTMETER_CLOCK_ORIGIN": self.origin.isoformat(),
            "ANTMETER_CLOCK_WALL_START": repr(self.wall_start),
            "ANTMETER_CLOCK_SPEED": repr(self.speed),
        }

    def wall_time(self, simulated: pd.Timestamp) -> float:
        return self.wall_start + (simulated - self.origin).total_seconds() / self.speed

    def now(self) -> pd.Timestamp:
        return self.origin + pd.Timedelta(seconds=(time.time() - self.wall_start) * self.speed)


@dataclass
class PredictionPoller:
    """Polls the predictions table; remembers when each (symbol, prediction time) was first visible."""

    store_url: str
    since: pd.Timestamp
    interval_s: float = 0.2
    first_seen: dict[tuple[str, pd.Timestamp], float] = field(default_factory=dict)
    created_at: dict[tuple[str, pd.Timestamp], pd.Timestamp] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(self.store_url)
        query = sa.text(
            "SELECT symbol, prediction_time, min(created_at) FROM predictions "
            "WHERE prediction_time >= :since GROUP BY symbol, prediction_time"
        )
        try:
            while not self._stop.is_set():
                with engine.connect() as conn:
                    rows = conn.execute(query, {"since": self.since.to_pydatetime()}).all()
                seen_at = time.time()
                for symbol, prediction_time, created in rows:
                    key = (symbol, pd.Timestamp(prediction_time).tz_convert("UTC"))
                    if key not in self.first_seen:
                        self.first_seen[key] = seen_at
                        self.created_at[key] = pd.Timestamp(created).tz_convert("UTC")
                self._stop.wait(self.interval_s)
        finally:
            engine.dispose()

    def stop(self) -> None:
        self._stop.set()


@dataclass
class RunTimeline:
    run_id: str
    created: float
    starting: float | None = None
    step_start: float | None = None
    finished: float | None = None
    status: str = ""
    as_of: pd.Timestamp | None = None
    events: int = 0


def live_runs(instance: dg.DagsterInstance, since: float) -> list[RunTimeline]:
    """Every ``live_minute_job`` run created after ``since`` with its lifecycle times."""
    timelines = []
    for record in instance.get_run_records(dg.RunsFilter(job_name="live_minute_job")):
        if record.create_timestamp.timestamp() < since:
            continue
        line = RunTimeline(
            record.dagster_run.run_id,
            record.create_timestamp.timestamp(),
            status=record.dagster_run.status.value,
        )
        logs = instance.all_logs(line.run_id)
        line.events = len(logs)
        for entry in logs:
            event = entry.dagster_event
            if event is None:
                continue
            kind = event.event_type
            if kind == ET.RUN_STARTING and line.starting is None:
                line.starting = entry.timestamp
            elif kind == ET.STEP_START and line.step_start is None:
                line.step_start = entry.timestamp
            elif kind == ET.ASSET_MATERIALIZATION:
                materialization = event.event_specific_data.materialization
                if materialization.asset_key == dg.AssetKey("predictions"):
                    line.as_of = pd.Timestamp(materialization.metadata["as_of"].value)
            elif kind in (ET.RUN_SUCCESS, ET.RUN_FAILURE):
                line.finished = entry.timestamp
        timelines.append(line)
    return timelines


def candle_stages(close: float, run: RunTimeline, seen: float) -> dict[str, float]:
    boundaries = [close, run.created, run.starting, run.step_start, seen]
    clipped = [boundaries[0]]
    for value in boundaries[1:]:
        clipped.append(max(clipped[-1], value) if value is not None else clipped[-1])
    clipped[-1] = seen
    return dict(zip(STAGES, np.diff(clipped).tolist(), strict=True))


def start_sensor(topology: Topology, name: str) -> None:
    data = topology.graphql(
        "mutation($selector: SensorSelector!) { startSensor(sensorSelector: $selector) { __typename "
        "... on Sensor { sensorState { status } } ... on Error { message } } }",
        {"selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name}},
    )
    if data["startSensor"]["__typename"] != "Sensor":
        raise RuntimeError(f"could not start {name}: {data['startSensor']}")


# --------------------------------------------------------------------------- setup
def setup_history(defs, instance, symbols: list[str], days: list[str]) -> dict:
    """Harvest ``days`` (the last is today) for ``symbols``, features/labels of all but the first,
    ``training_job``; the champion alias forced onto the candidate when the gate rejected it; then
    one predictions catch-up."""
    from antmeter.registry import versions
    from antmeter_assets.partitions import symbol_day_key
    from antmeter_resources import MlflowResource

    tags = {"antmeter/launched_by": "bench_setup"}
    for symbol in symbols:
        for day in days:
            defs.resolve_job_def("harvest_job").execute_in_process(
                instance=instance, partition_key=symbol_day_key(symbol, day), tags=tags
            )
        for day in days[1:]:
            defs.resolve_job_def("feature_job").execute_in_process(
                instance=instance, partition_key=symbol_day_key(symbol, day), tags=tags
            )
    result = defs.resolve_job_def("training_job").execute_in_process(instance=instance, tags=tags)
    event = result.asset_materializations_for_node(f"{MODEL_TYPE}_champion")[0]
    gate = {
        k: v.value
        for k, v in event.metadata.items()
        if k in ("gate", "candidate_version", "champion_version")
    }
    client = MlflowResource(tracking_uri=os.environ["MLFLOW_TRACKING_URI"]).client()
    if versions.champion(client, REGISTERED) is None:
        [newest] = client.search_model_versions(
            f"name = '{REGISTERED}'", max_results=1, order_by=["version_number DESC"]
        )
        versions.record_gate(client, REGISTERED, str(newest.version), True, "forced by bench_live_latency")
        gate["forced_champion_version"] = str(newest.version)
    # predictions caught up to the setup's candles, so the measured runs start clean
    defs.resolve_job_def("predictions_job").execute_in_process(instance=instance, tags=tags)
    return gate


@contextlib.contextmanager
def topology_for(launcher: str, root: Path, args, symbols: tuple[str, ...], clock: SimulatedClock):
    code_env = {
        "ANTMETER_MODEL_TYPES": MODEL_TYPE,
        "ANTMETER_SETTINGS": json.dumps({"preset": args.preset, "training_days": 2, "serving_days": 1}),
        "ANTMETER_LIVE_TICK_INTERVAL_S": "1",
        **clock.env(),
    }
    with contextlib.ExitStack() as stack:
        celery = None
        if launcher == "celery":
            broker = stack.enter_context(fresh_rabbitmq_vhost(BROKER, "antmeter_bench"))
            celery = CeleryDeployment(broker_url=broker, backend_url=BACKEND)
        topology = stack.enter_context(
            running_topology(
                root, admin_url=args.pg_admin_url, symbols=symbols, code_env=code_env, celery=celery
            )
        )
        yield topology


def new_clock(args, lead_s: float) -> SimulatedClock:
    """A clock whose ``origin`` (where measuring begins) is reached ``lead_s`` wall seconds from now."""
    speed = 60.0 / args.feed_interval_s
    now = pd.Timestamp.now(tz="UTC")
    origin = (now + pd.Timedelta(seconds=lead_s)).floor("min")
    return SimulatedClock(origin=origin, wall_start=time.time() + lead_s, speed=speed)


def history_days(clock: SimulatedClock, setup_lead_s: float, n: int) -> list[str]:
    today = (clock.origin - pd.Timedelta(seconds=setup_lead_s * clock.speed)).normalize()
    if today.date() != clock.origin.date():
        raise SystemExit("the simulated setup would cross midnight UTC; run it later in the day")
    return [str((today - pd.Timedelta(days=d)).date()) for d in range(n, -1, -1)]


# --------------------------------------------------------------------------- one launcher
def measure_launcher(launcher: str, args) -> dict:
    symbols = tuple(f"SYM{i:03d}" for i in range(args.symbols))
    clock = new_clock(args, args.setup_lead_s)
    minutes_needed = args.warmup_candles + args.candles + args.max_tail_candles
    if (clock.origin + pd.Timedelta(minutes=minutes_needed)).date() != clock.origin.date():
        raise SystemExit("the simulated feed would cross midnight UTC; run it earlier in the day")
    days = history_days(clock, args.setup_lead_s, args.history_days)
    timings = {}
    with (
        tempfile.TemporaryDirectory(prefix=f"bench_live_{launcher}_") as tmp,
        topology_for(launcher, Path(tmp), args, symbols, clock) as topology,
    ):
        os.environ.update(topology.code_env)
        from antmeter_assets.definitions import defs

        instance = topology.instance()
        t = time.monotonic()
        gate = setup_history(defs, instance, list(symbols), days)
        timings["setup_s"] = round(time.monotonic() - t, 1)
        late_s = time.time() - clock.wall_start
        time.sleep(max(0.0, -late_s))
        measure_from = clock.now().floor("min") + pd.Timedelta(minutes=args.warmup_candles)
        measured = [
            (s, measure_from + pd.Timedelta(minutes=k))
            for k in range(args.candles // len(symbols))
            for s in symbols
        ]
        poller = PredictionPoller(topology.market_db_url, since=measure_from)
        thread = threading.Thread(target=poller.run, daemon=True)
        thread.start()
        started = time.time()
        start_sensor(topology, "live_minute_sensor")
        last_close = clock.wall_time(measured[-1][1] + pd.Timedelta(minutes=1))
        deadline = last_close + args.max_tail_candles * args.feed_interval_s
        while time.time() < deadline and not all(m in poller.first_seen for m in measured):
            time.sleep(0.5)
        timings["feed_s"] = round(time.time() - started, 1)
        poller.stop()
        thread.join(timeout=10)
        runs = live_runs(instance, started)
        by_as_of = {r.as_of: r for r in runs if r.as_of is not None}
        latencies, stages, missing = [], {s: [] for s in STAGES}, []
        for key in measured:
            if key not in poller.first_seen:
                missing.append(f"{key[0]} {key[1]}")
                continue
            run = by_as_of.get(poller.created_at[key])
            if run is None:
                missing.append(f"{key[0]} {key[1]} (no run with as_of {poller.created_at[key]})")
                continue
            close = clock.wall_time(key[1] + pd.Timedelta(minutes=1))
            latencies.append(poller.first_seen[key] - close)
            for stage, value in candle_stages(close, run, poller.first_seen[key]).items():
                stages[stage].append(value)
        finished = [r for r in runs if r.finished is not None]
    latency = percentiles(latencies)
    return {
        "launcher": launcher,
        "symbols": len(symbols),
        "candles_measured": len(latencies),
        "candles_missing": missing,
        "p50_s": latency.get("p50"),
        "p95_s": latency.get("p95"),
        "goal_p95_s": GOALS_P95_S[launcher],
        "meets_goal": latency.get("p95") is not None and latency["p95"] <= GOALS_P95_S[launcher],
        "latency_s": latency,
        "stages_s": {s: percentiles(v) for s, v in stages.items()},
        "runs": len(runs),
        "failed_runs": sum(r.status == "FAILURE" for r in runs),
        "run_wall_s": percentiles(r.finished - r.created for r in finished),
        "step_s": percentiles(r.finished - r.step_start for r in finished if r.step_start),
        "champion_gate": gate,
        "setup_late_s": round(late_s, 1),
        "timings_s": timings,
    }


# --------------------------------------------------------------------------- the sweep
def measure_sweep(args) -> dict:
    counts = [int(c) for c in args.sweep.split(",")]
    base = tuple(f"SYM{i:03d}" for i in range(min(counts)))
    clock = new_clock(args, args.setup_lead_s)
    days = history_days(clock, args.setup_lead_s, args.history_days)
    result = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench_live_sweep_") as tmp,
        topology_for("celery", Path(tmp), args, base, clock) as topology,
    ):
        os.environ.update(topology.code_env)
        from antmeter_assets.definitions import defs
        from antmeter_assets.partitions import symbol_day_key

        instance = topology.instance()
        setup_history(defs, instance, list(base), days)
        time.sleep(max(0.0, clock.wall_start - time.time()))
        for count in counts:
            extra = [
                f"SYM{i:03d}"
                for i in range(count)
                if f"SYM{i:03d}" not in instance.get_dynamic_partitions("symbols")
            ]
            if extra:
                instance.add_dynamic_partitions("symbols", extra)
                today = str(clock.now().date())
                for symbol in extra:  # today's history, so the new symbols have their warm-up
                    defs.resolve_job_def("harvest_job").execute_in_process(
                        instance=instance,
                        partition_key=symbol_day_key(symbol, today),
                        tags={"antmeter/launched_by": "bench_setup"},
                    )
            bytes_before = event_log_bytes(topology)
            started = time.time()
            run_ids = []
            for _ in range(args.sweep_minutes):  # one run per simulated minute, each after its close
                minute_close = clock.wall_time(clock.now().floor("min") + pd.Timedelta(minutes=1))
                time.sleep(max(0.0, minute_close - time.time() + 0.05))
                run_ids.append(topology.launch_run("live_minute_job"))
            for run_id in run_ids:
                topology.wait_for_run(run_id, timeout_s=600)
            runs = [r for r in live_runs(instance, started) if r.run_id in set(run_ids)]
            grown = event_log_bytes(topology) - bytes_before
            events = float(np.mean([r.events for r in runs]))
            result[str(count)] = {
                "minute_wall_s": percentiles(r.finished - r.created for r in runs),
                "minute_step_s": percentiles(r.finished - r.step_start for r in runs if r.step_start),
                "p95_minute_wall_s": percentiles(r.finished - r.created for r in runs).get("p95"),
                "meets_60s_goal": percentiles(r.finished - r.created for r in runs).get("p95", 1e9) <= 60,
                "runs_per_day": 1440,
                "runs_per_day_per_symbol_asset_path": 1440 * count * 2,
                "event_rows_per_run": round(events, 1),
                "event_rows_per_day": int(events * 1440),
                "instance_growth_mb_per_day": round(grown / len(runs) * 1440 / 1e6, 1),
                "failed_runs": sum(r.status == "FAILURE" for r in runs),
            }
    return result


def event_log_bytes(topology: Topology) -> int:
    [(size,)] = topology.sql(
        topology.dagster_db_url,
        "SELECT coalesce(sum(pg_total_relation_size(quote_ident(relname))), 0) FROM pg_stat_user_tables "
        "WHERE relname IN ('event_logs', 'runs', 'run_tags', 'asset_keys', 'asset_event_tags', "
        "'asset_check_executions', 'dynamic_partitions', 'kvs')",
    )
    return int(size)


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--candles", type=int, default=100, help="candles measured per launcher (all symbols)"
    )
    parser.add_argument("--symbols", type=int, default=2)
    parser.add_argument("--warmup-candles", type=int, default=2, help="minutes fed first and not measured")
    parser.add_argument("--max-tail-candles", type=int, default=10, help="minutes waited after the last one")
    parser.add_argument(
        "--feed-interval-s", type=float, default=10.0, help="wall seconds per simulated minute"
    )
    parser.add_argument("--setup-lead-s", type=float, default=360.0, help="wall seconds reserved for setup")
    parser.add_argument("--history-days", type=int, default=3, help="complete days before today (>= 3)")
    parser.add_argument("--launchers", default="default,celery")
    parser.add_argument("--sweep", default="2,10,50", help="symbol counts of the scale sweep ('' skips it)")
    parser.add_argument("--sweep-minutes", type=int, default=5)
    parser.add_argument("--parallel", action="store_true", help="run the launchers and the sweep at once")
    parser.add_argument("--preset", default="ci")
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get(
            "ANTMETER_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def child(part: str, argv: list[str]) -> dict:
    """Run one part (a launcher, or the sweep) in a fresh interpreter; returns its JSON."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = Path(out.name)
    try:
        subprocess.run(
            [sys.executable, __file__, *argv, "--one", part, "--out", str(path)], check=True, timeout=3600
        )
        return json.loads(path.read_text())
    except subprocess.CalledProcessError as error:
        return {"error": f"{part} exited with {error.returncode}"}
    finally:
        path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.one is not None:
        output = measure_sweep(args) if args.one == "sweep" else measure_launcher(args.one, args)
        args.out.write_text(json.dumps(output, default=str))
        return output
    started = time.monotonic()
    result = {
        "bench": "live_latency",
        "device": f"{os.cpu_count()} CPU cores; Postgres, RabbitMQ, Redis and every service on this machine",
        "design": "live_minute_sensor -> one live_minute_job run per closed minute (harvest + predict)",
        "feed_interval_s": args.feed_interval_s,
        "compression": round(60.0 / args.feed_interval_s, 2),
    }
    parts = [*args.launchers.split(","), *(["sweep"] if args.sweep else [])]
    if args.parallel:  # each part in its own topology at the same time (they share the CPUs)
        with concurrent.futures.ThreadPoolExecutor(len(parts)) as pool:
            outputs = dict(zip(parts, pool.map(lambda part: child(part, argv), parts), strict=True))
    else:
        outputs = {part: child(part, argv) for part in parts}
    result.update(outputs)
    result["parts_ran_in_parallel"] = args.parallel
    if "default" in result and "celery" in result and result["celery"].get("p50_s"):
        result["reference"] = {
            "what": "the default launcher (a process per run) on the same design, measured in this run",
            "default_over_celery_p50": round(result["default"]["p50_s"] / result["celery"]["p50_s"], 2)
            if result["default"].get("p50_s")
            else None,
        }
    result["total_s"] = round(time.monotonic() - started, 1)
    return result


if __name__ == "__main__":
    output = main()
    if "--one" not in sys.argv:
        print(json.dumps(output, default=str))
