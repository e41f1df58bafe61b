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


@dataclass(frozen=True)
class ReportSettings:
    data_dir: Path
    interval: str = "1m"
    task: str = "binary"
    primary_horizon: int = 5
    fee_bps: float = 10.0
    lookback: pd.Timedelta = pd.Timedelta(days=3)
    rolling_window: str = "6h"
    feature_columns: tuple[str, ...] = ()
    retrain_policy: policy.RetrainPolicy = field(default_factory=policy.RetrainPolicy)
    # where the rolling-accuracy plot goes (one file per report; default reports/rolling_accuracy.png)
    plot_path: Path | None = None


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

    ``champions`` maps a registered model name to its serving config (``class_rates`` per horizon).
    """
    start = now - settings.lookback
    preds = store.read_frame("predictions", time_range=(start, None))
    symbols = sorted(preds["symbol"].unique()) if len(preds) else []
    candles = {
        s: store.read_candles(s, settings.interval, start - pd.Timedelta(hours=1), None) for s in symbols
    }
    verified_rows = 0
    if len(preds):
        rows = verification.verify_predictions(preds, candles, now, task=settings.task)
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
        joined = verification.add_baselines(joined, candles=candles, class_rates=rates, task=settings.task)
        table = verification.rolling_report(joined, settings.rolling_window, task=settings.task, every=60)
        plot = verification.plot_rolling_accuracy(
            table,
            settings.plot_path or settings.data_dir / "reports" / "rolling_accuracy.png",
            warmup=settings.rolling_window,
        )
        primary = joined[joined["horizon_min"] == settings.primary_horizon]
        for (name, version, symbol), group in primary.groupby(["model_name", "model_version", "symbol"]):
            summary, _ = trading.long_flat_short_pnl(group, fee_bps=settings.fee_bps)
            pnl[f"{name} v{version} {symbol}"] = summary
        for (name, version), group in primary.groupby(["model_name", "model_version"]):
            window = policy.summarize_window(group, settings.retrain_policy, now, model_version=str(version))
            stats[name] = {"model_version": str(version), **window.__dict__}
    drift_frame = pd.DataFrame()
    if current_features is not None and reference_features is not None and len(current_features):
        columns = [c for c in settings.feature_columns if c in current_features.columns]
        drift_frame = drift.feature_drift(
            reference_features, current_features, drift.psi_eligible(columns) if columns else None
        )
        worst = drift.max_psi(drift_frame)
        for entry in stats.values():
            entry["max_psi"] = worst
    return VerificationReport(verified_rows, table, drift_frame, pnl, stats, plot)


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


def pnl_markdown(pnl: dict[str, Any]) -> str:
    """One row per model/symbol: strategy vs buy-and-hold vs baselines, after fees."""
    rows = []
    for key, summary in pnl.items():
        row = {"series": key, "fee_bps": summary.get("fee_bps")}
        for who in ("strategy", "buy_and_hold"):
            metrics = summary.get(who, {})
            row[f"{who}_pnl_bps"] = metrics.get("net_bps", metrics.get("pnl_bps"))
            row[f"{who}_sharpe"] = metrics.get("sharpe")
        for name, metrics in (summary.get("baselines") or {}).items():
            row[f"{name}_pnl_bps"] = metrics.get("net_bps", metrics.get("pnl_bps"))
        rows.append(row)
    return pd.DataFrame(rows).round(3).to_markdown(index=False) if rows else "no verified predictions yet"


def to_jsonable(value: Any) -> Any:
    return json.loads(
        json.dumps(value, default=lambda v: None if isinstance(v, float) and np.isnan(v) else str(v))
    )
