"""Live latency through the deployed topology: from a candle landing in the market store to its
predictions being stored, with the daemon's declarative automation doing the work in between.

The topology of ``antmeter_deploy/topology.py`` runs as real processes (Postgres-backed
instance from the project's ``dagster.yaml``, ``dagster api grpc``, ``dagster-daemon``,
``dagster-webserver``), configured for the LSTM only (``ANTMETER_MODEL_TYPES=lstm``, preset by
``ANTMETER_SETTINGS``). Setup, in this process against the same instance and stores: simulated days
harvested, today's news, features and labels, ``training_job`` (its champion is what the code server
serves; see ``train_champion`` for a rejected gate), and one predictions catch-up. Then the services
start on a compressed simulated clock (``ANTMETER_CLOCK_ORIGIN`` / ``_WALL_START`` / ``_SPEED``, see
``antmeter_assets.partitions.utc_now``: one simulated minute every ``--feed-interval-s`` wall
seconds), and only the ``antmeter_automation`` sensor is switched on (through GraphQL).

The feed: as each simulated minute closes, the real ``harvest_job`` runs here (in-process, on the same
clock), so one new candle lands at a time. Downstream everything is the daemon's: the ohlcv
materialization → automation tick → ``features`` run → automation tick → ``predictions`` run (queued
run coordinator, run worker on the code server). The feed goes on until every measured candle has
its predictions (as a live feed would: a candle that lands while a features run is in progress is
only picked up after the next landing). A poller sees when each candle's prediction rows are
committed. A candle's path is cut into stages at events of the instance (clipped so they are
consecutive and sum to the end-to-end latency): harvest_report (upsert → materialization event),
features_tick_wait, features_queue, features_run_start, features_step, predictions_tick_wait,
predictions_queue, predictions_run_start, predictions_step (step start → rows visible). When a
predictions run that started after the candle landed picks it up without waiting for a features
run that includes it, the features stages are zero.

Inside the predictions step, the work is replayed here for each predictions run (same champion,
same windows, same store): read, feature computation, the model's own ONNX inference, and the
write (inserting the same rows under a scratch model version). That is the reference the
end-to-end figure is compared with. At a compressed pace, candles landing while a run is in
progress are batched into the next run; the JSON reports candles per predictions run.

Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from antmeter_deploy.topology import LOCATION, REPOSITORY, Topology, running_topology

MODEL_TYPE = "lstm"
STAGES = (
    "harvest_report",
    "features_tick_wait",
    "features_queue",
    "features_run_start",
    "features_step",
    "predictions_tick_wait",
    "predictions_queue",
    "predictions_run_start",
    "predictions_step",
)
GROUPS = {
    "automation_tick_wait": ("features_tick_wait", "predictions_tick_wait"),
    "queue": ("features_queue", "predictions_queue"),
    "run_start": ("features_run_start", "predictions_run_start"),
    "compute_and_write": ("harvest_report", "features_step", "predictions_step"),
}
ET = dg.DagsterEventType


def percentiles(values, scale: float = 1.0) -> dict[str, float]:
    array = np.asarray(list(values), dtype=float) * scale
    if array.size == 0:
        return {"n": 0}
    return {
        "n": int(array.size),
        "p50": round(float(np.percentile(array, 50)), 3),
        "p95": round(float(np.percentile(array, 95)), 3),
        "mean": round(float(array.mean()), 3),
        "max": round(float(array.max()), 3),
    }


def timestamp(value) -> float:
    return pd.Timestamp(value).timestamp()


# --------------------------------------------------------------------------- setup (in this process)
def materialize_history(defs, instance: dg.DagsterInstance, symbol: str, days: list[str]) -> None:
    """Harvest ``days`` (the last is today, up to now), today's news, features and labels of all
    but the first day (its candles are the warm-up), all in-process against the shared instance."""
    from antmeter_assets.partitions import symbol_day_key

    tags = {"antmeter/launched_by": "bench_setup"}
    for day in days:
        defs.resolve_job_def("harvest_job").execute_in_process(
            instance=instance, partition_key=symbol_day_key(symbol, day), tags=tags
        )
    defs.resolve_job_def("news_job").execute_in_process(instance=instance, partition_key=days[-1], tags=tags)
    for day in days[1:]:
        defs.resolve_job_def("feature_job").execute_in_process(
            instance=instance, partition_key=symbol_day_key(symbol, day), tags=tags
        )


def train_champion(defs, instance: dg.DagsterInstance) -> dict:
    """``training_job`` (the LSTM only, in this deployment); returns the gate's metadata.

    This bench measures latency, not skill: when the gate rejects the candidate (a small model on a
    few simulated days often loses to persistence), the champion alias is moved to it anyway and the
    champion asset runs again, which makes it the served bundle. The JSON says so."""
    from antmeter.registry import versions
    from antmeter_resources import MlflowResource

    job = defs.resolve_job_def("training_job")
    tags = {"antmeter/launched_by": "bench_setup"}
    gate = gate_metadata(job.execute_in_process(instance=instance, tags=tags))
    if gate["gate"] != "promoted":
        client = MlflowResource(tracking_uri=os.environ["MLFLOW_TRACKING_URI"]).client()
        versions.record_gate(
            client,
            f"antmeter-{MODEL_TYPE}",
            str(gate["candidate_version"]),
            True,
            "forced by bench_live_latency (latency, not skill, is measured)",
        )
        again = job.execute_in_process(
            instance=instance, tags=tags, asset_selection=[dg.AssetKey(f"{MODEL_TYPE}_champion")]
        )
        gate["forced_champion_version"] = gate_metadata(again)["champion_version"]
    return gate


def gate_metadata(result) -> dict:
    event = result.asset_materializations_for_node(f"{MODEL_TYPE}_champion")[0]
    return {
        k: v.value
        for k, v in event.metadata.items()
        if k in ("gate", "candidate_version", "champion_version", "candidate_score")
    }


# --------------------------------------------------------------------------- the feed and the poller
@dataclass
class Landing:
    open_time: pd.Timestamp
    run_id: str
    started: float
    finished: float


@dataclass
class PredictionPoller:
    """Polls the predictions table; remembers when each prediction time's rows were first visible."""

    store_url: str
    symbol: str
    since: pd.Timestamp
    interval_s: float = 0.2
    first_seen: dict[pd.Timestamp, float] = field(default_factory=dict)
    created_at: dict[pd.Timestamp, pd.Timestamp] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(self.store_url)
        query = sa.text(
            "SELECT prediction_time, min(created_at) FROM predictions WHERE symbol = :symbol "
            "AND prediction_time >= :since AND model_version NOT LIKE '%-replay' "
            "GROUP BY prediction_time"
        )
        try:
            while not self._stop.is_set():
                with engine.connect() as conn:
                    rows = conn.execute(
                        query, {"symbol": self.symbol, "since": self.since.to_pydatetime()}
                    ).all()
                seen_at = time.time()
                for prediction_time, created in rows:
                    key = pd.Timestamp(prediction_time).tz_convert("UTC")
                    if key not in self.first_seen:
                        self.first_seen[key] = seen_at
                        self.created_at[key] = pd.Timestamp(created).tz_convert("UTC")
                self._stop.wait(self.interval_s)
        finally:
            engine.dispose()

    def stop(self) -> None:
        self._stop.set()


