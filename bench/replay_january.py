"""The live loop replayed on real January 2024 candles: adaptive champion vs never-retrained champion vs baselines.

Data: Binance spot 1-minute candles of BTCUSDT and ETHUSDT for January 2024 (no news: features without
sentiment). :class:`antmeter.live.replay_runner.ReplayRunner` trains the first champion with the production
recipe (``train_candidate``, ``laptop`` preset, one model type, default ``lstm``) only on candles that closed
before 2024-01-21 00:00 UTC (January 1-20), then steps hourly through January 21-31: ingest the candles that
have closed, verify earlier predictions (``verify_predictions``), measure feature drift, decide with
``antmeter.live.policy.evaluate`` (the sensor's function), retrain on the newest ``--training-days`` when it
says so (``incremental`` = fine-tune the champion, ``full`` = the full recipe), gate the candidate with
``antmeter.registry.promotion.gate_candidate`` (the Dagster gate's function: paired per-row log-loss tests at 5 minutes), and
predict every new minute with the adaptive champion and with the frozen first champion (INT8 ONNX through
``predict_symbol``). The majority and persistence baselines are scored on the adaptive system's rows. P&L:
the long/flat/short rule of :mod:`antmeter.live.trading` (non-overlapping h-minute positions, 10 bps per
side), per symbol and horizon, summed over symbols. The only departure from the deployment's default
retraining policy is ``--cooldown-minutes`` (default one day instead of 60 candles; see the JSON's ``policy``),
to fit the time budget on a 2-core machine.

Prints a readable summary and ONE JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from antmeter.learn.recipe import RecipeConfig
from antmeter.live.drift import ALERT as PSI_ALERT
from antmeter.live.policy import RetrainPolicy
from antmeter.live.replay import ADAPTIVE, FROZEN
from antmeter.live.replay_runner import ReplayRunConfig, ReplayRunner, ReplayRunResult
from antmeter.market.file_import import read_candle_file
from antmeter.registry.promotion import GateConfig

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "binance-spot-1m-2024-01"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
START, END = pd.Timestamp("2024-01-21", tz="UTC"), pd.Timestamp("2024-02-01", tz="UTC")
HORIZONS = (5, 10, 30)


def log(message: str) -> None:
    if "  epoch " not in message:
        print(message, file=sys.stderr, flush=True)


def _num(value) -> float | None:
    return (
        None
        if value is None or (isinstance(value, float) and not math.isfinite(value))
        else round(float(value), 5)
    )


def accuracy_table(result: ReplayRunResult) -> dict:
    """{horizon: {stream: {n, accuracy}}} over the whole replay."""
    out = {}
    for h in HORIZONS:
        frame = result.accuracy(h)
        out[str(h)] = {r.stream: {"n": int(r.n), "accuracy": _num(r.accuracy)} for r in frame.itertuples()}
    return out


def pnl_table(result: ReplayRunResult) -> dict:
    """{horizon: {stream: {net_bps, gross_bps, fees_bps, n_trades}}} summed over symbols."""
    out = {}
    for h in HORIZONS:
        frame = result.pnl(h)
        out[str(h)] = {
            r.stream: {
                "net_bps": _num(r.net_bps),
                "gross_bps": _num(r.gross_bps),
                "fees_bps": _num(r.fees_bps),
                "n_trades": int(r.n_trades),
            }
            for r in frame.itertuples()
        }
    return out


def paired_accuracy_edge(result: ReplayRunResult, horizon: int) -> dict:
    """Adaptive minus frozen accuracy on the same keys, with a standard error from non-overlapping outcomes."""
    verified = result.replay.verified
    keys = ["symbol", "prediction_time", "horizon_min"]
    rows = verified[verified["horizon_min"] == horizon]
    both = rows[rows["stream"] == ADAPTIVE][[*keys, "correct"]].merge(
        rows[rows["stream"] == FROZEN][[*keys, "correct"]], on=keys, suffixes=("_adaptive", "_frozen")
    )
    diff = both["correct_adaptive"].astype(float) - both["correct_frozen"].astype(float)
    n_eff = len(both) / horizon
    se = float(diff.std(ddof=1) / math.sqrt(n_eff)) if n_eff > 1 and diff.std(ddof=1) > 0 else float("nan")
    return {
        "n": len(both),
        "edge": _num(diff.mean()),
        "se": _num(se),
        "disagreements": int((both["correct_adaptive"] != both["correct_frozen"]).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model-type", default="lstm")
    parser.add_argument("--preset", default="laptop")
    parser.add_argument("--n-folds", type=int, default=3)
    parser.add_argument("--training-days", type=float, default=14.0, help="history used by each retrain")
    parser.add_argument("--cooldown-minutes", type=int, default=24 * 60)
    parser.add_argument("--step", default="1h")
    parser.add_argument("--fee-bps", type=float, default=10.0)
    parser.add_argument("--max-minutes", type=float, default=15.0, help="no replay step starts after this")
    parser.add_argument(
        "--root", type=Path, default=None, help="keep the replay namespace here (default: temp)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.monotonic()
    candles = {s: read_candle_file(args.data_dir / f"{s}.csv") for s in SYMBOLS}
    policy = replace(RetrainPolicy(), cooldown_candles=args.cooldown_minutes)
    gate = GateConfig()
    config = ReplayRunConfig(
        name=f"january-{args.model_type}",
        recipe=RecipeConfig(model_type=args.model_type, preset=args.preset, n_folds=args.n_folds),
        policy=policy,
        gate=gate,
        step=args.step,
        training_days=args.training_days,
        fee_bps=args.fee_bps,
    )
    root = args.root or Path(tempfile.mkdtemp(prefix="antmeter-replay-january-"))
    try:
        runner = ReplayRunner(config, candles, root, progress=log)
        result = runner.run(START, END, max_seconds=args.max_minutes * 60 - (time.monotonic() - started))
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    wall = time.monotonic() - started
    decisions = result.replay.decisions
    gates = result.gates
    gate_rows = [
        {
            "at": str(g.at),
            "kind": g.kind,
            "version": g.version,
            "promoted": bool(g.promoted),
            "candidate_log_loss": _num(g.candidate_score),
            "champion_log_loss": _num(g.champion_score),
            "baselines_log_loss": {k: _num(v) for k, v in g.baseline_scores.items()},
            "samples": int(g.samples),
            "seconds": g.seconds,
            "summary": g.summary,
        }
        for g in gates.itertuples()
    ]
    triggered = decisions[decisions["action"] != "none"]
    psi = decisions["max_psi"].dropna()
    daily_accuracy = result.daily_accuracy(5).round(4)
    daily_pnl = result.daily_pnl(5)
    accuracy, pnl = accuracy_table(result), pnl_table(result)
    edges = {str(h): paired_accuracy_edge(result, h) for h in HORIZONS}
    print("\nDaily accuracy at 5 min (prediction day):\n" + daily_accuracy.to_string())
    print("\nCumulative after-fee P&L at 5 min (bps, both symbols):\n" + daily_pnl.to_string())
    print("\nGate decisions:")
    for g in gate_rows:
        print(f"  {g['at']} {g['kind']:<11} v{g['version']} {g['summary']} ({g['seconds']} s)")
    adaptive_better = {
        h: (pnl[h].get(ADAPTIVE, {}).get("net_bps") or 0) > (pnl[h].get(FROZEN, {}).get("net_bps") or 0)
        for h in pnl
    }
    best_pnl = {h: max(pnl[h], key=lambda s: pnl[h][s]["net_bps"]) for h in pnl}
    promotions = int(gates["promoted"].iloc[1:].sum())
    actions = ", ".join(f"{k}: {v}" for k, v in triggered["action"].value_counts().items()) or "none"
    edge_text = ", ".join(
        f"{h}m {e['edge']:+.4f}" + (f" (se {e['se']})" if e["se"] is not None else "")
        for h, e in edges.items()
    )
    note = (
        f"First champion {'passed' if gates['promoted'].iloc[0] else 'failed'} the gate. "
        f"{len(triggered)} retrain decisions ({actions}), {promotions} promotions"
        + (
            " - the adaptive system served the first champion throughout, so it equals the frozen one."
            if promotions == 0
            else "."
        )
        + f" Adaptive minus frozen accuracy (paired): {edge_text}."
        + " Best after-fee P&L by horizon: "
        + ", ".join(f"{h}m {s}" for h, s in best_pnl.items())
        + "; adaptive P&L above frozen at: "
        + (", ".join(f"{h}m" for h, v in adaptive_better.items() if v) or "no horizon")
        + f". Max PSI >= {PSI_ALERT} at {int((psi >= PSI_ALERT).sum())}/{len(psi)} steps"
        + " (drift is a warning only; it never triggers a retrain)."
    )
    print("\n" + note)
    summary = {
        "bench": "replay_january",
        "data": str(args.data_dir),
        "symbols": list(SYMBOLS),
        "champion_trained_on": "2024-01-01..2024-01-20 (candles closed before 2024-01-21 00:00 UTC)",
        "replay_window": f"{START}..{END}",
        "completed_until": str(result.completed_until),
        "complete": bool(result.completed_until >= END),
        "steps": len(decisions),
        "step": args.step,
        "model_type": args.model_type,
        "model_types_note": "only one model type (lstm by default) to fit the time budget",
        "preset": args.preset,
        "recipe": config.recipe.to_dict(),
        "stride_min": config.dataset_spec().stride,
        "retrain_training_days": args.training_days,
        "policy": asdict(policy),
        "policy_note": f"deployment default RetrainPolicy except cooldown_candles={args.cooldown_minutes} (default 60)",
        "gate": asdict(gate),
        "drift": {
            "steps_with_psi": len(psi),
            "median_max_psi": _num(psi.median()) if len(psi) else None,
            "steps_at_or_above_alert": int((psi >= PSI_ALERT).sum()),
        },
        "fee_bps_per_side": args.fee_bps,
        "wall_s": round(wall, 1),
        "decisions": {k: int(v) for k, v in decisions["action"].value_counts().items()},
        "trigger_codes": {
            k: int(v) for k, v in triggered["codes"].str.split(",").explode().value_counts().items()
        },
        "gates": gate_rows,
        "accuracy": accuracy,
        "adaptive_minus_frozen_accuracy": edges,
        "daily_accuracy_5m": {
            d: {s: _num(v) for s, v in row.items()} for d, row in daily_accuracy.iterrows()
        },
        "pnl_bps": pnl,
        "daily_cum_pnl_bps_5m": {d: {s: _num(v) for s, v in row.items()} for d, row in daily_pnl.iterrows()},
        "note": note,
    }
    print(
        json.dumps(
            summary, allow_nan=False, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)
        )
    )


if __name__ == "__main__":
    main()
