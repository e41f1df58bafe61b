"""The live minute: one run per closed minute harvests every symbol's new candle and predicts on it.

The asset path takes four hops per candle (harvest schedule → ``ohlcv`` run per symbol → automation
tick → ``features`` run → automation tick → ``predictions`` run), each waiting for a tick and paying
a run start. ``live_minute_sensor`` notices the close of a minute on the (possibly simulated) clock
within ``ANTMETER_LIVE_TICK_INTERVAL_S`` and requests one ``live_minute_job`` run for all symbols:
the same harvest (idempotent upsert of the day's tail, the same OHLCV rules recorded as the
partition's check evaluations) and the same prediction code as the ``predictions`` asset (each
champion from the registry by alias), recorded as materializations of ``ohlcv`` (per symbol × day)
and ``predictions``. A symbol whose blocking check fails is not predicted on. Features/labels
partitions still follow by declarative automation (training needs them, the live path does not:
predictions compute their features from candles). ``ANTMETER_LIVE_TICK=on`` starts the sensor
(then switch ``harvest_schedule`` off: both would harvest, harmlessly but twice).
"""

import os

import dagster as dg
import pandas as pd

from antmeter.market.candles import DayWindow
from antmeter_assets.jobs import EDGE, RETRY_SAFE
from antmeter_assets.market import harvest_partition
from antmeter_assets.partitions import symbol_day_key, symbol_partitions, utc_now
from antmeter_assets.serving import post_signals, predict_new_candles, serving_champions
from antmeter_resources import (
    AlertWebhookResource,
    AntmeterSettings,
    CandleSourceResource,
    MarketStoreResource,
    MlflowResource,
)

LIVE_TICK_INTERVAL_S = int(os.environ.get("ANTMETER_LIVE_TICK_INTERVAL_S", "2"))
LIVE_TICK_STATUS = (
    dg.DefaultSensorStatus.RUNNING
    if os.environ.get("ANTMETER_LIVE_TICK") == "on"
    else dg.DefaultSensorStatus.STOPPED
)
MINUTE_TAG = "antmeter/live_minute"


def live_days(now: pd.Timestamp) -> list[DayWindow]:
    """Today; in the first five minutes of a day also yesterday (its last candle closes at midnight)."""
    days = [DayWindow.of(now.date())]
    if now - now.normalize() < pd.Timedelta(minutes=5):
        days.insert(0, DayWindow.of((now - pd.Timedelta(days=1)).date()))
    return days


@dg.op(
    description="Harvest every symbol's new candles (today's partition), then predict on them.",
    tags={"antmeter/stage": "live"},
)
def live_minute(
    context: dg.OpExecutionContext,
    settings: AntmeterSettings,
    store: MarketStoreResource,
    candles: CandleSourceResource,
    mlflow: MlflowResource,
    alerts: AlertWebhookResource,
) -> None:
    now = utc_now()
    market = store.get()
    symbols = sorted(context.instance.get_dynamic_partitions(symbol_partitions.name))
    blocked = set()
    for day in live_days(now):
        for symbol in symbols:
            metadata, checks = harvest_partition(settings, market, candles, symbol, day, now, tail_only=True)
            key = str(symbol_day_key(symbol, str(day.start.date())))
            context.log_event(dg.AssetMaterialization("ohlcv", partition=key, metadata=metadata))
            for check in checks:
                blocking = check.severity == dg.AssetCheckSeverity.ERROR
                context.log_event(
                    dg.AssetCheckEvaluation(
                        asset_key=dg.AssetKey("ohlcv"),
                        check_name=check.check_name,
                        passed=check.passed,
                        metadata=check.metadata,
                        severity=check.severity,
                        description=check.description,
                        blocking=blocking,
                        partition=key,
                    )
                )
                if blocking and not check.passed:
                    blocked.add(symbol)
    if blocked:
        context.log.error(f"blocking OHLCV checks failed for {sorted(blocked)}: not predicting on them")
    serving = [s for s in symbols if s not in blocked]
    written, stale, per_model, new_rows = predict_new_candles(
        settings, market, serving_champions(settings, mlflow), now, context.log, serving
    )
    signals = post_signals(alerts, settings, new_rows)
    context.log_event(
        dg.AssetMaterialization(
            "predictions",
            metadata={
                "predictions": written,
                "alerts_sent": signals,
                "per_model_symbol": dg.MetadataValue.json(per_model),
                "stale_symbols": dg.MetadataValue.json(stale),
                "blocked_symbols": dg.MetadataValue.json(sorted(blocked)),
                "as_of": str(now),
            },
        )
    )


@dg.job(
    description="The live minute: every symbol's new candle harvested and predicted on in one run.",
    tags={"antmeter/stage": "live_minute", **EDGE, **RETRY_SAFE},
)
def live_minute_job():
    live_minute()


@dg.sensor(
    job=live_minute_job,
    minimum_interval_seconds=LIVE_TICK_INTERVAL_S,
    default_status=LIVE_TICK_STATUS,
    description="One live_minute_job run as soon as each minute has closed (on the configured clock).",
)
def live_minute_sensor(context: dg.SensorEvaluationContext):
    closed = (utc_now().floor("min") - pd.Timedelta(minutes=1)).isoformat()
    if context.cursor == closed:
        return dg.SkipReason(f"the minute opened at {closed} is already handled")
    context.update_cursor(closed)
    return dg.RunRequest(run_key=f"live-{closed}", tags={MINUTE_TAG: closed})