def feed(
    defs, instance: dg.DagsterInstance, symbol: str, clock: SimulatedClock, done, max_candles: int
) -> list[Landing]:
    """As each simulated minute closes, run the real harvest (one new candle lands), until ``done()``
    or ``max_candles`` minutes."""
    from antmeter_assets.partitions import symbol_day_key

    job = defs.resolve_job_def("harvest_job")
    landings = []
    for k in range(max_candles):
        if done():
            break
        open_time = clock.origin + pd.Timedelta(minutes=k)
        time.sleep(max(0.0, clock.wall_time(open_time + pd.Timedelta(minutes=1)) + 0.05 - time.time()))
        began = time.time()
        result = job.execute_in_process(
            instance=instance,
            partition_key=symbol_day_key(symbol, str(open_time.date())),
            tags={"antmeter/launched_by": "bench_feed"},
        )
        landings.append(Landing(open_time, result.run_id, began, time.time()))
    return landings


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


# --------------------------------------------------------------------------- analysis
@dataclass
class RunTimeline:
    run_id: str
    assets: frozenset[str]
    partition: str | None
    created: float
    enqueued: float | None = None
    starting: float | None = None
    started: float | None = None
    step_start: float | None = None
    materialized: float | None = None
    finished: float | None = None
    status: str = ""
    as_of: pd.Timestamp | None = None


