"""A run submitted to the deployed webserver is queued, dequeued by the daemon, executed on the code
server and recorded in PostgreSQL: Dagster's run and event-log tables and the market store."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest

from antmeter_deploy.topology import LOCATION, Topology, free_ports

pytestmark = pytest.mark.integration

SYMBOL = "BTCUSDT"
DAY = "2024-03-01"  # a complete past day of the simulator (its history starts 2024-01-01)


def partition_tags(day: str, symbol: str) -> dict[str, str]:
    """The tags Dagster itself puts on a run of one (date, symbol) multi-partition."""
    key = dg.MultiPartitionKey({"date": day, "symbol": symbol})
    return {
        "dagster/partition": str(key),
        **{f"dagster/partition/{d.dimension_name}": d.partition_key for d in key.dimension_keys},
    }


def test_run_launched_through_webserver_is_recorded_in_postgres(topology: Topology):
    topology.add_dynamic_partition("symbols", SYMBOL)
    assert topology.instance().get_dynamic_partitions("symbols") == [SYMBOL]

    tags = partition_tags(DAY, SYMBOL)
    assert tags["dagster/partition"] == f"{DAY}|{SYMBOL}"  # dimensions in alphabetical order
    run_id = topology.launch_run("harvest_job", tags)
    run = topology.wait_for_run(run_id, timeout_s=150)
    assert run.job_name == "harvest_job"

    # Dagster's own tables in its Postgres database
    [(status,)] = topology.sql(
        topology.dagster_db_url, "SELECT status FROM runs WHERE run_id = :run_id", run_id=run_id
    )
    assert status == "SUCCESS"
    events = topology.sql(
        topology.dagster_db_url,
        "SELECT dagster_event_type, partition FROM event_logs WHERE run_id = :run_id AND asset_key = :asset_key",
        run_id=run_id,
        asset_key=dg.AssetKey("ohlcv").to_string(),
    )
    assert ("ASSET_MATERIALIZATION", tags["dagster/partition"]) in {tuple(row) for row in events}

    # launched through the webserver + queued run coordinator + daemon, not execute_in_process: the
    # submission was enqueued, the run came from the gRPC code location, and the daemon's launcher
    # sent it to our code server
    run_tags = dict(
        topology.sql(
            topology.dagster_db_url, "SELECT key, value FROM run_tags WHERE run_id = :run_id", run_id=run_id
        )
    )
    assert {k: run_tags[k] for k in tags} == tags
    assert run_tags["dagster/code_location"] == LOCATION
    assert json.loads(run_tags[".dagster/grpc_info"]) == {"host": "127.0.0.1", "port": topology.grpc_port}
    lifecycle = [
        row[0]
        for row in topology.sql(
            topology.dagster_db_url,
            "SELECT dagster_event_type FROM event_logs WHERE run_id = :run_id AND dagster_event_type LIKE 'PIPELINE_%' "
            "ORDER BY id",
            run_id=run_id,
        )
    ]
    assert lifecycle == ["PIPELINE_ENQUEUED", "PIPELINE_STARTING", "PIPELINE_START", "PIPELINE_SUCCESS"]
    assert run.remote_job_origin is not None
    assert run.remote_job_origin.location_name == LOCATION

    # the market store: one UTC day of minute candles, each minute exactly once
    start = dt.datetime.fromisoformat(DAY).replace(tzinfo=dt.UTC)
    [(rows, distinct, first, last)] = topology.sql(
        topology.market_db_url,
        "SELECT count(*), count(DISTINCT open_time), min(open_time), max(open_time) FROM ohlcv "
        "WHERE symbol = :symbol AND interval = '1m' AND open_time >= :start AND open_time < :end",
        symbol=SYMBOL,
        start=start,
        end=start + dt.timedelta(days=1),
    )
    assert (rows, distinct) == (1440, 1440)
    assert (first, last) == (start, start + dt.timedelta(minutes=1439))


def test_services_share_the_projects_postgres_instance(topology: Topology):
    instance = topology.instance()
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    # the run limits of dagster.yaml (under `concurrency: runs:`) are in force
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == 4
    assert {"key": "antmeter/stage", "value": "harvest", "limit": 2} in queue.tag_concurrency_limits
    # every required daemon (scheduler, sensors, run queue, automation, ...) heartbeats recently
    statuses = instance.get_daemon_statuses()
    assert set(statuses) == set(instance.get_required_daemon_types())
    assert {name: status.healthy for name, status in statuses.items()} == dict.fromkeys(statuses, True)


def test_the_services_ports_are_distinct(topology: Topology):
    assert topology.grpc_port != topology.webserver_port
    ports = free_ports(64)  # chosen together: never one port twice
    assert len(set(ports)) == 64
