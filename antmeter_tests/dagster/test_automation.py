"""Schedules, sensors and declarative automation, evaluated against a real ephemeral instance."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from antmeter.market.store import OHLCV
from antmeter_assets import automation, market, news
from antmeter_assets.definitions import defs
from antmeter_resources import AlertWebhookResource, AntmeterSettings, MarketStoreResource
from antmeter_tests.dagster.conftest import SYMBOL, check_results, symbol_day

UTC = dt.UTC
AS_OF = "2024-01-03T12:00:00+00:00"
# -- harvest schedule ---------------------------------------------------------------------------


@pytest.fixture
def two_symbols(instance) -> dg.DagsterInstance:
    instance.add_dynamic_partitions("symbols", ["ETHUSDT"])
    return instance


@pytest.fixture
def persistent() -> Iterator[dg.DagsterInstance]:
    """A test instance on disk: schedule contexts need an instance reference, which ephemeral ones lack."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("symbols", [SYMBOL, "ETHUSDT"])
        yield instance


def harvest_keys(instance, when: dt.datetime) -> list[str]:
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
    requests = automation.harvest_schedule(context)
    assert all(r.tags[automation.SCHEDULE_TAG] == "harvest_schedule" for r in requests)
    return [str(r.partition_key) for r in requests]


def test_harvest_schedule_requests_today_for_every_symbol(persistent):
    keys = harvest_keys(persistent, dt.datetime(2024, 1, 3, 12, 0, tzinfo=UTC))
    assert keys == ["2024-01-03|BTCUSDT", "2024-01-03|ETHUSDT"]
    # just after the first 5 minutes of the day: today only
    assert harvest_keys(persistent, dt.datetime(2024, 1, 3, 0, 5, tzinfo=UTC)) == keys


def test_harvest_schedule_also_requests_yesterday_in_the_first_minutes(persistent):
    keys = harvest_keys(persistent, dt.datetime(2024, 1, 3, 0, 4, tzinfo=UTC))
    assert keys == ["2024-01-02|BTCUSDT", "2024-01-02|ETHUSDT", "2024-01-03|BTCUSDT", "2024-01-03|ETHUSDT"]


def test_harvest_schedule_follows_a_configured_clock(persistent, monkeypatch):
    monkeypatch.setenv("ANTMETER_NOW", "2024-01-05T00:02:00")
    keys = harvest_keys(persistent, dt.datetime(2024, 1, 3, 12, 0, tzinfo=UTC))
    assert keys == ["2024-01-04|BTCUSDT", "2024-01-04|ETHUSDT", "2024-01-05|BTCUSDT", "2024-01-05|ETHUSDT"]


def test_harvest_schedule_requests_are_valid_partitions_of_the_harvest_job(persistent):
    schedule = defs.get_schedule_def("harvest_schedule")
    context = dg.build_schedule_context(
        instance=persistent,
        scheduled_execution_time=dt.datetime(2024, 1, 3, 0, 1, tzinfo=UTC),
        repository_def=defs.get_repository_def(),
    )
    data = schedule.evaluate_tick(context)
    assert data.skip_message is None
    assert len(data.run_requests) == 4
    assert len({r.run_key for r in data.run_requests}) == 4  # several requests per tick need distinct keys
    job = defs.resolve_job_def("harvest_job")
    assert job.name == schedule.job_name
    valid = set(
        job.partitions_def.get_partition_keys(
            current_time=dt.datetime(2024, 1, 3, 0, 1, tzinfo=UTC), dynamic_partitions_store=persistent
        )
    )
    assert {str(r.partition_key) for r in data.run_requests} <= valid


# -- retrain_on_drift bookkeeping (the decisions themselves: test_retrain_sensor.py, on real reports) -----