def run_timelines(instance: dg.DagsterInstance, since: float) -> list[RunTimeline]:
    """Every automation run created after ``since``, with the times of its lifecycle events."""
    timelines = []
    for record in instance.get_run_records(
        dg.RunsFilter(tags={"dagster/sensor_name": "antmeter_automation"})
    ):
        run = record.dagster_run
        if record.create_timestamp.timestamp() < since:
            continue
        line = RunTimeline(
            run.run_id,
            frozenset(k.to_user_string() for k in run.asset_selection or ()),
            run.tags.get("dagster/partition"),
            record.create_timestamp.timestamp(),
            status=run.status.value,
        )
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            kind, at = event.event_type, entry.timestamp
            if kind == ET.RUN_ENQUEUED and line.enqueued is None:
                line.enqueued = at
            elif kind == ET.RUN_STARTING and line.starting is None:
                line.starting = at
            elif kind == ET.RUN_START and line.started is None:
                line.started = at
            elif kind == ET.STEP_START and line.step_start is None:
                line.step_start = at
            elif kind == ET.ASSET_MATERIALIZATION and line.materialized is None:
                line.materialized = at
                metadata = event.event_specific_data.materialization.metadata
                if "as_of" in metadata:
                    line.as_of = pd.Timestamp(metadata["as_of"].value)
            elif kind in (ET.RUN_SUCCESS, ET.RUN_FAILURE):
                line.finished = at
        timelines.append(line)
    return timelines


def candle_stages(
    landed: float, reported: float, features: list[RunTimeline], predictions: RunTimeline, seen: float
) -> dict[str, float]:
    """The candle's latency cut at consecutive (clipped) events of the runs on its path."""
    feature_run = next(
        (
            f
            for f in sorted(features, key=lambda f: f.step_start or 0)
            if f.step_start
            and f.materialized
            and f.step_start >= landed
            and f.materialized <= predictions.created
        ),
        None,
    )
    boundaries = [landed, reported]
    if feature_run is not None:
        boundaries += [
            feature_run.created,
            feature_run.starting,
            feature_run.step_start,
            feature_run.materialized,
        ]
    else:
        boundaries += [None] * 4
    boundaries += [predictions.created, predictions.starting, predictions.step_start, seen]
    clipped = [boundaries[0]]
    for value in boundaries[1:]:
        clipped.append(max(clipped[-1], value) if value is not None else clipped[-1])
    clipped[-1] = seen  # the end is the end, even if an event was logged after the rows were visible
    return dict(zip(STAGES, np.diff(clipped).tolist(), strict=True))


