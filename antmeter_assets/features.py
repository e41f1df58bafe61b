"""Feature and label assets per symbol × day, written as Parquet under the data directory."""

import datetime as dt

import dagster as dg
import pandas as pd

from antmeter.market.candles import interval_timedelta
from antmeter_assets.partitions import (
    date_of_symbol_day,
    symbol_and_day,
    symbol_day_partitions,
    with_previous_day,
)
from antmeter_resources import AntmeterSettings, MarketStoreResource

# Labels of a day's last rows need the next day's first candles: depend on that partition too,
# so a later harvest of day D+1 makes labels of day D stale and automation re-runs them.
with_next_day = dg.MultiPartitionMapping(
    {
        "date": dg.DimensionPartitionMapping(
            "date",
            dg.TimeWindowPartitionMapping(
                start_offset=0, end_offset=1, allow_nonexistent_upstream_partitions=True
            ),
        ),
        "symbol": dg.DimensionPartitionMapping("symbol", dg.IdentityPartitionMapping()),
    }
)

# eager(), but looking back one day (so yesterday's labels complete when today's first candles
# land) and only while no upstream partition has a failed blocking check. The lookback is measured
# from the end of the latest window, which is the end of *today* (end_offset=1): two days reach
# yesterday. Dagster's all_deps_blocking_checks_passed() holds when *any* partition of a dep's
# two-day window passed, so the condition is written as "no mapped partition failed" instead.
_upstream_blocking_check_failed = dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.any_checks_match(dg.AutomationCondition.check_failed(), blocking_only=True)
).with_label("any_deps_blocking_check_failed")
_after_blocking_checks = (
    dg.AutomationCondition.in_latest_time_window(dt.timedelta(days=2))
    & (
        dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()
    ).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
    & ~_upstream_blocking_check_failed
).with_label("eager (1-day lookback) after blocking checks")


def feature_schema(config=None) -> dg.TableSchema:
    """The features' columns from the feature config: time, then each feature with its look-back."""
    from antmeter.features.pipeline import FeatureConfig, feature_lookbacks, model_feature_columns

    config = config or FeatureConfig()
    model_inputs = set(model_feature_columns(config))
    return dg.TableSchema(
        columns=[
            dg.TableColumn("open_time", "timestamp", description="candle open time (UTC); the row's key"),
            *(
                dg.TableColumn(
                    name,
                    "float64",
                    description=f"reads the {lookback} candles before t"
                    + ("" if name in model_inputs else "; a price level, not a model input"),
                )
                for name, lookback in feature_lookbacks(config).items()
            ),
        ]
    )


def label_schema(config=None) -> dg.TableSchema:
    """The labels' columns from the label config: per horizon the forward return and two classes."""
    from antmeter.features.labels import LabelConfig

    config = config or LabelConfig()
    texts = {
        "fwd_return": ("float64", "log(close[t+{h}] / close[t]); NaN until observed"),
        "up": ("Int8", "1 when the {h}-minute forward return is > 0, else 0"),
        "direction3": ("Int8", "0 down / 1 flat / 2 up over {h} minutes (flat band)"),
    }
    return dg.TableSchema(
        columns=[
            dg.TableColumn("open_time", "timestamp", description="candle open time (UTC); the row's key"),
            *(
                dg.TableColumn(f"{name}_{h}", kind, description=text.format(h=h))
                for h in config.horizons
                for name, (kind, text) in texts.items()
            ),
        ]
    )


def partition_file(settings: AntmeterSettings, kind: str, symbol: str, day: str):
    """Where a symbol × day partition of ``kind`` (features, labels) lives."""
    return settings.path(kind, f"symbol={symbol}", f"date={day}.parquet")


