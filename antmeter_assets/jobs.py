"""Asset jobs: each selects assets that share one partitioning (Dagster cannot mix them in a run)."""

import dagster as dg

from antmeter_assets.models import MODEL_TYPES, fine_tune_defaults
from antmeter_assets.partitions import daily_partitions, symbol_day_partitions

harvest_job = dg.define_asset_job(
    "harvest_job",
    selection=dg.AssetSelection.assets("ohlcv"),
    partitions_def=symbol_day_partitions,
    description="Fetch and upsert one symbol × day of candles (the live feed refreshes today's).",
    tags={"antmeter/stage": "harvest"},
)
feature_job = dg.define_asset_job(
    "feature_job",
    selection=dg.AssetSelection.assets("features", "labels", "candlestick_patterns"),
    partitions_def=symbol_day_partitions,
    description="Features, labels and TA-Lib candlestick spans of one symbol × day.",
    tags={"antmeter/stage": "features"},
)
news_job = dg.define_asset_job(
    "news_job",
    selection=dg.AssetSelection.assets("news_articles", "sentiment_hourly"),
    partitions_def=daily_partitions,
    description="Harvest and score the day's news, aggregate hourly sentiment.",
    tags={"antmeter/stage": "news"},
)
export_job = dg.define_asset_job(
    "export_job",
    selection=dg.AssetSelection.assets("candle_export"),
    partitions_def=daily_partitions,
    description="The day's candles per symbol as CSV and Parquet dumps.",
    tags={"antmeter/stage": "export"},
)
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("models"),
    description="Full retrain: dataset, walk-forward training of every model type, export, promotion gate.",
    tags={"antmeter/stage": "training"},
)
incremental_retrain_job = dg.define_asset_job(
    "incremental_retrain_job",
    selection=dg.AssetSelection.groups("models"),
    config={
        "ops": {
            f"{t}_candidate": {"config": {"mode": "incremental", **fine_tune_defaults()}} for t in MODEL_TYPES
        }
    },
    description="Fine-tune each champion on recent data, then the same promotion gate as full training.",
    tags={"antmeter/stage": "training", "antmeter/mode": "incremental"},
)
live_job = dg.define_asset_job(
    "live_job",
    selection=dg.AssetSelection.assets("predictions", "verification_report"),
    description="Predict with every champion, then verify past predictions against the market.",
    tags={"antmeter/stage": "live"},
)
predictions_job = dg.define_asset_job(
    "predictions_job", selection=dg.AssetSelection.assets("predictions"), tags={"antmeter/stage": "live"}
)
verification_job = dg.define_asset_job(
    "verification_job",
    selection=dg.AssetSelection.assets("verification_report"),
    tags={"antmeter/stage": "live"},
)

pattern_job = dg.define_asset_job(
    "pattern_job",
    selection=dg.AssetSelection.groups("patterns"),
    description="Annotations into the store, the pattern dataset, the pattern classifiers and their gate.",
    tags={"antmeter/stage": "patterns"},
)

all_jobs = [
    harvest_job,
    news_job,
    export_job,
    feature_job,
    training_job,
    incremental_retrain_job,
    live_job,
    predictions_job,
    verification_job,
    pattern_job,
]
