"""Schedules and sensors that keep Antmeter live.

harvest every minute · news hourly · predictions every 5 minutes (floor; new features also trigger
them through declarative automation) · verification hourly · export daily · full retrain weekly ·
retention daily. ``retrain_on_drift`` launches the incremental retrain of the model type whose
accuracy chart alarmed (repeated rejections of that type escalate to its full retrain); drift alone
is a warning. ``ANTMETER_AUTOMATION=on`` starts all of them by default (the deployment sets it);
otherwise they are visible in the UI and stopped until switched on.
"""

import datetime as dt
import json
import os
from typing import NamedTuple

import dagster as dg
import pandas as pd

from antmeter.market.redaction import get_logger
from antmeter.market.symbols import InvalidSymbolError, validate_symbol
from antmeter_assets import jobs, models
from antmeter_assets.partitions import clock_is_configured, symbol_day_key, symbol_partitions, utc_now
from antmeter_resources import AlertWebhookResource, AntmeterSettings, MarketStoreResource

DEFAULT_STATUS = (
    dg.DefaultScheduleStatus.RUNNING
    if os.environ.get("ANTMETER_AUTOMATION") == "on"
    else dg.DefaultScheduleStatus.STOPPED
)
SENSOR_STATUS = (
    dg.DefaultSensorStatus.RUNNING
    if os.environ.get("ANTMETER_AUTOMATION") == "on"
    else dg.DefaultSensorStatus.STOPPED
)
SENSOR_INTERVAL_S = int(os.environ.get("ANTMETER_SENSOR_INTERVAL_S", "60"))
RETENTION_DAYS = int(os.environ.get("ANTMETER_RUN_RETENTION_DAYS", "3"))
SCHEDULE_TAG = "antmeter/launched_by"
log = get_logger("antmeter_assets.automation")
# The predictions floor's cadence (a replay or test on a fast clock shortens it, e.g. "* * * * *").
PREDICTIONS_CRON = os.environ.get("ANTMETER_PREDICTIONS_CRON", "*/5 * * * *")


def harvest_requests(instance: dg.DagsterInstance, now: pd.Timestamp) -> list[dg.RunRequest]:
    """Today's partition for every symbol; in the first minutes of a day also yesterday's, so its
    last candle (which closes at midnight) is stored."""
    days = [now.date()]
    if now - now.normalize() < pd.Timedelta(minutes=5):
        days.insert(0, (now - pd.Timedelta(days=1)).date())
    # a schedule returning several requests must key each one (keys are scoped to the tick)
    return [
        dg.RunRequest(
            run_key=f"harvest-{day}-{symbol}",
            partition_key=symbol_day_key(symbol, str(day)),
            tags={SCHEDULE_TAG: "harvest_schedule"},
        )
        for day in days
        for symbol in valid_symbol_partitions(instance)
    ]


def valid_symbol_partitions(instance: dg.DagsterInstance) -> list[str]:
    """The symbol partitions that follow the symbol rule, sorted; others (added around ``add_symbols``,
    e.g. in the UI) are skipped with a warning instead of being harvested."""
    valid = []
    for symbol in sorted(instance.get_dynamic_partitions(symbol_partitions.name)):
        try:
            valid.append(validate_symbol(symbol, "symbol partition"))
        except InvalidSymbolError as exc:
            log.warning("not harvesting: %s", exc)
    return valid


@dg.schedule(
    job=jobs.harvest_job,
    cron_schedule="* * * * *",
    default_status=DEFAULT_STATUS,
    description="Refresh today's candles for every symbol, every minute (the live feed).",
)
def harvest_schedule(context: dg.ScheduleEvaluationContext):
    """The tick's time decides the day; a configured clock (a replay: ``ANTMETER_NOW`` or the simulated
    clock, see ``utc_now``) replaces it, so the feed follows the simulated day."""
    tick = context.scheduled_execution_time
    now = pd.Timestamp(tick).tz_convert("UTC") if tick and not clock_is_configured() else utc_now()
    return harvest_requests(context.instance, now)


