"""Asset jobs: each selects assets that share one partitioning (Dagster cannot mix them in a run)."""

from __future__ import annotations

import dagster as dg

from antmeter_assets.partitions import daily_partitions, symbol_day_partitions

harvest_job = dg.define_asset_job(
    "harvest_job",
    selection=dg.AssetSelection.assets("ohlcv"),
    partitions_def=symbol_day_partitions,
    description="Fetch and upsert one symbol × day of candles (the live feed refreshes today's).",
    tags={"antmeter/stage": "harvest"},
)
daily_job = dg.define_asset_job(
    "daily_job",
    selection=dg.AssetSelection.assets("news_articles", "sentiment_hourly", "candle_export"),
    partitions_def=daily_partitions,
    description="Harvest and score the day's news, aggregate hourly sentiment, export the day's candles.",
    tags={"antmeter/stage": "daily"},
)
feature_job = dg.define_asset_job(
    "feature_job",
    selection=dg.AssetSelection.assets("features", "labels"),
    partitions_def=symbol_day_partitions,
    description="Features and labels of one symbol × day.",
    tags={"antmeter/stage": "features"},
)
