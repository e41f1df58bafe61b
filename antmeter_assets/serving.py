"""The live loop's assets: predictions from each champion, and their verification report."""

import os
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd

from antmeter_assets.models import MODEL_TYPES
from antmeter_assets.partitions import utc_now
from antmeter_resources import (
    AlertWebhookResource,
    AntmeterSettings,
    CandleSourceResource,
    MarketStoreResource,
    MlflowResource,
)

if TYPE_CHECKING:  # the registry module imports torch: loading the code location stays light
    from antmeter.registry.versions import ChampionCache, ServedChampion

MAX_BACKFILL_CANDLES = 2 * 24 * 60  # how far back new predictions are made (two days at 1m)
CURRENT_FEATURE_CANDLES = 6 * 60  # the drift check's current window (six hours at 1m)
# When automation verifies predictions: after each tick of this cron, once predictions have updated
# since it (hourly; a replay or test on a fast clock shortens it, e.g. "* * * * *").
VERIFICATION_CRON = os.environ.get("ANTMETER_VERIFICATION_CRON", "0 * * * *")


_CHAMPION_CACHES: dict[tuple[str, str], "ChampionCache"] = {}


def champion_cache(settings: AntmeterSettings, mlflow: MlflowResource) -> "ChampionCache":
    """This process's :class:`ChampionCache` for the registry and data directory: champions come from
    the MLflow registry by alias (``models:/<name>@champion``), downloaded once per version into
    ``<data>/champion_cache`` and kept loaded, so a long-lived worker loads a model once."""
    from antmeter.registry.versions import ChampionCache

    key = (mlflow.tracking_uri, settings.data_dir)
    if key not in _CHAMPION_CACHES:
        _CHAMPION_CACHES[key] = ChampionCache(mlflow.client(), Path(settings.data_dir) / "champion_cache")
    return _CHAMPION_CACHES[key]


def serving_champions(settings: AntmeterSettings, mlflow: MlflowResource) -> dict[str, "ServedChampion"]:
    """The champion of each serving model type that has one, by model type."""
    cache = champion_cache(settings, mlflow)
    found = {}
    for model_type in settings.model_types:
        served = cache.get(mlflow.registered_name(model_type))
        if served is not None:
            found[model_type] = served
    return found


def predict_new_candles(
    settings: AntmeterSettings,
    market,
    champions: dict[str, "ServedChampion"],
    now: pd.Timestamp,
    log,
    symbols: list[str] | None = None,
) -> tuple[int, dict[str, str], dict[str, int], list[pd.DataFrame]]:
    """Each champion's predictions for every candle of ``symbols`` (default: all) closed since its
    last prediction (at most ``MAX_BACKFILL_CANDLES`` back), upserted into the store (idempotent by key).
    A champion trained on other feature columns than the configured ones refuses to serve (the error
    names the columns). Returns (rows written, stale symbols -> newest close, rows per model/symbol,
    the new prediction frames)."""
    from antmeter.features.pipeline import compute_features, model_feature_columns, required_warmup_candles
    from antmeter.live.inference import predict_symbol, require_same_schema
    from antmeter.market.candles import closed_before, interval_timedelta

    config = settings.feature_config()
    candle = interval_timedelta(settings.interval)
    warmup = candle * required_warmup_candles(config)  # counted in candles
    backfill = candle * MAX_BACKFILL_CANDLES
    written, stale, per_model, new_rows = 0, {}, {}, []
    for served in champions.values():
        label = f"champion {served.name} v{served.version}"
        require_same_schema(served.model, model_feature_columns(config), label)
        if served.model.interval != settings.interval:
            raise ValueError(
                f"{label} was trained on {served.model.interval} candles, settings.interval is "
                f"{settings.interval!r}: retrain it on this interval"
            )
    for model_type, served in champions.items():
        model, name, version = served.model, served.name, served.version
        earliest = pd.Timestamp(model.config["trained_until"]) + candle * max(model.horizons)
        for symbol in symbols if symbols is not None else market.symbols():
            previous = market.read_frame(
                "predictions",
                filters={"symbol": symbol, "model_name": name, "model_version": version},
                time_range=(now - backfill, None),
            )
            after = max(earliest, previous["prediction_time"].max()) if len(previous) else earliest
            after = max(after, now - backfill)
            # only candles closed by ``now`` (the rows' created_at): a harvest running beside this
            # run may store the next candle while it predicts
            candles = closed_before(
                market.read_candles(symbol, settings.interval, after - warmup - candle * model.window, None),
                now,
                settings.interval,
            )
            newest_close = candles["open_time"].max() + candle if len(candles) else None
            if newest_close is None or now - newest_close > settings.stale_after():
                stale[symbol] = str(newest_close)
                log.warning(f"{symbol}: stale input (newest candle closed {newest_close}); not predicting")
                continue
            sentiment = market.read_frame(
                "sentiment_hourly",
                filters={"symbol": symbol},
                time_range=(candles["open_time"].min() - pd.Timedelta(hours=2), None),
            )
            features = compute_features(
                candles, config, sentiment_hourly=sentiment, symbol=symbol, interval=settings.interval
            )
            rows = predict_symbol(model, features, symbol, name, version, after, now)
            if len(rows):
                written += market.upsert_frame("predictions", rows)
                new_rows.append(rows)
            per_model[f"{model_type} v{version} {symbol}"] = int(len(rows))
    if not per_model and not stale:
        log.warning("no champion is serving yet: nothing to predict")
    return written, stale, per_model, new_rows