@dg.schedule(
    job=jobs.news_job,
    cron_schedule="1 * * * *",
    default_status=DEFAULT_STATUS,
    description="Harvest news and refresh hourly sentiment just after each hour completes.",
)
def news_schedule(context: dg.ScheduleEvaluationContext):
    day = pd.Timestamp(context.scheduled_execution_time).tz_convert("UTC").date()
    return dg.RunRequest(partition_key=str(day), tags={SCHEDULE_TAG: "news_schedule"})


@dg.schedule(
    job=jobs.export_job,
    cron_schedule="15 0 * * *",
    default_status=DEFAULT_STATUS,
    description="Export yesterday's candles as CSV/Parquet dumps.",
)
def export_schedule(context: dg.ScheduleEvaluationContext):
    day = (pd.Timestamp(context.scheduled_execution_time).tz_convert("UTC") - pd.Timedelta(days=1)).date()
    return dg.RunRequest(partition_key=str(day), tags={SCHEDULE_TAG: "export_schedule"})


predictions_schedule = dg.ScheduleDefinition(
    name="predictions_schedule",
    job=jobs.predictions_job,
    cron_schedule=PREDICTIONS_CRON,
    default_status=DEFAULT_STATUS,
    tags={SCHEDULE_TAG: "predictions_schedule"},
    description="Floor for predictions: every 5 minutes (ANTMETER_PREDICTIONS_CRON) even when no automation fired.",
)
verification_schedule = dg.ScheduleDefinition(
    name="verification_schedule",
    job=jobs.verification_job,
    cron_schedule="0 * * * *",
    default_status=DEFAULT_STATUS,
    tags={SCHEDULE_TAG: "verification_schedule"},
    description="Verify predictions against realized outcomes every hour.",
)
weekly_retrain_schedule = dg.ScheduleDefinition(
    name="weekly_retrain_schedule",
    job=jobs.training_job,
    cron_schedule="0 3 * * 0",
    default_status=DEFAULT_STATUS,
    tags={SCHEDULE_TAG: "weekly_retrain_schedule"},
    description="Full retrain of every model type each week, whatever the drift sensor says.",
)


@dg.op(description="Delete runs (and their event logs) older than the retention window.")
def purge_old_runs(context) -> int:
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=RETENTION_DAYS)
    deleted = 0
    while True:
        records = context.instance.get_run_records(
            dg.RunsFilter(
                created_before=cutoff,
                statuses=[
                    dg.DagsterRunStatus.SUCCESS,
                    dg.DagsterRunStatus.FAILURE,
                    dg.DagsterRunStatus.CANCELED,
                ],
            ),
            limit=500,
        )
        if not records:
            break
        for record in records:
            context.instance.delete_run(record.dagster_run.run_id)
            deleted += 1
    context.log.info(f"deleted {deleted} runs created before {cutoff:%Y-%m-%d %H:%M} UTC")
    return deleted


@dg.job(
    description="Retention: keep the instance from growing without bound.",
    tags={"antmeter/stage": "retention"},
)
def retention_job():
    purge_old_runs()


retention_schedule = dg.ScheduleDefinition(
    name="retention_schedule",
    job=retention_job,
    cron_schedule="30 0 * * *",
    default_status=DEFAULT_STATUS,
    description=f"Daily at 00:30 UTC: delete finished runs older than {RETENTION_DAYS} days "
    "(ANTMETER_RUN_RETENTION_DAYS) with their event logs.",
)

automation_sensor = dg.AutomationConditionSensorDefinition(
    "antmeter_automation",
    target=dg.AssetSelection.all(),
    default_status=SENSOR_STATUS,
    minimum_interval_seconds=int(os.environ.get("ANTMETER_AUTOMATION_INTERVAL_S", "30")),
    run_tags={SCHEDULE_TAG: "antmeter_automation"},
    description="Declarative automation of every asset: ohlcv on missing partitions, features and labels "
    "when their candles change, predictions on new features or a new champion, exports and "
    "verification on their crons (see each asset's automation condition).",
)


