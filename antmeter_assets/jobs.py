"""Asset jobs: each selects assets that share one partitioning (Dagster cannot mix them in a run)."""

import dagster as dg

from antmeter_assets.models import MODEL_TYPES, fine_tune_defaults
from antmeter_assets.partitions import daily_partitions, symbol_day_partitions

# Celery routing (deploy/celery): the always-on edge box runs the live loop, the trainer trains.
# Runs without the tag go to the launcher's default queue (edge). Ignored by the default launcher.
EDGE = {"dagster-celery/queue": "edge"}
TRAINER = {"dagster-celery/queue": "trainer"}
# Idempotent jobs whose run is retried when its worker dies (run_retries in deploy/celery/dagster.yaml).
RETRY_SAFE = {"dagster/max_retries": "2"}

harvest_job = dg.define_asset_job(
    "harvest_job",
    selection=dg.AssetSelection.assets("ohlcv"),
    partitions_def=symbol_day_partitions,
    description="Fetch and upsert one symbol × day of candles (the live feed refreshes today's).",
    tags={"antmeter/stage": "harvest", **EDGE, **RETRY_SAFE},
)
feature_job = dg.define_asset_job(
    "feature_job",
    selection=dg.AssetSelection.assets("features", "labels", "candlestick_patterns"),
    partitions_def=symbol_day_partitions,
    description="Features, labels and TA-Lib candlestick spans of one symbol × day.",
    tags={"antmeter/stage": "features", **EDGE},
)
news_job = dg.define_asset_job(
    "news_job",
    selection=dg.AssetSelection.assets("news_articles", "sentiment_hourly"),
    partitions_def=daily_partitions,
    description="Harvest and score the day's news, aggregate hourly sentiment.",
    tags={"antmeter/stage": "news", **EDGE},
)
export_job = dg.define_asset_job(
    "export_job",
    selection=dg.AssetSelection.assets("candle_export"),
    partitions_def=daily_partitions,
    description="The day's candles per symbol as CSV and Parquet dumps.",
    tags={"antmeter/stage": "export", **EDGE},
)
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("models"),
    description="Full retrain: dataset, hyperparameter search and walk-forward training of every model "
    "type, export, promotion gate.",
    tags={"antmeter/stage": "training", **TRAINER},
)
incremental_retrain_job = dg.define_asset_job(
    "incremental_retrain_job",
    selection=dg.AssetSelection.groups("models")
    - dg.AssetSelection.assets(*(f"{t}_hpo" for t in MODEL_TYPES)),
    config={
        "ops": {
            f"{t}_candidate": {"config": {"mode": "incremental", **fine_tune_defaults()}} for t in MODEL_TYPES
        }
    },
    description="Fine-tune each champion on recent data, then the same promotion gate as full training.",
    tags={"antmeter/stage": "training", "antmeter/mode": "incremental", **TRAINER},
)
MODEL_TYPE_TAG = "antmeter/model_type"


def model_type_selection(model_type: str) -> dg.AssetSelection:
    """The dataset and one model type's candidate and champion."""
    return dg.AssetSelection.assets("training_dataset", f"{model_type}_candidate", f"{model_type}_champion")


def full_retrain_job(model_type: str):
    """Full retrain of one model type (the newest data, walk-forward, its gate)."""
    return dg.define_asset_job(
        f"{model_type}_training_job",
        selection=model_type_selection(model_type),
        description=f"Full retrain of {model_type} on the newest data, then its promotion gate.",
        tags={"antmeter/stage": "training", MODEL_TYPE_TAG: model_type, "antmeter/mode": "full", **TRAINER},
    )


def incremental_job(model_type: str):
    """Incremental retrain (fine-tune of the champion) of one model type."""
    return dg.define_asset_job(
        f"{model_type}_incremental_retrain_job",
        selection=model_type_selection(model_type),
        config={
            "ops": {f"{model_type}_candidate": {"config": {"mode": "incremental", **fine_tune_defaults()}}}
        },
        description=f"Fine-tune the {model_type} champion on the newest data, then its promotion gate.",
        tags={
            "antmeter/stage": "training",
            MODEL_TYPE_TAG: model_type,
            "antmeter/mode": "incremental",
            **TRAINER,
        },
    )


# the retrain jobs the sensor requests: (model type, action) -> job
retrain_jobs = {
    **{(t, "full"): full_retrain_job(t) for t in MODEL_TYPES},
    **{(t, "incremental"): incremental_job(t) for t in MODEL_TYPES},
}

live_job = dg.define_asset_job(
    "live_job",
    selection=dg.AssetSelection.assets("predictions", "verification_report"),
    description="Predict with every champion, then verify past predictions against the market.",
    tags={"antmeter/stage": "live", **EDGE},
)
predictions_job = dg.define_asset_job(
    "predictions_job",
    selection=dg.AssetSelection.assets("predictions"),
    description="Predict every closed candle since the last prediction with each serving champion "
    "(the 5-minute floor of the live loop; new features or a new champion also trigger it).",
    tags={"antmeter/stage": "live", **EDGE, **RETRY_SAFE},
)
verification_job = dg.define_asset_job(
    "verification_job",
    selection=dg.AssetSelection.assets("verification_report"),
    description="Verify past predictions against the closed candles: rolling accuracy next to the "
    "baselines, feature drift and after-fee P&L (hourly).",
    tags={"antmeter/stage": "live", **EDGE},
)

pattern_job = dg.define_asset_job(
    "pattern_job",
    selection=dg.AssetSelection.groups("patterns"),
    description="Annotations into the store, the pattern dataset, the pattern classifiers and their gate.",
    tags={"antmeter/stage": "patterns", **TRAINER},
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
    *retrain_jobs.values(),
    pattern_job,
]
