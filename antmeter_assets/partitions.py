"""Partitions: UTC days × symbols. Symbols are dynamic, so adding one needs no code change."""


import os

import dagster as dg
import pandas as pd

from antmeter.candles import DayWindow

START_DATE = os.environ.get("ANTMETER_START_DATE", "2024-01-01")
DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT")

# end_offset=1: today's (still filling) partition exists, so the live harvest can refresh it.
daily_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, end_offset=1, timezone="UTC")
symbol_partitions = dg.DynamicPartitionsDefinition(name="symbols")
symbol_day_partitions = dg.MultiPartitionsDefinition({"date": daily_partitions, "symbol": symbol_partitions})

# A day's features read the previous day's candles as warm-up.
with_previous_day = dg.MultiPartitionMapping(
    {
        "date": dg.DimensionPartitionMapping(
            "date", dg.TimeWindowPartitionMapping(start_offset=-1, allow_nonexistent_upstream_partitions=True)
        ),
        "symbol": dg.DimensionPartitionMapping("symbol", dg.IdentityPartitionMapping()),
    }
)
# Per-symbol assets that read the day-level news/sentiment asset.
date_of_symbol_day = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="date")


def symbol_and_day(context: dg.AssetExecutionContext) -> tuple[str, DayWindow]:
    """The (symbol, UTC day window) of a symbol × day partition."""
    keys = context.partition_key.keys_by_dimension
    return keys["symbol"], DayWindow.of(keys["date"])


def day_of(context: dg.AssetExecutionContext) -> DayWindow:
    """The UTC day window of a daily partition."""
    return DayWindow.of(context.partition_key)


def symbol_day_key(symbol: str, day: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day, "symbol": symbol})


def utc_now() -> pd.Timestamp:
    """Wall-clock now, overridable by ``ANTMETER_NOW`` (ISO time) for replays and tests."""
    override = os.environ.get("ANTMETER_NOW")
    return pd.Timestamp(override, tz="UTC") if override else pd.Timestamp.now(tz="UTC")