@dg.sensor(
    jobs=list(jobs.retrain_jobs.values()),
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=SENSOR_STATUS,
    description="Accuracy CUSUM of each serving champion → that model type's incremental retrain "
    "(escalates to full; never repeats a rejected retrain on unchanged data); a type without a "
    "champion gets a daily full retrain on new data; drift is a warning only.",
)
def retrain_on_drift(
    context: dg.SensorEvaluationContext, settings: AntmeterSettings, store: MarketStoreResource
):
    """Reads the newest verification report; decides per model type with the replay's policy function."""
    from antmeter.live.policy import PolicyInput, WindowStats, decide, run_key

    record = context.instance.fetch_materializations(dg.AssetKey("verification_report"), limit=1).records
    if not record:
        return dg.SkipReason("no verification report yet")
    latest = record[0]
    cursor = json.loads(context.cursor) if context.cursor else {}
    if cursor.get("storage_id") == latest.storage_id:
        return dg.SkipReason(f"verification report {latest.storage_id} already evaluated")
    meta = latest.asset_materialization.metadata
    stats = meta["policy_stats"].value if "policy_stats" in meta else {}
    now = pd.Timestamp(meta["as_of"].value) if "as_of" in meta else utc_now()
    policy = settings.retrain_policy()
    entries = {name.rsplit("-", 1)[-1]: (name, entry) for name, entry in sorted(stats.items())}
    unserved = {  # gated types that nothing serves: no report entry, judged by the no-champion rule
        t: (t, {})
        for t in models.MODEL_TYPES
        if t not in entries and _gated_without_champion(context.instance, t)
    }
    window_now = _training_window(context.instance, settings, store)
    requests, decisions = [], {}
    for model_type, (model_name, entry) in {**entries, **unserved}.items():
        if (model_type, "incremental") not in jobs.retrain_jobs:
            decisions[model_name] = {"action": "none", "reasons": [f"unknown model type {model_type!r}"]}
            continue
        history = gate_history(context.instance, model_type)
        serving = history.serving_version
        if entry and serving is not None and str(entry.get("model_version")) != serving:
            decisions[model_name] = {
                "action": "none",
                "reasons": [f"stale: report judged v{entry.get('model_version')} but v{serving} serves"],
            }
            continue
        if retrain_in_progress(context.instance, model_type):
            decisions[model_name] = {"action": "none", "reasons": [f"a {model_type} retrain is in progress"]}
            continue
        counts = {"n": 0, "n_correct": 0, "n_effective": 0.0}
        window = WindowStats(
            **(counts | {k: v for k, v in entry.items() if k in WindowStats.__dataclass_fields__})
        )
        decision = decide(
            policy,
            PolicyInput(
                window=window,
                max_psi=entry.get("max_psi"),
                now=now,
                last_retrain_at=history.last_ended_at,
                consecutive_rejections=history.rejection_streak,
                drift_warning=bool(entry.get("drift_warning")),
                n_models=len(entries) + len(unserved),
                serving=serving is not None,
                repeats_rejected=frozenset(
                    action
                    for action in ("incremental", "full")
                    if _next_retrain_key(action, window_now, serving) in history.rejected_keys
                ),
            ),
        )
        decisions[model_name] = {"action": decision.action, "reasons": list(decision.reasons)}
        if decision.action != "none":
            job = jobs.retrain_jobs[(model_type, decision.action)]
            requests.append(
                dg.RunRequest(
                    job_name=job.name,
                    run_key=run_key(decision, model_name=model_name, horizon=policy.horizon, now=now),
                    tags={
                        SCHEDULE_TAG: "retrain_on_drift",
                        jobs.MODEL_TYPE_TAG: model_type,
                        "antmeter/decision": decision.action,
                        "antmeter/reasons": "; ".join(decision.reasons)[:1000],
                    },
                )
            )
    context.update_cursor(json.dumps({"storage_id": latest.storage_id}))
    context.log.info(f"retrain decisions: {decisions}")
    return requests or dg.SkipReason(f"no retrain needed: {decisions}")