def report_gate(instance, gate: str, model_type: str = "lstm", serving: str = "1", at: str = AS_OF) -> None:
    """A gate outcome as the champion asset records it (the keys the sensor reads)."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=f"{model_type}_champion",
            metadata={"gate": gate, "champion_version": serving, "gated_at": at},
        )
    )


def test_drift_sensor_skips_without_a_report(instance):
    context = dg.build_sensor_context(
        instance=instance, resources={"settings": AntmeterSettings(), "store": MarketStoreResource()}
    )
    result = automation.retrain_on_drift(context)
    assert isinstance(result, dg.SkipReason) and "no verification report yet" in result.skip_message
    assert context.cursor is None


def test_rejection_streaks_are_per_model_type():
    """One rejected incremental run gates three types: each type's streak is 1, not 3."""
    with dg.instance_for_test() as instance:
        for model_type in ("lstm", "transformer", "patchtst"):
            report_gate(instance, "rejected", model_type)
        assert [automation.rejection_streak(instance, t) for t in ("lstm", "transformer", "patchtst")] == [
            1,
            1,
            1,
        ]
        for gate in ("rejected", "promoted", "rejected", "rejected"):
            report_gate(instance, gate, "lstm", serving="12" if gate == "promoted" else "9")
        history = automation.gate_history(instance, "lstm")
        assert history.rejection_streak == 2 and automation.rejection_streak(instance, "transformer") == 1
        assert history.last_ended_at == pd.Timestamp(AS_OF) and history.serving_version == "9"


# -- run_failure_alert ----------------------------------------------------------------------------


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A loopback HTTP server that records the JSON bodies POSTed to it."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(
                {"path": self.path, "content_type": self.headers["Content-Type"], "json": json.loads(body)}
            )
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/antmeter", received
    finally:
        server.shutdown()
        server.server_close()


@dg.op
def explode():
    raise RuntimeError("candles on fire")


@dg.job(tags={"antmeter/stage": "test"})
def exploding_job():
    explode()


def test_run_failure_alert_posts_the_failed_run_to_the_webhook(instance, webhook):
    url, received = webhook
    result = exploding_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    failure = next(
        e
        for e in instance.all_logs(result.run_id)
        if e.is_dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE
    ).dagster_event
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=run,
        resources={"alerts": AlertWebhookResource(url=url)},
    ).for_run_failure()
    automation.run_failure_alert(context)
    (posted,) = received
    assert posted["path"] == "/hooks/antmeter" and posted["content_type"] == "application/json"
    payload = posted["json"]
    assert payload["event"] == "run_failure"
    assert payload["job"] == "exploding_job" and payload["run_id"] == result.run_id
    assert payload["tags"]["antmeter/stage"] == "test"
    assert "explode" in payload["error"]


def test_alert_webhook_reports_delivery_failures(webhook):
    url, received = webhook
    assert AlertWebhookResource(url=url).post({"event": "x"})
    assert received[-1]["json"] == {"event": "x"}
    assert not AlertWebhookResource(url=None).post({"event": "y"})
    # nothing listens on a closed port: delivery fails without raising
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()
    assert not AlertWebhookResource(url=f"http://127.0.0.1:{port}/", timeout_s=2.0).post({"event": "z"})


# -- declarative automation of features / labels -------------------------------------------------

NOW = dt.datetime(2024, 1, 3, 12, 1, tzinfo=UTC)
YESTERDAY, TODAY = "2024-01-02", "2024-01-03"
DOWNSTREAM = dg.AssetSelection.assets("features", "labels")


def requested(result, asset: str) -> set[str]:
    return {str(k) for k in result.get_requested_partitions(dg.AssetKey(asset))}


