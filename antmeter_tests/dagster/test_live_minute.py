"""The live minute: one run harvests every symbol's new candles and predicts on them, recorded as
``ohlcv`` (per symbol x day, with its OHLCV check evaluations) and ``predictions`` materializations;
the sensor requests one run per closed minute."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from antmeter.market.candles import CandleValidationError
from antmeter_assets import live
from antmeter_tests.dagster.conftest import SYMBOL

DAY = "2024-03-01"
OTHER = "ETHUSDT"


def run_minute(pipeline, monkeypatch, now: str) -> dg.ExecuteInProcessResult:
    monkeypatch.setenv("ANTMETER_NOW", now)
    return live.live_minute_job.execute_in_process(instance=pipeline.instance, resources=pipeline.resources)


def test_one_run_harvests_every_symbol_and_records_the_assets(pipeline, monkeypatch):
    pipeline.instance.add_dynamic_partitions("symbols", [OTHER])
    first = run_minute(pipeline, monkeypatch, f"{DAY}T12:00:30")
    assert first.success
    for symbol in (SYMBOL, OTHER):
        stats = pipeline.market().candle_stats(symbol, "1m")
        assert stats["rows"] == 720  # 00:00 .. 11:59, every closed minute of the day so far
        assert stats["last_open_time"] == pd.Timestamp(f"{DAY}T11:59", tz="UTC")
    materialized = {
        (e.asset_key.to_user_string(), e.partition) for e in first.get_asset_materialization_events()
    }
    assert materialized == {
        ("ohlcv", f"{DAY}|{SYMBOL}"),
        ("ohlcv", f"{DAY}|{OTHER}"),
        ("predictions", None),
    }
    checks = first.get_asset_check_evaluations()
    assert {(c.check_name, c.partition) for c in checks} >= {
        ("no_missing_values", f"{DAY}|{SYMBOL}"),
        ("fresh_live_partition", f"{DAY}|{OTHER}"),
    }
    assert all(c.passed for c in checks if c.blocking)
    [predictions] = [
        e for e in first.get_asset_materialization_events() if e.asset_key == dg.AssetKey("predictions")
    ]
    assert predictions.materialization.metadata["predictions"].value == 0  # no champion serves yet

    # the next minute: only the tail is upserted, each minute stays stored once
    second = run_minute(pipeline, monkeypatch, f"{DAY}T12:01:30")
    assert second.success
    stored = pipeline.market().read_candles(SYMBOL, "1m")
    assert len(stored) == stored["open_time"].nunique() == 721
    [ohlcv] = [
        e
        for e in second.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("ohlcv") and e.partition == f"{DAY}|{SYMBOL}"
    ]
    assert ohlcv.materialization.metadata["upserted"].value <= 2  # the last stored candle and the new one


def test_sensor_requests_one_run_per_closed_minute(pipeline, monkeypatch):
    monkeypatch.setenv("ANTMETER_NOW", f"{DAY}T12:00:05")
    context = dg.build_sensor_context(instance=pipeline.instance, cursor=None)
    request = live.live_minute_sensor(context)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == f"live-{DAY}T11:59:00+00:00"
    again = live.live_minute_sensor(
        dg.build_sensor_context(instance=pipeline.instance, cursor=context.cursor)
    )
    assert isinstance(again, dg.SkipReason)
    monkeypatch.setenv("ANTMETER_NOW", f"{DAY}T12:01:01")
    later = live.live_minute_sensor(
        dg.build_sensor_context(instance=pipeline.instance, cursor=context.cursor)
    )
    assert later.run_key == f"live-{DAY}T12:00:00+00:00"


def test_a_clock_ahead_of_the_wall_clock_is_the_one_candles_are_checked_against(pipeline, monkeypatch):
    """A replay's simulated clock may run ahead of the wall clock (compressed time): the harvest checks
    candle times against the pipeline's clock, not the machine's, and the news follow it too."""
    ahead = pd.Timestamp.now(tz="UTC").normalize() + pd.Timedelta(days=3)
    result = run_minute(pipeline, monkeypatch, f"{ahead.date()}T00:10:30")
    assert result.success
    stats = pipeline.market().candle_stats(SYMBOL, "1m", ahead, ahead + pd.Timedelta(days=1))
    assert stats["rows"] == 10
    assert stats["last_open_time"] == ahead + pd.Timedelta(minutes=9)
    # a candle beyond the pipeline's clock is still refused
    later = pipeline.market().read_candles(SYMBOL, "1m", ahead, ahead + pd.Timedelta(days=1)).tail(1)
    later = later.assign(open_time=ahead + pd.Timedelta(minutes=12))
    with pytest.raises(CandleValidationError, match="after now"):
        pipeline.market().upsert_candles(
            SYMBOL, "1m", later, source="test", now=ahead + pd.Timedelta(minutes=10, seconds=30)
        )