def _training_window(
    instance: dg.DagsterInstance, settings: AntmeterSettings, store: MarketStoreResource
) -> dict:
    """The data window a retrain launched now would read (as ``training_dataset`` computes it)."""
    symbols = sorted(instance.get_dynamic_partitions("symbols"))
    return models.training_window(settings, store.get(), symbols)


def _next_retrain_key(action: str, window: dict, serving: str | None) -> str:
    """The retrain key of the run the sensor would launch for ``action`` (its job's default config)."""
    from antmeter.live.policy import retrain_key

    config = models.TrainingRunConfig(
        **({"mode": "incremental", **models.fine_tune_defaults()} if action == "incremental" else {})
    )
    return retrain_key(
        action, data_window=window, run_config=models.run_config_key(config), base_version=serving
    )


def _gated_without_champion(instance: dg.DagsterInstance, model_type: str) -> bool:
    """Whether this type has been through its gate and nothing serves (its candidates were refused)."""
    history = gate_history(instance, model_type)
    return history.last_ended_at is not None and history.serving_version is None


class GateHistory(NamedTuple):
    """One model type's gate record: when its last retrain ended (the gate's clock), its consecutive
    rejections (newest first, until a promotion), the version its champion serves and the retrain keys
    of its rejected candidates (among the records read)."""

    last_ended_at: pd.Timestamp | None
    rejection_streak: int
    serving_version: str | None
    rejected_keys: frozenset[str] = frozenset()


def gate_history(instance: dg.DagsterInstance, model_type: str, limit: int = 20) -> GateHistory:
    """Read from the type's own champion materializations (never another type's)."""
    records = instance.fetch_materializations(dg.AssetKey(f"{model_type}_champion"), limit=limit).records
    metas = [r.asset_materialization.metadata for r in records]  # newest first
    streak = 0
    for meta in metas:
        if "gate" not in meta or meta["gate"].value != "rejected":
            break
        streak += 1
    ended = next((pd.Timestamp(m["gated_at"].value) for m in metas if "gated_at" in m), None)
    serving = next((str(m["champion_version"].value) for m in metas if "champion_version" in m), None)
    rejected = frozenset(
        str(m["retrain_key"].value)
        for m in metas
        if "retrain_key" in m and "gate" in m and m["gate"].value == "rejected"
    )
    return GateHistory(ended, streak, None if serving == "none" else serving, rejected)


def rejection_streak(instance: dg.DagsterInstance, model_type: str) -> int:
    """Consecutive rejected gates of one model type, newest first, until a promotion."""
    return gate_history(instance, model_type).rejection_streak


def retrain_in_progress(instance: dg.DagsterInstance, model_type: str) -> bool:
    """Whether a retrain of this type (its own jobs, or the all-types ones) is queued or running."""
    names = [j.name for (t, _), j in jobs.retrain_jobs.items() if t == model_type]
    names += [jobs.training_job.name, jobs.incremental_retrain_job.name]
    active = [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
    ]
    return any(instance.get_runs(dg.RunsFilter(job_name=name, statuses=active), limit=1) for name in names)


@dg.run_failure_sensor(
    default_status=SENSOR_STATUS,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    description="Posts failed runs to the alert webhook (ANTMETER_ALERT_WEBHOOK_URL).",
)
def run_failure_alert(context: dg.RunFailureSensorContext, alerts: AlertWebhookResource):
    run = context.dagster_run
    payload = {
        "event": "run_failure",
        "job": run.job_name,
        "run_id": run.run_id,
        "tags": dict(run.tags),
        "error": context.failure_event.message,
    }
    context.log.error(f"run {run.run_id} of {run.job_name} failed: {context.failure_event.message}")
    alerts.post(payload)


schedules = [
    harvest_schedule,
    news_schedule,
    export_schedule,
    predictions_schedule,
    verification_schedule,
    weekly_retrain_schedule,
    retention_schedule,
]
sensors = [automation_sensor, retrain_on_drift, run_failure_alert]
extra_jobs = [retention_job]
