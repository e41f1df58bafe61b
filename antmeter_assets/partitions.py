"""Partitions: UTC days × symbols. Symbols are dynamic, so adding one needs no code change."""

import os

import dagster as dg
import pandas as pd

from antmeter.market.candles import DayWindow
from antmeter.market.symbols import validate_symbol, validate_symbols

START_DATE = os.environ.get("ANTMETER_START_DATE", "2024-01-01")
DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT")

# end_offset=1: today's (still filling) partition exists, so the live harvest can refresh it.
daily_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, end_offset=1, timezone="UTC")
symbol_partitions = dg.DynamicPartitionsDefinition(name="symbols")
symbol_day_partitions = dg.MultiPartitionsDefinition({"date": daily_partitions, "symbol": symbol_partitions})

# Said where users look (partitioned assets' descriptions, the main job's summary): why most
# partitions look missing in the UI and how to fill more.
COVERAGE_NOTE = (
    f"Partitions run from ANTMETER_START_DATE ({START_DATE}, the simulator's anchor) to today, so most "
    "look missing: `bash run.sh main` fills the last `--days` days (14 by default) and the live "
    "schedules fill today's. Backfill older ones with `bash run.sh main --days N`, or select the asset, "
    "Materialize, and choose a date range."
)


def with_coverage_note(asset: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """A partitioned asset whose description ends with :data:`COVERAGE_NOTE` (others unchanged)."""
    if asset.partitions_def is None:
        return asset
    return asset.map_asset_specs(
        lambda spec: spec.replace_attributes(description=f"{spec.description or ''}\n\n{COVERAGE_NOTE}")
    )


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


def add_symbols(instance: dg.DagsterInstance, symbols: list[str] | tuple[str, ...]) -> list[str]:
    """Validate ``symbols`` (the symbol rule, ``ANTMETER_SYMBOL_PATTERN``) and add the new ones as symbol
    partitions; returns those added. The one way in for symbols (main job, API)."""
    valid = validate_symbols(symbols)
    new = [s for s in valid if not instance.has_dynamic_partition(symbol_partitions.name, s)]
    if new:
        instance.add_dynamic_partitions(symbol_partitions.name, new)
    return new


def symbol_and_day(context: dg.AssetExecutionContext) -> tuple[str, DayWindow]:
    """The (symbol, UTC day window) of a symbol × day partition; an invalid symbol key raises."""
    keys = context.partition_key.keys_by_dimension
    return validate_symbol(keys["symbol"], "symbol partition"), DayWindow.of(keys["date"])


def day_of(context: dg.AssetExecutionContext) -> DayWindow:
    """The UTC day window of a daily partition."""
    return DayWindow.of(context.partition_key)


def symbol_day_key(symbol: str, day: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day, "symbol": symbol})


# The environment variables of the clock (see utc_now).
CLOCK_SETTINGS = (
    "ANTMETER_NOW",
    "ANTMETER_CLOCK_ORIGIN",
    "ANTMETER_CLOCK_WALL_START",
    "ANTMETER_CLOCK_SPEED",
)


def utc_now() -> pd.Timestamp:
    """Now in UTC: the wall clock, unless a replay or test configures its own clock.

    ``ANTMETER_NOW`` (ISO time) pins it. ``ANTMETER_CLOCK_ORIGIN`` (ISO time) with
    ``ANTMETER_CLOCK_WALL_START`` (Unix seconds) runs a simulated clock that read the origin at that
    wall instant and runs ``ANTMETER_CLOCK_SPEED`` (default 1) times as fast as the wall clock:
    ``origin + (wall - wall_start) * speed``. Being a pure function of the environment, it gives the
    code server and every run worker it starts one shared simulated time (e.g. a live deployment
    replayed over fixed historical days).
    """
    pinned = os.environ.get("ANTMETER_NOW")
    if pinned:
        return pd.Timestamp(pinned, tz="UTC")
    origin = os.environ.get("ANTMETER_CLOCK_ORIGIN")
    if not origin:
        return pd.Timestamp.now(tz="UTC")
    try:
        start = float(os.environ["ANTMETER_CLOCK_WALL_START"])
        speed = float(os.environ.get("ANTMETER_CLOCK_SPEED") or 1.0)
        origin_time = pd.Timestamp(origin)
    except (KeyError, ValueError) as exc:
        raise ValueError(
            "ANTMETER_CLOCK_ORIGIN needs an ISO time, ANTMETER_CLOCK_WALL_START Unix seconds and "
            f"ANTMETER_CLOCK_SPEED (optional) a number: {exc!r}"
        ) from exc
    if not speed > 0:
        raise ValueError(f"ANTMETER_CLOCK_SPEED must be > 0, got {speed}")
    origin_time = (
        origin_time.tz_localize("UTC") if origin_time.tzinfo is None else origin_time.tz_convert("UTC")
    )
    elapsed = pd.Timedelta(seconds=(pd.Timestamp.now(tz="UTC").timestamp() - start) * speed)
    return (origin_time + elapsed).floor("us")  # the wall clock's (and the stores') resolution


def clock_is_configured() -> bool:
    """Whether ``utc_now`` follows a configured (pinned or simulated) clock rather than the wall clock."""
    return bool(os.environ.get("ANTMETER_NOW") or os.environ.get("ANTMETER_CLOCK_ORIGIN"))
