"""Market data assets: minute candles per symbol × day, and the daily ETL export."""

import dagster as dg
import pandas as pd

from antmeter.market import quality
from antmeter.market.candles import DayWindow
from antmeter.market.symbols import InvalidSymbolError, path_under, validate_symbol
from antmeter_assets.partitions import (
    daily_partitions,
    day_of,
    symbol_and_day,
    symbol_day_partitions,
    utc_now,
)
from antmeter_resources import AntmeterSettings, CandleSourceResource, MarketStoreResource

# (check name, rule, blocking): blocking checks stop later steps of the same run from consuming
# a bad partition; gaps and staleness only warn (features/labels exclude gap rows themselves).
OHLCV_CHECKS: list[tuple[str, str, bool]] = [
    ("unique_open_times", "No two candles share an open time.", True),
    ("ohlc_consistent", "low <= open, close <= high for every candle.", True),
    ("non_negative_volume", "Volume is never negative.", True),
    ("no_missing_values", "No NaN or infinite prices or volumes.", True),
    ("on_interval_grid", "Every open time lies on the interval grid (no off-grid rows stored).", True),
    ("no_gaps", "Every minute of the (elapsed) day has a candle.", False),
    ("fresh_live_partition", "Today's partition has a candle closed within the staleness limit.", False),
]


@dg.asset(
    partitions_def=symbol_day_partitions,
    group_name="market",
    kinds={"python", "sql"},
    # partitioned like the asset: a check result belongs to its symbol x day, so one bad partition
    # neither blocks nor is unblocked by the automation of the others
    check_specs=[
        dg.AssetCheckSpec(
            name, asset="ohlcv", description=text, blocking=blocking, partitions_def=symbol_day_partitions
        )
        for name, text, blocking in OHLCV_CHECKS
    ],
    automation_condition=dg.AutomationCondition.on_missing(),
)
def ohlcv(
    context: dg.AssetExecutionContext,
    settings: AntmeterSettings,
    store: MarketStoreResource,
    candles: CandleSourceResource,
) -> dg.MaterializeResult:
    """Closed one-minute candles of one symbol for one UTC day, upserted into the market store.

    Keyed by open time; a candle is usable only after it closes (open time + 1 minute). Bad rows
    from any source raise an error naming the row and field; nothing is written then.
    """
    symbol, day = symbol_and_day(context)
    metadata, check_results = harvest_partition(settings, store.get(), candles, symbol, day, utc_now())
    context.log.info(
        f"{symbol} {day.start.date()}: {metadata['upserted']} candles upserted from {candles.kind}"
    )
    return dg.MaterializeResult(metadata=metadata, check_results=check_results)


def harvest_partition(
    settings: AntmeterSettings,
    market,
    candles: CandleSourceResource,
    symbol: str,
    day: DayWindow,
    now: pd.Timestamp,
    tail_only: bool = False,
) -> tuple[dict, list[dg.AssetCheckResult]]:
    """Fetch one symbol x day, upsert it (``tail_only``: only candles from the last stored one on; the
    live minute's path), and evaluate every OHLCV rule on what is stored. Returns (metadata, checks)."""
    frame, outages = candles.fetch_day_report(symbol, day.start.date(), now, settings.interval)
    if tail_only:
        newest = market.candle_stats(symbol, settings.interval, day.start, day.end).get("last_open_time")
        if newest is not None:
            frame = frame[frame["open_time"] >= pd.Timestamp(newest)]
    written = market.upsert_candles(symbol, settings.interval, frame, source=candles.kind, now=now)
    stored = market.read_candles(symbol, settings.interval, day.start, day.end)
    metadata = {
        "rows": len(stored),
        "upserted": written,
        "source": candles.kind,
        "first_open_time": str(stored["open_time"].min()) if len(stored) else "",
        "last_open_time": str(stored["open_time"].max()) if len(stored) else "",
        "exchange_outages": dg.MetadataValue.json([str(o) for o in outages]),
    }
    return metadata, ohlcv_check_results(stored, day, now, settings, outages)


def ohlcv_check_results(
    stored: pd.DataFrame,
    day: DayWindow,
    now: pd.Timestamp,
    settings: AntmeterSettings,
    outages: tuple = (),
) -> list[dg.AssetCheckResult]:
    """Evaluate every OHLCV rule on the stored partition (the store is the source of truth)."""
    is_live = day.start <= now < day.end
    elapsed_end = min(day.end, now.floor("min"))
    results = {
        "unique_open_times": quality.duplicate_open_times(stored),
        "ohlc_consistent": quality.ohlc_violations(stored),
        "non_negative_volume": quality.negative_volume(stored),
        "no_missing_values": quality.missing_values(stored),
        "on_interval_grid": quality.off_grid_open_times(stored, settings.interval),
        "no_gaps": quality.gaps(stored, day.start, elapsed_end, settings.interval, outages),
        "fresh_live_partition": (
            quality.staleness(
                stored, now, settings.stale_after() / pd.Timedelta(minutes=1), settings.interval
            )
            if is_live
            else quality.QualityResult(True, "historical partition: staleness does not apply")
        ),
    }
    return [
        dg.AssetCheckResult(
            check_name=name,
            passed=results[name].passed,
            severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
            description=results[name].summary,
            metadata={k: _meta(v) for k, v in results[name].details.items()},
        )
        for name, _, blocking in OHLCV_CHECKS
    ]


def _meta(value):
    return dg.MetadataValue.json(value) if isinstance(value, list | dict) else value


@dg.asset(
    partitions_def=daily_partitions,
    group_name="market",
    kinds={"parquet", "csv"},
    deps=[dg.AssetDep("ohlcv", partition_mapping=dg.MultiToSingleDimensionPartitionMapping("date"))],
    automation_condition=dg.AutomationCondition.on_cron("15 0 * * *") & ~dg.AutomationCondition.in_progress(),
)
def candle_export(
    context: dg.AssetExecutionContext, settings: AntmeterSettings, store: MarketStoreResource
) -> dg.MaterializeResult:
    """One UTC day of candles per symbol as CSV and Parquet dumps (the files users sync elsewhere)."""
    day = day_of(context)
    market = store.get()
    files, rows, skipped = {}, {}, []
    folder = path_under(settings.data_dir, "exports", f"date={day.start.date()}")
    for symbol in market.symbols():
        try:
            name = f"{validate_symbol(symbol, 'stored symbol')}-{settings.interval}"
        except InvalidSymbolError as exc:
            context.log.warning(f"not exported: {exc}")
            skipped.append(symbol)
            continue
        frame = market.read_candles(symbol, settings.interval, day.start, day.end)
        parquet, csv = path_under(folder, f"{name}.parquet"), path_under(folder, f"{name}.csv")
        folder.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(parquet, index=False)
        frame.to_csv(csv, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
        files[symbol] = dg.MetadataValue.path(str(parquet))
        rows[symbol] = len(frame)
    metadata = {"rows": dg.MetadataValue.json(rows), **files}
    if skipped:
        metadata["skipped_symbols"] = dg.MetadataValue.json(skipped)
    return dg.MaterializeResult(metadata=metadata)
