"""The Antmeter code location: the one ``Definitions`` object.

Load it with ``dagster dev -m antmeter_assets.definitions`` (local) or ``dagster api grpc -m
antmeter_assets.definitions`` (deployed). Heavy libraries are imported inside asset bodies, so
loading the location stays fast.

The metadata publishes the code version (workers of the Celery deployment compare it with their
own). ``ANTMETER_EXECUTOR=in_process`` runs each run's steps in the run's own process: what the Celery
workers use, so a run reuses the worker's warm imports instead of starting a process per step.
"""

import os

import dagster as dg

from antmeter_assets import automation, features, hpo, jobs, live, market, models, news, patterns, serving
from antmeter_assets.code_version import code_version
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
            *patterns.pattern_assets,
        )
    ],
    jobs=[*jobs.all_jobs, *automation.extra_jobs, live.live_minute_job],
    schedules=automation.schedules,
    sensors=[*automation.sensors, live.live_minute_sensor],
    resources=resources_from_env(),
    executor=dg.in_process_executor if os.environ.get("ANTMETER_EXECUTOR") == "in_process" else None,
    metadata={"antmeter/code_version": code_version()},
)