def replay_predictions(
    store,
    settings,
    champion_dir: Path,
    symbol: str,
    runs: list[tuple[pd.Timestamp, int]],
    single_calls: int = 200,
) -> dict:
    """Each predictions run's work again, timed by part: read, features, inference, write."""
    from antmeter.features.pipeline import compute_features, required_warmup_minutes
    from antmeter.learn.bundle import ServingModel
    from antmeter.live.inference import inference_windows, predict_symbol

    market = store.get()
    model = ServingModel.load(champion_dir)
    registry = json.loads((champion_dir / "registry.json").read_text())
    config = settings.feature_config()
    warmup = pd.Timedelta(minutes=required_warmup_minutes(config))
    parts: dict[str, list[float]] = {
        "read_ms": [],
        "features_ms": [],
        "windows_ms": [],
        "model_inference_ms": [],
        "write_ms": [],
    }
    for after, newest in runs:
        t0 = time.perf_counter()
        market.read_frame(
            "predictions",
            filters={"symbol": symbol, "model_name": registry["name"], "model_version": registry["version"]},
        )
        candles = market.read_candles(
            symbol,
            settings.interval,
            after - warmup - pd.Timedelta(minutes=model.window),
            newest + pd.Timedelta(minutes=1),
        )
        sentiment = market.read_frame(
            "sentiment_hourly",
            filters={"symbol": symbol},
            time_range=(candles["open_time"].min() - pd.Timedelta(hours=2), None),
        )
        t1 = time.perf_counter()
        features = compute_features(candles, config, sentiment_hourly=sentiment, symbol=symbol)
        t2 = time.perf_counter()
        _, windows = inference_windows(features, list(model.schema.names), model.window, after)
        t3 = time.perf_counter()
        model.predict_windows(windows)
        t4 = time.perf_counter()
        rows = predict_symbol(
            model,
            features,
            symbol,
            registry["name"],
            f"{registry['version']}-replay",
            after,
            pd.Timestamp.now(tz="UTC"),
        )
        t5 = time.perf_counter()
        market.upsert_frame("predictions", rows)
        t6 = time.perf_counter()
        for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t6 - t5), strict=True):
            parts[key].append(value * 1e3)
    if not runs:
        return {"precision": model.precision, "model_inference_ms": {"n": 0}}
    window = np.ascontiguousarray(windows[-1:])
    single = []
    for _ in range(single_calls):
        t = time.perf_counter()
        model.predict_windows(window)
        single.append((time.perf_counter() - t) * 1e3)
    return {
        **{k: percentiles(v) for k, v in parts.items()},
        "model_inference_one_window_ms": percentiles(single[10:]),
        "cold_imports_and_model_load_ms": cold_start_ms(champion_dir),
        "precision": model.precision,
    }


COLD_START_PROBE = """
import sys, time
t = time.perf_counter()
from antmeter.features.pipeline import compute_features, required_warmup_minutes
from antmeter.live.inference import predict_symbol
from antmeter.learn.bundle import ServingModel
ServingModel.load(sys.argv[1])
print((time.perf_counter() - t) * 1e3)
"""


def cold_start_ms(champion_dir: Path, repeats: int = 3) -> dict[str, float]:
    """What a fresh run worker pays inside the predictions step before computing: the imports of the
    asset body and loading the champion (measured in fresh interpreters, start-up excluded)."""
    times = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", COLD_START_PROBE, str(champion_dir)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return percentiles(times)