def post_signals(
    alerts: AlertWebhookResource, settings: AntmeterSettings, new_rows: list[pd.DataFrame]
) -> int:
    """Post the confident ones among new predictions to the alert webhook (in the background, at most
    once per signal); returns how many were queued."""
    if not new_rows:
        return 0
    return alerts.signal(pd.concat(new_rows), settings.path("alerts", "sent", "x").parent)[0]


@dg.asset(
    group_name="live",
    kinds={"onnx", "sql"},
    deps=["features", *(f"{t}_champion" for t in MODEL_TYPES)],
    automation_condition=(
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.in_progress()
        # only the features' checks gate: a model type without a champion (never trained, or its
        # first candidate rejected) has no passed champion check and would block every prediction
        & dg.AutomationCondition.all_deps_blocking_checks_passed().ignore(
            dg.AssetSelection.assets(*(f"{t}_champion" for t in MODEL_TYPES))
        )
    ).with_label("on new features or a new champion"),
)
def predictions(
    context: dg.AssetExecutionContext,
    settings: AntmeterSettings,
    store: MarketStoreResource,
    alerts: AlertWebhookResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """Every horizon's class probabilities, predicted class, confidence and return forecast for each
    symbol, from each champion's INT8 ONNX model, for every candle closed since the last prediction.

    Features are computed by the training code and checked against the model's stored schema.
    Symbols whose newest candle is older than the staleness limit are reported, not predicted on.
    Confident new predictions are posted to the alert webhook in the background.
    """
    now = utc_now()
    written, stale, per_model, new_rows = predict_new_candles(
        settings, store.get(), serving_champions(settings, mlflow), now, context.log
    )
    signals = post_signals(alerts, settings, new_rows)
    return dg.MaterializeResult(
        metadata={
            "predictions": written,
            "alerts_sent": signals,
            "per_model_symbol": dg.MetadataValue.json(per_model),
            "stale_symbols": dg.MetadataValue.json(stale),
            "as_of": str(now),
        }
    )


@dg.asset(
    group_name="live",
    kinds={"sql", "matplotlib"},
    deps=[predictions],
    automation_condition=dg.AutomationCondition.on_cron(VERIFICATION_CRON)
    & ~dg.AutomationCondition.in_progress(),
)
def verification_report(
    context: dg.AssetExecutionContext,
    settings: AntmeterSettings,
    store: MarketStoreResource,
    candles: CandleSourceResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """Predictions joined with what the market then did (only closed candles), rolling accuracy,
    balanced accuracy, Brier and calibration next to the baselines on the same timestamps, feature
    drift (PSI) against the training reference, and an after-fee long/flat/short back-test."""
    from antmeter.features.pipeline import compute_features, model_feature_columns, required_warmup_candles
    from antmeter.live.report import ReportSettings, build_report, policy_charts, to_jsonable

    now = utc_now()
    market = store.get()
    config = settings.feature_config()
    champions = {
        served.name: {**served.model.config, "serving_version": served.version}
        for served in serving_champions(settings, mlflow).values()
    }
    current, reference = _drift_frames(
        settings, market, now, champions, config, compute_features, required_warmup_candles
    )
    report = build_report(
        market,
        ReportSettings(
            data_dir=Path(settings.data_dir),
            interval=settings.interval,
            task=settings.task,
            flat_band_bps=settings.label_config().flat_band_bps if settings.task == "three_class" else None,
            primary_horizon=settings.primary_horizon,
            fee_bps=settings.fee_bps,
            entry_delay_candles=settings.entry_delay_candles,
            feature_columns=tuple(model_feature_columns(config)),
            plot_path=settings.path("reports", f"rolling_accuracy-{context.run_id}.png"),
            retrain_policy=settings.retrain_policy(),
        ),
        now,
        champions,
        current,
        reference,
    )
    context.log.info(f"verified {report.verified_rows} prediction rows")
    alerts = report.drift[report.drift["status"] == "alert"] if len(report.drift) else report.drift
    return dg.MaterializeResult(
        metadata={
            "verified": report.verified_rows,
            **report_presentation(report, sorted(market.symbols()), sorted(champions)),
            **verified_vs_oracle(market, now, settings, candles),
            "drift_alerts": len(alerts),
            "drift_warning": any(e.get("drift_warning") for e in report.policy_stats.values()),
            "retrain_charts": dg.MetadataValue.md(
                policy_charts(report.policy_stats, settings.retrain_policy()).to_markdown(index=False)
                if report.policy_stats
                else "no serving champion judged yet"
            ),
            "policy_stats": dg.MetadataValue.json(to_jsonable(report.policy_stats)),
            "as_of": str(now),
        }
    )


def report_presentation(report, symbols: list[str], models: list[str]) -> dict[str, dg.MetadataValue]:
    """The verification report for a 1,280 px page: rolling figures per horizon, P&L in long format,
    drift worst-first, the rolling-accuracy plot as a picture (its file kept per run)."""
    from antmeter.learn.plots import drift_markdown, image_markdown, long_markdown
    from antmeter.live.verification import to_markdown

    table = report.table
    rolling = (
        "\n\n".join(
            f"**{int(h)} min**\n\n" + to_markdown(part.drop(columns="horizon_min"))
            for h, part in table.groupby("horizon_min")
        )
        if len(table)
        else "nothing verified yet"
    )
    pnl = (
        long_markdown(report.pnl, ("series", "book", "field"))
        if report.pnl
        else "no verified predictions yet"
    )
    if any(isinstance(v, dict) and "periods_per_year" in v for v in report.pnl.values()):
        pnl += "\n\nSharpe: mean / std of the per-period net return × √(periods_per_year), i.e. annualised."
    meta = {
        "rolling_vs_baselines": dg.MetadataValue.md(rolling),
        "after_fee_pnl": dg.MetadataValue.md(pnl),
        "drift": dg.MetadataValue.md(drift_markdown(report.drift, symbols, models)),
    }
    if report.plot:
        meta["plot_rolling_accuracy"] = dg.MetadataValue.md(image_markdown(report.plot, "rolling accuracy"))
        meta["plot_rolling_accuracy_file"] = dg.MetadataValue.path(str(report.plot))
    return meta


def verified_vs_oracle(market, now, settings: AntmeterSettings, candles: CandleSourceResource) -> dict:
    """On the simulator: the model's accuracy on the verified rows of the report's lookback next to the
    Bayes oracle's on the same rows (the attainable ceiling)."""
    if candles.kind != "simulator" or settings.task != "binary":
        return {}
    from antmeter.learn.oracle import oracle_correct_of_verified
    from antmeter.live.verification import join_verification

    since = (now - settings.retrain_policy().chart_span, None)  # the report's lookback
    verified = market.read_frame("verification", time_range=since)
    if not len(verified):
        return {}
    rows = join_verification(market.read_frame("predictions", time_range=since), verified)
    rows["oracle_correct"] = oracle_correct_of_verified(rows, candles.simulator_config(), settings.interval)
    rows["model_correct"] = rows["correct"].astype(bool)
    table = (
        rows.groupby(["model_name", "model_version", "horizon_min"])
        .agg(n=("model_correct", "size"), model=("model_correct", "mean"), oracle=("oracle_correct", "mean"))
        .reset_index()
        .round(4)
    )
    return {"accuracy_vs_oracle": dg.MetadataValue.md(table.to_markdown(index=False))}


def _drift_frames(settings, market, now, champions, config, compute_features, required_warmup_candles):
    """Current features (the last ``CURRENT_FEATURE_CANDLES``) and the training reference (the champion's
    training days)."""
    days = next((c.get("training_days") for c in champions.values() if c.get("training_days")), None)
    if not days:
        return None, None
    reference = []
    for symbol in market.symbols():
        stored = set(market.partition_frame_days("features", symbol))
        reference += [
            market.read_partition_frame("features", symbol, day) for day in days[-3:] if day in stored
        ]
    from antmeter.market.candles import interval_timedelta

    candle = interval_timedelta(settings.interval)
    warmup, span = candle * required_warmup_candles(config), candle * CURRENT_FEATURE_CANDLES
    current = []
    for symbol in market.symbols():
        start = now - span - warmup
        candles = market.read_candles(symbol, settings.interval, start, None)
        if len(candles):
            sentiment = market.read_frame(
                "sentiment_hourly",
                filters={"symbol": symbol},
                time_range=(start - pd.Timedelta(hours=2), None),
            )
            frame = compute_features(
                candles, config, sentiment_hourly=sentiment, symbol=symbol, interval=settings.interval
            )
            current.append(frame[frame["open_time"] >= now - span])
    if not reference or not current:
        return None, None
    return pd.concat(current, ignore_index=True), pd.concat(reference, ignore_index=True)
