"""The Antmeter code location: the one ``Definitions`` object.

Load it with ``dagster dev -m antmeter_assets.definitions`` (local) or ``dagster api grpc -m
antmeter_assets.definitions`` (deployed). Heavy libraries are imported inside asset bodies, so
loading the location stays fast.
"""

import dagster as dg

from antmeter_assets import automation, features, hpo, jobs, market, models, news, serving
from antmeter_assets.partitions import with_coverage_note
from antmeter_resources import resources_from_env

defs = dg.Definitions(
    assets=[
        with_coverage_note(asset)
        for asset in (
            market.ohlcv,
            market.candle_export,
            news.news_articles,
            news.sentiment_hourly,
            features.features,
            features.labels,
            *models.model_assets,
            *hpo.hpo_assets,
            serving.predictions,
            serving.verification_report,
        )
    ],
    jobs=[*jobs.all_jobs, *automation.extra_jobs],
    schedules=automation.schedules,
    sensors=automation.sensors,
    resources=resources_from_env(),
)
