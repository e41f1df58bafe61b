"""Each kind of automation, once, under the real daemon of the deployed topology: the per-minute
harvest schedule, declarative automation (features after new candles) and the run-failure sensor
posting to an alert webhook. ``ANTMETER_AUTOMATION=on`` starts them all by default; the sensor
intervals are shortened to 5 s by environment.

Tests share one topology and run in file order; each waits only for its own evidence.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from antmeter_deploy.topology import LOCATION, REPOSITORY, Topology

pytestmark = pytest.mark.integration

SYMBOL = "BTCUSDT"
# The partitions start one day before the simulator's history (2024-01-01): harvesting that day is
# a deterministic failure of the candle source, the kind of run the failure sensor must report.
PARTITIONS_START = "2023-12-31"
SENSOR_INTERVAL_S = 5
SCHEDULE_TAG = "antmeter/launched_by"


class AlertReceiver:
    """A loopback webhook endpoint: records every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.received = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.received:
                    receiver.payloads.append(json.loads(body))
                    receiver.received.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def wait_for(self, predicate, timeout_s: float) -> dict[str, Any] | None:
        """The first payload matching ``predicate`` (waiting up to ``timeout_s``), else None."""
        with self.received:
            self.received.wait_for(lambda: any(predicate(p) for p in self.payloads), timeout=timeout_s)
            return next((p for p in self.payloads if predicate(p)), None)


@pytest.fixture(scope="module")
def alerts() -> Iterator[AlertReceiver]:
    receiver = AlertReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def topology_options(alerts: AlertReceiver) -> dict[str, Any]:
    return {
        "symbols": (SYMBOL,),
        "code_env": {
            "ANTMETER_AUTOMATION": "on",
            "ANTMETER_SENSOR_INTERVAL_S": str(SENSOR_INTERVAL_S),
            "ANTMETER_AUTOMATION_INTERVAL_S": str(SENSOR_INTERVAL_S),
            "ANTMETER_START_DATE": PARTITIONS_START,
            "ANTMETER_ALERT_WEBHOOK_URL": alerts.url,
        },
    }


@pytest.fixture(scope="module")
def feature_inputs(topology: Topology) -> list[str]:
    """Run ids of the inputs of today's features besides today's candles, launched through the
    webserver while the schedule test waits for its minute tick: the previous day's candles (warm-up) and today's news sentiment."""
    yesterday = str((pd.Timestamp(today()) - pd.Timedelta(days=1)).date())
    return [
        topology.launch_run("harvest_job", partition_tags(yesterday, SYMBOL)),
        topology.launch_run("news_job", {"dagster/partition": today()}),
    ]


def today() -> str:
    return str(pd.Timestamp.now(tz="UTC").date())


def partition_tags(day: str, symbol: str) -> dict[str, str]:
    key = dg.MultiPartitionKey({"date": day, "symbol": symbol})
    return {
        "dagster/partition": str(key),
        **{f"dagster/partition/{d.dimension_name}": d.partition_key for d in key.dimension_keys},
    }


def runs_tagged(topology: Topology, **tags: str) -> list[dg.DagsterRun]:
    return list(topology.instance().get_runs(dg.RunsFilter(tags=tags)))


def successful_run(
    topology: Topology, job_name: str | None = None, asset: str | None = None, **tags: str
) -> dg.DagsterRun | None:
    """A run with these tags (and job, and ``asset`` in its selection) that succeeded; a failed one
    raises with its errors."""
    for run in runs_tagged(topology, **tags):
        if job_name and run.job_name != job_name:
            continue
        if asset and dg.AssetKey(asset) not in (run.asset_selection or set()):
            continue
        if run.status == dg.DagsterRunStatus.FAILURE:
            raise AssertionError(
                f"run {run.run_id} {run.job_name} {tags} failed:\n{topology.run_failure_messages(run.run_id)}"
            )
        if run.status == dg.DagsterRunStatus.SUCCESS:
            return run
    return None


def materialized_partitions(topology: Topology, asset: str) -> set[str]:
    return set(topology.instance().get_materialized_partitions(dg.AssetKey(asset)))


def sensor_ticks(topology: Topology, sensor_name: str) -> list[dict[str, Any]]:
    data = topology.graphql(
        SENSOR_TICKS,
        {
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": REPOSITORY,
                "sensorName": sensor_name,
            }
        },
    )
    sensor = data["sensorOrError"]
    assert sensor["__typename"] == "Sensor", sensor
    assert sensor["sensorState"]["status"] == "RUNNING"
    return sensor["sensorState"]["ticks"]