def test_features_and_labels_follow_candles_only_after_blocking_checks_pass(
    two_symbols, pipeline, monkeypatch
):
    monkeypatch.setenv("ANTMETER_NOW", "2024-01-03T12:00:30")
    instance = two_symbols
    tick = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=DOWNSTREAM, evaluation_time=NOW
    )
    assert tick.total_requested == 0  # the first tick only records state

    for symbol in (SYMBOL, "ETHUSDT"):
        assert pipeline.materialize([market.ohlcv], symbol_day(YESTERDAY, symbol)).success
    for day in (YESTERDAY, TODAY):
        assert pipeline.materialize([news.news_articles, news.sentiment_hourly], day).success
    assert pipeline.materialize([market.ohlcv], symbol_day(TODAY)).success
    # ETHUSDT's live partition holds a corrupt candle (at 18:00, later than the source has): its
    # materialization is recorded, but the blocking OHLC check fails
    pipeline.insert_raw_candles(
        [
            {
                "open_time": pd.Timestamp(f"{TODAY} 18:00", tz="UTC"),
                "open": 105.0,
                "high": 100.0,
                "low": 110.0,
                "close": 105.0,
                "volume": 3.0,
            }
        ],
        symbol="ETHUSDT",
    )
    corrupt = pipeline.materialize([market.ohlcv], symbol_day(TODAY, "ETHUSDT"))
    assert not corrupt.success and not check_results(corrupt)["ohlc_consistent"].passed

    tick = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=DOWNSTREAM, evaluation_time=NOW, cursor=tick.cursor
    )
    # today's features and labels, and yesterday's labels (their horizon reaches into today), for
    # the symbol whose checks passed; yesterday's features lack the day before (never harvested)
    assert requested(tick, "features") == {f"{TODAY}|{SYMBOL}"}
    assert requested(tick, "labels") == {f"{TODAY}|{SYMBOL}", f"{YESTERDAY}|{SYMBOL}"}

    # a newer passing harvest of another partition does not unblock ETHUSDT (check results are per
    # partition), and a dep window with one failed partition stays blocked
    assert pipeline.materialize([market.ohlcv], symbol_day(TODAY)).success
    tick = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=DOWNSTREAM, evaluation_time=NOW, cursor=tick.cursor
    )
    assert f"{TODAY}|ETHUSDT" not in requested(tick, "features")
    assert not {f"{TODAY}|ETHUSDT", f"{YESTERDAY}|ETHUSDT"} & requested(tick, "labels")

    # repair ETHUSDT: the bad row is removed and the partition re-harvested, the checks pass
    engine = sa.create_engine(pipeline.store_url)
    with engine.begin() as conn:
        conn.execute(sa.delete(OHLCV).where(OHLCV.c.source == "corrupt"))
    engine.dispose()
    assert pipeline.materialize([market.ohlcv], symbol_day(TODAY, "ETHUSDT")).success
    tick = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=DOWNSTREAM, evaluation_time=NOW, cursor=tick.cursor
    )
    assert requested(tick, "features") == {f"{TODAY}|ETHUSDT"}
    assert requested(tick, "labels") == {f"{TODAY}|ETHUSDT", f"{YESTERDAY}|ETHUSDT"}


def test_alert_webhook_failure_never_logs_the_webhook_secret(caplog):
    """A Slack-style webhook URL is itself the secret: neither our log line nor httpx's may show it."""

    class Refusing(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    url = f"http://127.0.0.1:{port}/services/T0000/B0000/s3cr3tW3bh00kT0ken"
    try:
        with caplog.at_level(logging.DEBUG):
            assert not AlertWebhookResource(url=url, timeout_s=2.0).post({"event": "x"})
    finally:
        server.shutdown()
        server.server_close()
    assert f"alert webhook http://127.0.0.1:{port}/*** failed: HTTP 500" in caplog.messages
    assert any(r.name == "httpx" for r in caplog.records)  # httpx logged the request ...
    assert "s3cr3t" not in caplog.text  # ... with the secret masked


# -- symbols: one rule where partitions are added and harvested ----------------------------------


def test_add_symbols_validates_before_adding_partitions(persistent):
    from antmeter.market.symbols import InvalidSymbolError
    from antmeter_assets.partitions import add_symbols

    assert add_symbols(persistent, ["SOLUSDT", "BTCUSDT", "SOLUSDT"]) == ["SOLUSDT"]
    for hostile in ("../../../escaped", "BTC.A", "BTC\x00USDT"):
        with pytest.raises(InvalidSymbolError, match="ANTMETER_SYMBOL_PATTERN"):
            add_symbols(persistent, ["XRPUSDT", hostile])  # all or nothing
    assert sorted(persistent.get_dynamic_partitions("symbols")) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def test_harvest_skips_partition_keys_outside_the_symbol_rule(persistent, caplog):
    persistent.add_dynamic_partitions("symbols", ["../../../escaped"])  # e.g. added in the UI
    with caplog.at_level(logging.WARNING, logger="antmeter_assets.automation"):
        keys = harvest_keys(persistent, dt.datetime(2024, 1, 3, 12, 0, tzinfo=UTC))
    assert keys == ["2024-01-03|BTCUSDT", "2024-01-03|ETHUSDT"]
    assert any("not a valid symbol" in m for m in caplog.messages)


def test_main_job_refuses_invalid_symbols(capsys):
    from antmeter_assets import main_job

    with pytest.raises(SystemExit) as exited:
        main_job.run(["--symbols", "BTCUSDT,../../etc", "--days", "0"])
    assert exited.value.code == 2
    assert "--symbols" in capsys.readouterr().err
