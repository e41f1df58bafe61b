"""The Antmeter code location: the one ``Definitions`` object.

Load it with ``dagster dev -m antmeter_assets.definitions`` (local) or ``dagster api grpc -m
antmeter_assets.definitions`` (deployed). Heavy libraries are imported inside asset bodies, so
loading the location stays fast.
"""

import dagster as dg

from antmeter_assets import automation, features, jobs, market, models, news, patterns, serving
from antmeter_resources import resources_from_env

defs = dg.Definitions(
    assets=[
        market.ohlcv,
        market.candle_export,
        news.news_articles,
        news.sentiment_hourly,
        features.features,
        features.labels,
        *models.model_assets,
        serving.predictions,
        serving.verification_report,
        *patterns.pattern_assets,
    ],
    jobs=[*jobs.all_jobs, *automation.extra_jobs],
    schedules=automation.schedules,
    sensors=automation.sensors,
    resources=resources_from_env(),
)
