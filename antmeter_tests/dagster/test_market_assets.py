"""The ``ohlcv`` asset and its checks, materialized on an ephemeral instance into a real market store.

Every check has a test that makes it fail. The store is the source of truth the checks read, so the
blocking checks are driven by rows written straight into the ``ohlcv`` table (a corrupt store: the
asset's own writes validate every row, so no source can produce them).
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from antmeter.market import quality
from antmeter.market.candles import DayWindow
from antmeter_assets import features, market
from antmeter_resources import AntmeterSettings, CandleSourceResource
from antmeter_tests.dagster.conftest import (
    SYMBOL,
    check_results,
    make_pipeline,
    step_error,
    symbol_day,
    write_candle_csv,
)
from antmeter_tests.factories import random_walk_candles

DAY = "2024-01-02"
BLOCKING = {name for name, _, blocking in market.OHLCV_CHECKS if blocking}
ALL_CHECKS = {name for name, _, _ in market.OHLCV_CHECKS}


@pytest.fixture
def any_store_pipeline(instance, tmp_path, store_url):
    """Simulator candles into SQLite and, in a second run of the test, PostgreSQL."""
    return make_pipeline(instance, tmp_path / "data", store_url)


def file_source(pipeline, candles: pd.DataFrame) -> None:
    """Serve ``candles`` through the ``file`` candle source."""
    directory = pipeline.data_dir.parent / "candle_files"
    write_candle_csv(candles, directory)
    pipeline.use_candles(CandleSourceResource(kind="file", file_dir=str(directory)))


def day_candles(n: int = 1440, day: str = DAY, seed: int = 0) -> pd.DataFrame:
    return random_walk_candles(n=n, start=f"{day} 00:00", seed=seed)


def test_past_day_is_stored_checked_and_idempotent(any_store_pipeline):
    pipeline = any_store_pipeline
    key = symbol_day(DAY)
    first = pipeline.materialize([market.ohlcv], key)
    assert first.success
    meta = first.asset_materializations_for_node("ohlcv")[0].metadata
    assert (
        meta["rows"].value == 1440 and meta["upserted"].value == 1440 and meta["source"].value == "simulator"
    )
    assert meta["first_open_time"].value == "2024-01-02 00:00:00+00:00"
    assert meta["last_open_time"].value == "2024-01-02 23:59:00+00:00"
    checks = check_results(first)
    assert set(checks) == ALL_CHECKS and all(c.passed for c in checks.values())
    assert pipeline.stored_rows() == 1440
    stored = pipeline.market().read_candles(SYMBOL, "1m")

    again = pipeline.materialize([market.ohlcv], key)
    assert again.success
    assert again.asset_materializations_for_node("ohlcv")[0].metadata["rows"].value == 1440
    assert pipeline.stored_rows() == 1440
    pd.testing.assert_frame_equal(pipeline.market().read_candles(SYMBOL, "1m"), stored)
    records = pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("ohlcv"), asset_partitions=[str(key)]), limit=10
    ).records
    assert len(records) == 2


def test_missing_minutes_fail_no_gaps_as_a_warning(pipeline):
    candles = day_candles()
    holed = candles.drop(index=[*range(100, 110), 700]).reset_index(drop=True)
    file_source(pipeline, holed)
    result = pipeline.materialize([market.ohlcv], symbol_day(DAY))
    assert result.success  # a warning does not fail the run
    checks = check_results(result)
    gap = checks["no_gaps"]
    assert not gap.passed and gap.severity == dg.AssetCheckSeverity.WARN
    assert gap.metadata["missing"].value == 11
    assert gap.metadata["gaps"].value == [
        "2024-01-02 01:40:00+00:00 .. 2024-01-02 01:49:00+00:00",
        "2024-01-02 11:40:00+00:00 .. 2024-01-02 11:40:00+00:00",
    ]
    assert all(checks[name].passed for name in ALL_CHECKS - {"no_gaps"})
    assert pipeline.stored_rows() == 1429


CORRUPTIONS = {
    # a bad row at 15:00, a minute the file does not cover (the source cannot overwrite it)
    "ohlc_consistent": {"open": 105.0, "high": 100.0, "low": 110.0, "close": 105.0, "volume": 3.0},
    "non_negative_volume": {"open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5, "volume": -5.0},
    "no_missing_values": {"open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5, "volume": np.inf},
}


@pytest.mark.parametrize("check_name", list(CORRUPTIONS))
def test_corrupt_store_fails_the_blocking_check(any_store_pipeline, check_name):
    pipeline = any_store_pipeline
    file_source(pipeline, day_candles(n=600))
    bad_time = pd.Timestamp(f"{DAY} 15:00", tz="UTC")
    pipeline.market()  # schema first
    pipeline.insert_raw_candles([{"open_time": bad_time, **CORRUPTIONS[check_name]}])
    result = pipeline.materialize([market.ohlcv], symbol_day(DAY))
    assert not result.success
    assert "blocking asset check failed" in step_error(result)
    checks = check_results(result)
    failed = checks[check_name]
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert failed.metadata["examples"].value == [str(bad_time)]
    assert all(checks[name].passed for name in BLOCKING - {check_name})
    # the materialization itself is recorded (the check describes it), and the store kept the bad row
    assert len(result.asset_materializations_for_node("ohlcv")) == 1
    assert pipeline.stored_rows() == 601


def test_unique_open_times(pipeline):
    """The store's primary key (symbol, interval, open_time) makes duplicates impossible to store, so
    the check cannot be failed through a materialization; it guards stores without that key. Shown
    here: the key rejects a duplicate, and the rule and the check mapping fail on a duplicated frame."""
    pipeline.market()
    row = {
        "open_time": pd.Timestamp(f"{DAY} 00:00", tz="UTC"),
        "open": 1.0,
        "high": 1.0,
        "low": 1.0,
        "close": 1.0,
        "volume": 1.0,
    }
    pipeline.insert_raw_candles([row])
    with pytest.raises(sa.exc.IntegrityError):
        pipeline.insert_raw_candles([row])

    candles = day_candles(n=30)
    doubled = pd.concat([candles, candles.iloc[[4]]], ignore_index=True).sort_values("open_time")
    assert quality.duplicate_open_times(candles).passed
    assert not quality.duplicate_open_times(doubled).passed
    settings = AntmeterSettings(data_dir=str(pipeline.data_dir))
    now = pd.Timestamp("2024-01-05", tz="UTC")
    results = {r.check_name: r for r in market.ohlcv_check_results(doubled, DayWindow.of(DAY), now, settings)}
    unique = results["unique_open_times"]
    assert not unique.passed and unique.severity == dg.AssetCheckSeverity.ERROR
    assert unique.metadata["examples"].value == [str(candles["open_time"].iloc[4])]


@pytest.mark.parametrize(
    ("last_candle", "fresh"), [("10:00", False), ("11:55", True)], ids=["stale", "fresh"]
)
def test_fresh_live_partition(pipeline, monkeypatch, last_candle, fresh):
    # "now" is 12:00 on DAY: DAY is the live (still filling) partition
    monkeypatch.setenv("ANTMETER_NOW", f"{DAY}T12:00:00")
    candles = day_candles()
    file_source(pipeline, candles[candles["open_time"] <= pd.Timestamp(f"{DAY} {last_candle}", tz="UTC")])
    result = pipeline.materialize([market.ohlcv], symbol_day(DAY))
    assert result.success
    check = check_results(result)["fresh_live_partition"]
    assert check.passed is fresh and check.severity == dg.AssetCheckSeverity.WARN
    newest_close = pd.Timestamp(f"{DAY} {last_candle}", tz="UTC") + pd.Timedelta(minutes=1)
    assert check.metadata["newest_close"].value == str(newest_close)
    assert (
        check.metadata["age_minutes"].value
        == (pd.Timestamp(f"{DAY} 12:00", tz="UTC") - newest_close).seconds / 60
    )


def test_staleness_does_not_apply_to_historical_partitions(pipeline, monkeypatch):
    monkeypatch.setenv("ANTMETER_NOW", "2024-01-04T12:00:00")
    candles = day_candles()
    file_source(pipeline, candles[candles["open_time"] < pd.Timestamp(f"{DAY} 06:00", tz="UTC")])
    result = pipeline.materialize([market.ohlcv], symbol_day(DAY))
    checks = check_results(result)
    assert checks["fresh_live_partition"].passed
    assert checks["fresh_live_partition"].description == "historical partition: staleness does not apply"
    assert not checks["no_gaps"].passed  # the 18 hours after 06:00 are missing from a closed day


def test_live_partition_counts_gaps_only_up_to_now(pipeline, monkeypatch):
    monkeypatch.setenv("ANTMETER_NOW", f"{DAY}T12:00:30")
    pipeline.use_candles(CandleSourceResource(kind="simulator"))
    result = pipeline.materialize([market.ohlcv], symbol_day(DAY))
    assert result.success
    checks = check_results(result)
    assert all(c.passed for c in checks.values()), {k: c.description for k, c in checks.items()}
    # closed candles only: the 11:59 candle closed at 12:00, the 12:00 candle is still open
    assert pipeline.stored_rows() == 720


def test_failed_blocking_check_stops_downstream_steps_of_the_run(pipeline):
    file_source(pipeline, day_candles(n=900))
    key = symbol_day(DAY)
    clean = pipeline.materialize([market.ohlcv, features.features], key)
    assert clean.success and len(clean.asset_materializations_for_node("features")) == 1
    features_file = pipeline.data_dir / "features" / f"symbol={SYMBOL}" / f"date={DAY}.parquet"
    assert features_file.exists()
    features_file.unlink()

    pipeline.insert_raw_candles(
        [{"open_time": pd.Timestamp(f"{DAY} 20:00", tz="UTC"), **CORRUPTIONS["ohlc_consistent"]}]
    )
    blocked = pipeline.materialize([market.ohlcv, features.features], key)
    assert not blocked.success
    assert not check_results(blocked)["ohlc_consistent"].passed
    assert blocked.asset_materializations_for_node("features") == []
    assert "features" not in {e.step_key for e in blocked.all_events if e.is_step_success}
    assert not features_file.exists()
    records = pipeline.instance.fetch_materializations(dg.AssetKey("features"), limit=10).records
    assert [r.run_id for r in records] == [clean.run_id]


def test_malformed_source_row_fails_the_run_and_writes_nothing(pipeline):
    file_source(pipeline, day_candles(n=600))
    key = symbol_day(DAY)
    assert pipeline.materialize([market.ohlcv], key).success
    before = pipeline.market().read_candles(SYMBOL, "1m")
    assert len(before) == 600

    # the whole day, with new values, and one malformed volume in data row 700
    longer = day_candles(n=1440, seed=1).astype({"volume": "object"})
    longer.loc[700, "volume"] = "12..5"
    file_source(pipeline, longer)
    result = pipeline.materialize([market.ohlcv], key)
    assert not result.success
    message = step_error(result)
    assert "row 700" in message and "field 'volume'" in message and "'12..5'" in message
    assert "BTCUSDT.csv" in message
    pd.testing.assert_frame_equal(pipeline.market().read_candles(SYMBOL, "1m"), before)
    assert check_results(result) == {}


# -- issue 12: off-grid rows, exchange outages, symbols --------------------------------------------


def test_off_grid_row_already_in_the_store_fails_on_interval_grid(any_store_pipeline):
    pipeline = any_store_pipeline
    file_source(pipeline, day_candles(n=600))
    off_grid = pd.Timestamp(f"{DAY} 15:00:30", tz="UTC")  # stored before the grid was enforced
    pipeline.market()
    pipeline.insert_raw_candles(
        [{"open_time": off_grid, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5, "volume": 1.0}]
    )
    result = pipeline.materialize([market.ohlcv], symbol_day(DAY))
    assert not result.success
    checks = check_results(result)
    grid = checks["on_interval_grid"]
    assert not grid.passed and grid.severity == dg.AssetCheckSeverity.ERROR
    assert grid.metadata["examples"].value == [str(off_grid)]
    assert all(checks[name].passed for name in BLOCKING - {"on_interval_grid"})


def test_exchange_outage_is_recorded_in_metadata_and_the_gaps_check(pipeline):
    from antmeter_testkit.servers.binance_server import FakeBinance, make_klines

    start_ms = int(pd.Timestamp(DAY, tz="UTC").timestamp() * 1000)
    rows = make_klines(start_ms, 1440, seed=4)
    del rows[300:360]  # the exchange was down 05:00-06:00
    with FakeBinance({(SYMBOL, "1m"): rows}) as exchange:
        pipeline.use_candles(CandleSourceResource(kind="binance", binance_base_url=exchange.base_url))
        result = pipeline.materialize([market.ohlcv], symbol_day(DAY))
    assert result.success  # an outage is not an error
    outage = "2024-01-02 05:00:00+00:00 .. 2024-01-02 06:00:00+00:00"
    meta = result.asset_materializations_for_node("ohlcv")[0].metadata
    assert meta["rows"].value == 1380 and meta["exchange_outages"].value == [outage]
    gap = check_results(result)["no_gaps"]
    assert not gap.passed and gap.metadata["missing"].value == 60
    assert gap.metadata["exchange_outages"].value == [outage]
    assert "1 confirmed exchange outage" in gap.description


def test_symbol_partition_outside_the_rule_reads_and_writes_nothing(pipeline, tmp_path):
    escaped = "../../../escaped"
    (tmp_path / "escaped.csv").write_text("must never be read")
    pipeline.instance.add_dynamic_partitions("symbols", [escaped])
    file_source(pipeline, day_candles(n=60))
    result = pipeline.materialize([market.ohlcv], symbol_day(DAY, symbol=escaped))
    assert not result.success
    assert "not a valid symbol" in step_error(result)
    assert pipeline.market().symbols() == []


def test_candle_export_skips_stored_symbols_outside_the_rule(pipeline):
    pipeline.market()
    good = {"open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5, "volume": 1.0}
    pipeline.insert_raw_candles([{"open_time": pd.Timestamp(f"{DAY} 01:00", tz="UTC"), **good}])
    pipeline.insert_raw_candles(
        [{"open_time": pd.Timestamp(f"{DAY} 01:00", tz="UTC"), **good}], symbol="../../outside"
    )
    result = pipeline.materialize([market.candle_export], DAY)
    assert result.success
    meta = result.asset_materializations_for_node("candle_export")[0].metadata
    assert meta["rows"].value == {SYMBOL: 1} and meta["skipped_symbols"].value == ["../../outside"]
    exports = pipeline.data_dir / "exports" / f"date={DAY}"
    assert sorted(p.name for p in exports.iterdir()) == [f"{SYMBOL}-1m.csv", f"{SYMBOL}-1m.parquet"]
    assert not (pipeline.data_dir / "outside-1m.csv").exists()
