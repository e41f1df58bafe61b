"""The verification report: verify stored predictions, score them next to the baselines, measure
feature drift and after-fee P&L, and summarize what the retraining policy needs. No Dagster here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from antmeter.live import drift, policy, trading, verification
from antmeter.live._frames import candle_closes


@dataclass(frozen=True)
class ReportSettings:
    data_dir: Path
    interval: str = "1m"
    task: str = "binary"
    flat_band_bps: float | None = None
    primary_horizon: int = 5
    fee_bps: float = 10.0
    entry_delay_candles: int = 0
    drift_windows: int = 2
    # how far back predictions are verified and charted; None: the retrain policy's chart span
    lookback: pd.Timedelta | None = None
    rolling_window: str = "6h"
    feature_columns: tuple[str, ...] = ()
    retrain_policy: policy.RetrainPolicy = field(default_factory=policy.RetrainPolicy)
    # where the rolling-accuracy plot goes (one file per report; default reports/rolling_accuracy.png)
    plot_path: Path | None = None

    def __post_init__(self) -> None:
        if self.retrain_policy.interval != self.interval:
            raise ValueError(
                f"ReportSettings: the retrain policy's interval {self.retrain_policy.interval!r} must be the "
                f"candle interval {self.interval!r}"
            )
        if self.retrain_policy.horizon != self.primary_horizon:
            raise ValueError(
                f"ReportSettings: the retrain policy's horizon {self.retrain_policy.horizon} must be the "
                f"primary horizon {self.primary_horizon} (ANTMETER_RETRAIN_POLICY / settings.primary_horizon)"
            )
        if self.task == "three_class" and self.flat_band_bps is None:
            raise ValueError("ReportSettings: task='three_class' needs flat_band_bps (the labels' flat band)")
        if self.lookback is None:
            object.__setattr__(self, "lookback", self.retrain_policy.chart_span)
        elif self.lookback < self.retrain_policy.chart_span:
            raise ValueError(
                f"ReportSettings: lookback {self.lookback} is shorter than the retrain policy's chart span "
                f"{self.retrain_policy.chart_span} (chart_candles); the CUSUM charts would miss rows"
            )


@dataclass
class VerificationReport:
    verified_rows: int
    table: pd.DataFrame
    drift: pd.DataFrame
    pnl: dict[str, Any]
    policy_stats: dict[str, dict[str, Any]]
    plot: Path | None


def build_report(
    store,
    settings: ReportSettings,
    now: pd.Timestamp,
    champions: dict[str, dict[str, Any]],
    current_features: pd.DataFrame | None = None,
    reference_features: pd.DataFrame | None = None,
) -> VerificationReport:
    """Verify predictions made in the lookback window and report on them.

    ``champions`` maps a registered model name to its serving config (``class_rates``,
    ``persistence_rates`` and ``validated_accuracy`` per horizon, and ``serving_version``: the version its
    gate serves). Only the serving version of each model is judged by the policy, against its own
    validated accuracy. P&L enters at the close of the candle after
    each prediction was stored (plus ``entry_delay_candles``).
    """
    start = now - settings.lookback
    preds = store.read_frame("predictions", time_range=(start, None))
    symbols = sorted(preds["symbol"].unique()) if len(preds) else []
    # persistence looks back one horizon from the oldest prediction
    back = (
        settings.retrain_policy.candle * (int(preds["horizon_min"].max()) + 1)
        if len(preds)
        else pd.Timedelta(0)
    )
    candles = {
        s: store.read_candles(s, settings.interval, start - max(back, pd.Timedelta(hours=1)), None)
        for s in symbols
    }
    verified_rows = 0
    if len(preds):
        rows = verification.verify_predictions(
            preds,
            candles,
            now,
            task=settings.task,
            flat_band_bps=settings.flat_band_bps,
            interval=settings.interval,
        )
        if len(rows):
            verified_rows = store.upsert_frame("verification", rows)
    ver = store.read_frame("verification", time_range=(start, None))
    table = pd.DataFrame()
    pnl: dict[str, Any] = {}
    stats: dict[str, dict[str, Any]] = {}
    plot = None
    if len(ver) and len(preds):
        joined = verification.join_verification(preds, ver)
        rates = _class_rates(champions, joined)
        persistence = next(
            (c["persistence_rates"] for c in champions.values() if c.get("persistence_rates")), None
        )
        joined = verification.add_baselines(
            joined,
            candles=candles,
            class_rates=rates,
            task=settings.task,
            flat_band_bps=settings.flat_band_bps,
            persistence_rates=persistence,
            interval=settings.interval,
        )
        table = verification.rolling_report(
            joined,
            settings.rolling_window,
            task=settings.task,
            flat_band_bps=settings.flat_band_bps,
            every=60,
            interval=settings.interval,
        )
        plot = verification.plot_rolling_accuracy(
            table,
            settings.plot_path or settings.data_dir / "reports" / "rolling_accuracy.png",
            warmup=settings.rolling_window,
        )
        primary = joined[joined["horizon_min"] == settings.primary_horizon].copy()
        closes = candle_closes(candles) if candles else None
        if closes is not None and "created_at" in primary.columns and len(primary):
            primary["realized_return"] = trading.tradable_returns(
                primary, closes, settings.entry_delay_candles, settings.retrain_policy.candle
            )
        for (name, version, symbol), group in primary.groupby(["model_name", "model_version", "symbol"]):
            summary, _ = trading.long_flat_short_pnl(
                group, fee_bps=settings.fee_bps, interval=settings.interval
            )
            pnl[f"{name} v{version} {symbol}"] = {
                **summary,
                "entry_delay_candles": settings.entry_delay_candles,
            }
        for name, group in primary.groupby("model_name"):
            serving = champions.get(str(name), {}).get("serving_version")
            if serving is None:  # unknown serving version: the newest, ordered numerically
                serving = max(group["model_version"].astype("str").unique(), key=policy.version_key)
            validated = (champions.get(str(name), {}).get("validated_accuracy") or {}).get(
                str(settings.primary_horizon)
            )
            window = policy.summarize_window(
                group, settings.retrain_policy, now, model_version=str(serving), validated=validated
            )
            stats[str(name)] = {**window.__dict__, "model_version": str(serving)}
    drift_frame = pd.DataFrame()
    if current_features is not None and reference_features is not None and len(current_features):
        columns = [c for c in settings.feature_columns if c in current_features.columns]
        warning, drift_frame = drift.persistent_drift(
            reference_features,
            current_features,
            drift.psi_eligible(columns) if columns else None,
            windows=settings.drift_windows,
            null_step=180,
        )
        worst = drift.max_psi(drift_frame)
        for entry in stats.values():
            entry["max_psi"] = worst
            entry["drift_warning"] = warning
    return VerificationReport(verified_rows, table, drift_frame, pnl, stats, plot)


def policy_charts(stats: dict[str, dict[str, Any]], retrain_policy: policy.RetrainPolicy) -> pd.DataFrame:
    """One row per model: the judged version, its window accuracy, the validated lower bound and the three
    CUSUM charts next to the alarm level for these models (the sensor's Bonferroni count also includes
    gated types that nothing serves)."""
    level = retrain_policy.alarm_threshold(len(stats))
    rows = [
        {
            "model": name,
            "version": entry.get("model_version"),
            "n": entry.get("n"),
            "accuracy": round(entry["n_correct"] / entry["n"], 4) if entry.get("n") else None,
            "validated_lower_bound": None
            if entry.get("validated_reference") is None
            else round(float(entry["validated_reference"]), 4),
            "cusum_accuracy": round(float(entry.get("cusum_accuracy", 0.0)), 2),
            "cusum_baseline": round(float(entry.get("cusum_baseline", 0.0)), 2),
            "cusum_validated": round(float(entry.get("cusum_validated", 0.0)), 2),
            "alarm_level": round(level, 2),
        }
        for name, entry in sorted(stats.items())
    ]
    return pd.DataFrame(rows)


def _class_rates(champions: dict[str, dict[str, Any]], joined: pd.DataFrame) -> dict:
    """Training class rates keyed (symbol, horizon) for the majority baseline (one champion's)."""
    for config in champions.values():
        rates = config.get("class_rates") or {}
        if rates:
            return {
                (s, int(h)): rates[str(h)]
                for s in joined["symbol"].unique()
                for h in joined["horizon_min"].unique()
                if str(h) in rates
            }
    return {}


def to_jsonable(value: Any) -> Any:
    return json.loads(
        json.dumps(value, default=lambda v: None if isinstance(v, float) and np.isnan(v) else str(v))
    )