@dg.asset(
    partitions_def=symbol_day_partitions,
    group_name="features",
    kinds={"pandas", "parquet"},
    deps=[
        dg.AssetDep("ohlcv", partition_mapping=with_previous_day),
        dg.AssetDep("sentiment_hourly", partition_mapping=date_of_symbol_day),
    ],
    automation_condition=_after_blocking_checks,
    metadata={"dagster/column_schema": feature_schema()},
)
def features(
    context: dg.AssetExecutionContext, settings: AntmeterSettings, store: MarketStoreResource
) -> dg.MaterializeResult:
    """Causal features of one symbol × day: ``ta`` indicators (fast, parity-tested), candle shapes,
    lagged returns, volatility, volume, cyclic time and the last completed hour's news sentiment.

    Warm-up comes from the previous day's candles, so each row equals the full-history value.
    """
    from antmeter.features.pipeline import compute_partition_features, required_warmup_candles

    symbol, day = symbol_and_day(context)
    config = settings.feature_config()
    market = store.get()
    warmup = interval_timedelta(settings.interval) * required_warmup_candles(config)
    candles = market.read_candles(symbol, settings.interval, day.start - warmup, day.end)
    sentiment = market.read_frame(
        "sentiment_hourly",
        filters={"symbol": symbol},
        time_range=(day.start - pd.Timedelta(hours=2), day.end),
    )
    frame = compute_partition_features(
        candles,
        day.start,
        day.end,
        config,
        sentiment_hourly=sentiment,
        symbol=symbol,
        interval=settings.interval,
    )
    path = partition_file(settings, "features", symbol, str(day.start.date()))
    frame.to_parquet(path, index=False)
    market.put_partition_frame("features", symbol, str(day.start.date()), frame)  # what the trainer reads
    incomplete = int(frame.drop(columns=["open_time"]).isna().any(axis=1).sum())
    warmup_rows = int((candles["open_time"] < day.start).sum())
    if incomplete:
        context.log.warning(
            f"{incomplete} rows lack full warm-up or span a gap; they stay NaN and are excluded later"
        )
    return dg.MaterializeResult(
        metadata={
            "rows": len(frame),
            "columns": len(frame.columns) - 1,
            "feature_config": dg.MetadataValue.json(settings.features.model_dump()),
            "warmup_rows_read": warmup_rows,
            "rows_incomplete": incomplete,
            "path": dg.MetadataValue.path(str(path)),
            "dagster/column_schema": feature_schema(config),
        }
    )


@dg.asset(
    partitions_def=symbol_day_partitions,
    group_name="features",
    kinds={"pandas", "parquet"},
    deps=[dg.AssetDep("ohlcv", partition_mapping=with_next_day)],
    automation_condition=_after_blocking_checks,
    metadata={"dagster/column_schema": label_schema()},
)
def labels(
    context: dg.AssetExecutionContext, settings: AntmeterSettings, store: MarketStoreResource
) -> dg.MaterializeResult:
    """Forward log returns, binary up/not-up and down/flat/up classes for each horizon.

    A row is labelled only when its whole horizon has been observed; the newest rows stay empty
    until a later run sees the next day's candles.
    """
    from antmeter.features.labels import class_balance, label_partition

    symbol, day = symbol_and_day(context)
    config = settings.label_config()
    horizon = interval_timedelta(settings.interval) * max(config.horizons)
    market = store.get()
    candles = market.read_candles(symbol, settings.interval, day.start, day.end + horizon)
    frame = label_partition(candles, day.start, day.end, config)
    path = partition_file(settings, "labels", symbol, str(day.start.date()))
    frame.to_parquet(path, index=False)
    market.put_partition_frame("labels", symbol, str(day.start.date()), frame)  # what the trainer reads
    balance = class_balance(frame)
    unlabeled = {f"unlabeled_{h}m": int(frame[f"up_{h}"].isna().sum()) for h in config.horizons}
    return dg.MaterializeResult(
        metadata={
            "rows": len(frame),
            **unlabeled,
            "class_balance": dg.MetadataValue.json(balance),
            "path": dg.MetadataValue.path(str(path)),
            "dagster/column_schema": label_schema(config),
        }
    )