def test_run_failure_sensor_posts_the_failed_run_to_the_webhook(topology: Topology, alerts: AlertReceiver):
    # a run-status sensor only reports failures after its first tick: wait for it
    topology.wait_until(lambda: sensor_ticks(topology, "run_failure_alert"), 60, "a run_failure_alert tick")
    tags = partition_tags(PARTITIONS_START, SYMBOL)
    run_id = topology.launch_run("harvest_job", tags)
    run = topology.wait_for_run(run_id, timeout_s=120, statuses=(dg.DagsterRunStatus.FAILURE,))
    assert "before SimulatorConfig.anchor_date" in topology.run_failure_messages(run.run_id)

    payload = alerts.wait_for(lambda p: p.get("run_id") == run_id, timeout_s=60)
    assert payload is not None, f"no alert for {run_id}; received {alerts.payloads}"
    assert payload["event"] == "run_failure"
    assert payload["job"] == "harvest_job"
    assert payload["tags"]["dagster/partition"] == tags["dagster/partition"]
    assert "harvest_job" in payload["error"]
    # no alerts for runs that did not fail
    assert [p["run_id"] for p in alerts.payloads] == [run_id]


def test_harvest_schedule_refreshes_todays_partition_every_minute(
    topology: Topology, feature_inputs: list[str]
):
    # (feature_inputs, for the next test, are launched here: they run while this waits for the tick)
    run = topology.wait_until(
        lambda: successful_run(
            topology,
            "harvest_job",
            **{SCHEDULE_TAG: "harvest_schedule", "dagster/schedule_name": "harvest_schedule"},
        ),
        150,
        "a harvest_schedule run to succeed",
        interval_s=2,
    )
    # the schedule harvests the day of its tick (and, in a day's first 5 minutes, the previous day)
    tick = pd.Timestamp(run.tags[".dagster/scheduled_execution_time"]).tz_convert("UTC")
    days = {str(tick.date()), str((tick - pd.Timedelta(minutes=5)).date())}
    assert run.tags["dagster/partition/symbol"] == SYMBOL
    assert run.tags["dagster/partition/date"] in days
    assert run.tags["dagster/partition"] in materialized_partitions(topology, "ohlcv")
    # today's partition holds the candles closed so far, none from the future
    [(rows, newest)] = topology.sql(
        topology.market_db_url,
        "SELECT count(*), max(open_time) FROM ohlcv WHERE symbol = :symbol AND open_time >= :start",
        symbol=SYMBOL,
        start=pd.Timestamp(today(), tz="UTC").to_pydatetime(),
    )
    now = pd.Timestamp.now(tz="UTC")
    assert 0 < rows <= (now - now.normalize()) // pd.Timedelta(minutes=1)
    assert pd.Timestamp(newest) + pd.Timedelta(minutes=1) <= now


def test_automation_materializes_features_after_new_candles(topology: Topology, feature_inputs: list[str]):
    # eager automation excludes partitions with missing inputs: features of today also read
    # yesterday's candles and today's sentiment (the feature_inputs runs); today's candles came
    # from the schedule
    for run_id in feature_inputs:
        topology.wait_for_run(run_id, timeout_s=120)

    partition = f"{today()}|{SYMBOL}"
    run = topology.wait_until(
        # (labels of the partition may be materialized in a run of their own first)
        lambda: successful_run(
            topology,
            asset="features",
            **{"dagster/sensor_name": "antmeter_automation", "dagster/partition": partition},
        ),
        150,
        "an antmeter_automation run for today's partition",
        interval_s=2,
    )
    assert run.tags[SCHEDULE_TAG] == "antmeter_automation"
    assert run.tags["dagster/from_automation_condition"] == "true"
    assert dg.AssetKey("features") in (run.asset_selection or set())

    materialization = (
        topology.instance()
        .fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("features"), asset_partitions=[partition]),
            limit=1,
        )
        .records[0]
    )
    assert materialization.run_id == run.run_id
    metadata = {k: v.value for k, v in materialization.asset_materialization.metadata.items()}
    assert metadata["rows"] > 0
    assert metadata["warmup_rows_read"] > 0  # yesterday's candles, harvested through the webserver
    frame = pd.read_parquet(metadata["path"])
    assert len(frame) == metadata["rows"]
    assert frame["open_time"].min() == pd.Timestamp(today(), tz="UTC")


SENSOR_TICKS = """
query SensorTicks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 10) { status timestamp runIds } } }
    ... on Error { message }
  }
}
"""