# --------------------------------------------------------------------------- main
def start_sensor(topology: Topology, name: str) -> None:
    data = topology.graphql(
        "mutation($selector: SensorSelector!) { startSensor(sensorSelector: $selector) { __typename "
        "... on Sensor { sensorState { status } } ... on Error { message } } }",
        {"selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name}},
    )
    if data["startSensor"]["__typename"] != "Sensor":
        raise RuntimeError(f"could not start {name}: {data['startSensor']}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--candles", type=int, default=50, help="candles measured (after the warm-up ones)")
    parser.add_argument("--warmup-candles", type=int, default=3, help="candles fed first and not measured")
    parser.add_argument(
        "--feed-interval-s",
        type=float,
        default=6.0,
        help="real seconds between simulated minutes (60 = real time)",
    )
    parser.add_argument(
        "--automation-interval-s",
        type=int,
        default=30,
        help="ANTMETER_AUTOMATION_INTERVAL_S of the code server (deployed default 30)",
    )
    parser.add_argument("--history-days", type=int, default=8, help="complete days before today (>= 4)")
    parser.add_argument("--symbol", default="BTCUSDT")
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get(
            "ANTMETER_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
        ),
        help="PostgreSQL server on which fresh databases are created (and dropped)",
    )
    parser.add_argument(
        "--preset",
        default="ci",
        help="model preset of the LSTM champion (ci: the smallest; trains in seconds)",
    )
    parser.add_argument(
        "--max-tail-candles",
        type=int,
        default=40,
        help="candles fed after the measured ones at most, until all are predicted",
    )
    parser.add_argument("--logs-dir", type=Path, default=None, help="copy the services' logs here at the end")
    args = parser.parse_args(argv)
    if args.history_days < 4:
        parser.error("--history-days must be >= 4 (warm-up day, training days, the serving day)")

    now = pd.Timestamp.now(tz="UTC")
    max_candles = args.warmup_candles + args.candles + args.max_tail_candles
    speed = 60.0 / args.feed_interval_s
    # setup (~3 min at most) happens before the simulated feed starts at the minute it reaches
    latest_start = (now + pd.Timedelta(minutes=5)).floor("min")
    if (latest_start + pd.Timedelta(minutes=max_candles + 1)).date() != now.date():
        raise SystemExit(
            f"the compressed feed ({max_candles} simulated minutes from about {latest_start:%H:%M}) "
            "would cross midnight UTC; run it earlier in the day or with fewer candles"
        )
    days = [str((now - pd.Timedelta(days=d)).date()) for d in range(args.history_days, -1, -1)]
    started = time.monotonic()
    timings: dict[str, float] = {}
    code_env = {
        "ANTMETER_MODEL_TYPES": MODEL_TYPE,
        "ANTMETER_SETTINGS": json.dumps({"preset": args.preset}),
        "ANTMETER_AUTOMATION_INTERVAL_S": str(args.automation_interval_s),
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench_live_latency_") as tmp,
        running_topology(
            Path(tmp),
            admin_url=args.pg_admin_url,
            symbols=(args.symbol,),
            code_env=code_env,
            start=False,
        ) as topology,
    ):
        # this process uses the same stores, data directory and settings as the code server
        os.environ.update(topology.code_env)
        from antmeter_assets.definitions import defs
        from antmeter_assets.partitions import symbol_day_key
        from antmeter_resources import AntmeterSettings, MarketStoreResource

        settings = AntmeterSettings(data_dir=str(topology.data_dir))
        store = MarketStoreResource(url=topology.market_db_url)
        instance = topology.instance()
        t = time.monotonic()
        materialize_history(defs, instance, args.symbol, days)
        timings["history_s"] = time.monotonic() - t
        t = time.monotonic()
        gate = train_champion(defs, instance)
        timings["training_s"] = time.monotonic() - t
        champion_dir = topology.data_dir / "models" / MODEL_TYPE / "champion"
        if not (champion_dir / "registry.json").exists():
            raise SystemExit(f"no {MODEL_TYPE} champion after training: {gate}")
        # today's candles up to now, and predictions caught up to them, so the feed starts clean
        defs.resolve_job_def("harvest_job").execute_in_process(
            instance=instance,
            partition_key=symbol_day_key(args.symbol, days[-1]),
            tags={"antmeter/launched_by": "bench_setup"},
        )
        defs.resolve_job_def("predictions_job").execute_in_process(
            instance=instance, tags={"antmeter/launched_by": "bench_setup"}
        )

        # the services start on the simulated clock: it reads the current minute once they are up
        clock = SimulatedClock(
            origin=pd.Timestamp.now(tz="UTC").floor("min"), wall_start=time.time() + 45, speed=speed
        )
        topology.code_env.update(clock.env())
        os.environ.update(clock.env())
        t = time.monotonic()
        topology.start()
        timings["topology_start_s"] = time.monotonic() - t
        start_sensor(topology, "antmeter_automation")
        measured = [
            clock.origin + pd.Timedelta(minutes=k)
            for k in range(args.warmup_candles, args.warmup_candles + args.candles)
        ]
        poller = PredictionPoller(topology.market_db_url, args.symbol, since=clock.origin)
        poll_thread = threading.Thread(target=poller.run, daemon=True)
        poll_thread.start()
        feed_started = time.time()
        landings = feed(
            defs,
            instance,
            args.symbol,
            clock,
            lambda: all(m in poller.first_seen for m in measured),
            max_candles,
        )
        timings["feed_s"] = time.time() - feed_started
        poller.stop()
        poll_thread.join(timeout=10)

        ingested = {
            pd.Timestamp(t).tz_convert("UTC"): timestamp(i)
            for t, i in topology.sql(
                topology.market_db_url,
                "SELECT open_time, ingested_at FROM ohlcv WHERE symbol = :symbol AND open_time >= :since",
                symbol=args.symbol,
                since=clock.origin.to_pydatetime(),
            )
        }
        reported = {}
        for landing in landings:
            entries = instance.all_logs(landing.run_id, of_type=ET.ASSET_MATERIALIZATION)
            for open_time in ingested:  # a late landing can carry more than one candle
                if open_time <= landing.open_time and open_time not in reported:
                    reported[open_time] = entries[0].timestamp
        timelines = run_timelines(instance, feed_started)
        feature_runs = [r for r in timelines if "features" in r.assets]
        prediction_runs = [r for r in timelines if "predictions" in r.assets and r.as_of is not None]
        by_as_of = {r.as_of: r for r in prediction_runs}

        latencies, stages, per_run, missing = [], {s: [] for s in STAGES}, Counter(), []
        for open_time in measured:
            if open_time not in poller.first_seen:
                missing.append(str(open_time))
                continue
            run = next(
                (
                    r
                    for a, r in by_as_of.items()
                    if abs((a - poller.created_at[open_time]).total_seconds()) < 0.001
                ),
                None,
            )
            if run is None:
                missing.append(f"{open_time} (no predictions run with as_of {poller.created_at[open_time]})")
                continue
            per_run[run.run_id] += 1
            latency = poller.first_seen[open_time] - ingested[open_time]
            latencies.append(latency)
            for stage, value in candle_stages(
                ingested[open_time], reported[open_time], feature_runs, run, poller.first_seen[open_time]
            ).items():
                stages[stage].append(value)

        # the predictions step's work, replayed here for each daemon predictions run that served the feed
        replay_runs = []
        served = sorted(prediction_runs, key=lambda r: r.created)
        for run in served:
            times = sorted(
                t for t, c in poller.created_at.items() if abs((c - run.as_of).total_seconds()) < 0.001
            )
            if times:
                replay_runs.append((times[0] - pd.Timedelta(minutes=1), times[-1]))
        replay = replay_predictions(store, settings, champion_dir, args.symbol, replay_runs)
        if args.logs_dir:
            shutil.copytree(topology.root / "logs", args.logs_dir, dirs_exist_ok=True)

    step_ms = percentiles(np.asarray(stages["predictions_step"]) * 1e3)
    latency = percentiles(latencies)
    inference = replay["model_inference_ms"]
    result = {
        "bench": "live_latency",
        "device": f"{os.cpu_count()} CPU cores, daemon + webserver + code server + Postgres on this machine",
        "candles_measured": len(latencies),
        "candles_missing": missing,
        "feed_interval_s": args.feed_interval_s,
        "compression": round(speed, 2),
        "candles_fed": len(landings),
        "automation_interval_s": args.automation_interval_s,
        "latency_s": latency,
        "stages_s": {s: percentiles(v) for s, v in stages.items()},
        "grouped_s": {
            g: percentiles(np.sum([stages[s] for s in members], axis=0)) for g, members in GROUPS.items()
        },
        "predictions_runs": len(per_run),
        "candles_per_predictions_run": percentiles(per_run.values()),
        "features_runs": len(feature_runs),
        "labels_runs": sum("labels" in r.assets for r in timelines),
        "failed_runs": sum(r.status == "FAILURE" for r in timelines),
        "predictions_step_ms": step_ms,
        "replay_of_predictions_step_ms": {k: v for k, v in replay.items() if k.endswith("_ms")},
        "model_precision": replay["precision"],
        "champion_gate": gate,
        "reference": {
            "what": "the model's own ONNX inference for the same windows, measured in this run",
            "model_inference_ms_p50": inference.get("p50"),
            "end_to_end_over_inference_p50": (
                round(latency["p50"] * 1e3 / inference["p50"], 1)
                if latency.get("p50") and inference.get("p50")
                else None
            ),
        },
        "setup_s": {k: round(v, 1) for k, v in timings.items()},
        "total_s": round(time.monotonic() - started, 1),
    }
    return result


if __name__ == "__main__":
    output = main()
    print(json.dumps(output, default=str))
