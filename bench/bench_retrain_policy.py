"""The adaptive loop judged by the replay: does it retrain when it should, and only then?

Runs :class:`antmeter.live.replay_runner.ReplayRunner` (the live policy ``antmeter.live.policy.evaluate``
and the gate ``antmeter.registry.promotion.gate_candidate``, LSTM by default) over four cases, each
with several simulator seeds (real data: one run per seed of the training recipe):

(a) simulated candles without any change (negative control);
(b) the planted signal flips in the middle of the replay;
(c) the real January 2024 Binance candles (``--data-dir``, read with the file import);
(d) volatility triples in the middle (all log-price moves x3 from then on, the signal unchanged:
    a covariate shift).

Per run: sensor-requested retrains and promotions (there is no weekly schedule in a replay), the
flip -> retrain-request delay, accuracy and after-fee P&L (10 bps per side, 5 minutes) of the adaptive
system, the never-retrained champion and the best baseline, and the drift warning
(:func:`antmeter.live.drift.persistent_drift`, checked every ``--drift-every`` hours on the last 6 hours
against the champion's last 3 training days). ``worse_promotions``: promotions whose new model is worse
than the one it replaced by more than 2 paired (HAC) standard errors of per-row log loss on the next 24 h
of fresh samples. In (b) the hindsight reference is the same recipe trained only on post-flip data
(``--hindsight-days``, default 2, after the flip), through the same gate, in the same run; both are scored on the
same window after it. A case whose first champion fails its gate reports ``serving: none`` and flat P&L.

The full configuration (``--days 7 --seeds 3 --step 1h``) takes about an hour on an idle machine with
one process; ``--jobs N`` runs the (case, seed) replays in N processes of one torch thread each. The
scale is configurable and the JSON records the configuration used. Prints ONE JSON object last.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from antmeter.features.pipeline import FeatureConfig, compute_features, model_feature_columns
from antmeter.learn.recipe import RecipeConfig
from antmeter.live import drift
from antmeter.live.policy import RetrainPolicy
from antmeter.live.replay import ADAPTIVE, FROZEN
from antmeter.live.replay_runner import ReplayRunConfig, ReplayRunner
from antmeter.market.file_import import read_candle_file
from antmeter.market.simulator import SimulatorConfig, simulate_range
from antmeter.registry.promotion import GateConfig, paired_test, score_rows

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "binance-spot-1m-2024-01"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
SIM_START = pd.Timestamp("2024-03-04", tz="UTC")
REAL_START = pd.Timestamp("2024-01-15", tz="UTC")
HORIZON = 5


def log(message: str) -> None:
    if "  epoch " not in message:
        print(message, file=sys.stderr, flush=True)


def num(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return round(value, 5) if math.isfinite(value) else None


def tripled_after(candles: pd.DataFrame, change: pd.Timestamp) -> pd.DataFrame:
    """Every log-price move after ``change`` times 3 (OHLC through the same monotone map)."""
    out = candles.copy()
    after = out["open_time"] >= change
    if not after.any():
        return out
    anchor = float(out.loc[~after, "close"].iloc[-1]) if (~after).any() else float(out["open"].iloc[0])
    for column in ("open", "high", "low", "close"):
        out.loc[after, column] = anchor * np.exp(3.0 * np.log(out.loc[after, column] / anchor))
    return out


def case_candles(case: str, seed: int, start: pd.Timestamp, end: pd.Timestamp, change, data_dir):
    if case == "c":
        frames = {s: read_candle_file(data_dir / f"{s}.csv") for s in SYMBOLS}
        return {
            s: f[f["open_time"] < end + pd.Timedelta(days=1)].reset_index(drop=True)
            for s, f in frames.items()
        }
    config = SimulatorConfig(
        seed=seed,
        anchor_date="2024-03-01",
        signal_strength=1.0,
        signal_flip_at=change.isoformat() if case == "b" else None,
    )
    last = str((end + pd.Timedelta(days=1)).date())
    frames = {s: simulate_range(s, "2024-03-01", last, config).candles for s in SYMBOLS}
    return {s: tripled_after(f, change) for s, f in frames.items()} if case == "d" else frames


def drift_checks(candles, start, end, every_hours: float, reference_days: float = 3.0) -> list[dict]:
    """The drift warning at every ``every_hours`` step (reference: the days before ``start``)."""
    features = FeatureConfig(include_sentiment=False)
    columns = drift.psi_eligible(model_feature_columns(features))
    full = pd.concat(
        [compute_features(c, features).assign(symbol=s) for s, c in candles.items()], ignore_index=True
    )
    reference = full[
        (full["open_time"] >= start - pd.Timedelta(days=reference_days)) & (full["open_time"] < start)
    ]
    checks = []
    for now in pd.date_range(start + pd.Timedelta(hours=6), end, freq=f"{every_hours}h"):
        current = full[(full["open_time"] >= now - pd.Timedelta(hours=6)) & (full["open_time"] < now)]
        warning, frame = drift.persistent_drift(reference, current, columns, windows=2, null_step=180)
        checks.append({"now": now, "warning": warning, "max_psi": drift.max_psi(frame)})
    return checks


def kl_bernoulli(p: float, q: float) -> float:
    """KL(Bernoulli(p) || Bernoulli(q)) in nats."""
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def detection_bound(result, change: pd.Timestamp, policy: RetrainPolicy, n_models: int = 1) -> dict:
    """What the verified rows allow after ``change``: the never-retrained champion's accuracy there and
    the CUSUM delays it implies (Lorden: delay ~ alarm level / drift per effective row, plus the outcome
    lag) for the threshold chart, for the validated chart (at the first champion's validated lower
    bound) and for the best chart against the threshold (designed at the measured post-change accuracy,
    drift = KL). Effective rows per hour as the policy counts them (an h-candle outcome counts 1/h of a
    row when predictions come every candle)."""
    verified = result.replay.verified
    rows = verified[
        (verified["stream"] == FROZEN)
        & (verified["horizon_min"] == policy.horizon)
        & (verified["prediction_time"] >= change)
    ]
    if len(rows) < 50:
        return {}
    p_post = float(np.clip(rows["correct"].mean(), 0.01, 0.99))
    symbols = rows["symbol"].nunique()
    effective_per_hour = symbols * (pd.Timedelta(hours=1) / policy.candle) / policy.horizon
    level = policy.alarm_threshold(n_models)
    lag_h = (policy.horizon + 1) * policy.candle / pd.Timedelta(hours=1)

    def drift(p0: float, p1: float) -> float:
        return p_post * math.log(p1 / p0) + (1 - p_post) * math.log((1 - p1) / (1 - p0))

    def hours(drift_per_row: float | None) -> float | None:
        if drift_per_row is None or drift_per_row <= 0:
            return None
        return level / (drift_per_row * effective_per_hour) + lag_h

    threshold = policy.accuracy_threshold
    serving = json.loads((result.namespace / "candidates" / "v1" / "bundle" / "serving.json").read_text())
    validated = (serving.get("validated_accuracy") or {}).get(str(policy.horizon))
    reference = policy.validated_reference(validated)
    best = hours(kl_bernoulli(p_post, threshold) if p_post < threshold else None)
    return {
        "frozen_accuracy_after_change": num(p_post),
        "validated_accuracy": num(validated["accuracy"]) if validated else None,
        "validated_lower_bound": num(reference),
        "effective_rows_per_hour": num(effective_per_hour),
        "alarm_level": num(level),
        "expected_delay_hours_threshold_chart": num(hours(drift(threshold, threshold - policy.shift))),
        "expected_delay_hours_best_threshold_chart": num(best),
        "expected_delay_hours_validated_chart": None
        if reference is None
        else num(hours(drift(reference, min(0.5, reference - policy.shift)))),
    }


def worse_promotions(runner: ReplayRunner, result, gate: GateConfig) -> list[dict]:
    """Each promotion's new vs previous model on the next 24 h of fresh samples (per-row log loss)."""
    out = []
    candidates = result.namespace / "candidates"
    for retrain in result.replay.retrains[result.replay.retrains["promoted"]].itertuples():
        if retrain.previous_version is None or pd.isna(retrain.previous_version):
            continue  # the first champion after none served replaces nothing
        block_end = retrain.now + pd.Timedelta(days=1)
        if block_end > result.completed_until:
            continue
        samples = runner.samples_at(block_end, 1.0)
        rows = np.flatnonzero(pd.DatetimeIndex(samples.sample_time, tz="UTC") > retrain.now)
        if rows.size < 50:
            continue
        new = score_rows(candidates / f"v{retrain.model_version}" / "bundle", samples, rows, gate)[3]
        old = score_rows(candidates / f"v{retrain.previous_version}" / "bundle", samples, rows, gate)[3]
        test = paired_test(new, old, samples.sample_time[rows], gate.horizon_minutes, 0.05, other="previous")
        out.append(
            {
                "at": str(retrain.now),
                "new": retrain.model_version,
                "previous": retrain.previous_version,
                "mean_log_loss_diff": num(test.mean_difference),
                "se": num(test.standard_error),
                "worse": bool(test.mean_difference > 2 * test.standard_error),
            }
        )
    return out


def stream_stats(result, since: pd.Timestamp | None = None) -> dict:
    verified = result.replay.verified
    rows = verified[verified["horizon_min"] == HORIZON]
    if since is not None:
        rows = rows[rows["prediction_time"] >= since]
    accuracy = rows.groupby("stream")["correct"].agg(["mean", "size"])
    pnl = result.pnl(HORIZON).set_index("stream")["net_bps"]
    baselines = [s for s in accuracy.index if s.startswith("baseline:")]
    best = max(baselines, key=lambda s: accuracy.loc[s, "mean"]) if baselines else None
    return {
        "accuracy": {
            s: num(accuracy.loc[s, "mean"]) for s in (ADAPTIVE, FROZEN, best) if s in accuracy.index
        },
        "n": {s: int(accuracy.loc[s, "size"]) for s in (ADAPTIVE, FROZEN) if s in accuracy.index},
        "pnl_net_bps": {s: num(pnl.get(s)) for s in (ADAPTIVE, FROZEN, best, "buy_and_hold") if s},
        "best_baseline": best,
    }


def run_case(case, seed, args, root, policy, gate) -> dict:
    start = REAL_START if case == "c" else pd.Timestamp(args.sim_start, tz="UTC")
    end = start + pd.Timedelta(days=args.days)
    change = start + pd.Timedelta(days=args.days / 2)
    candles = case_candles(case, seed, start, end, change, args.data_dir)
    recipe = RecipeConfig(
        model_type=args.model_type,
        preset=args.preset,
        n_folds=args.n_folds,
        seeds=(seed,),
        primary_horizon=HORIZON,
    )

    def runner_for(name: str, initial_days: float) -> ReplayRunner:
        config = ReplayRunConfig(
            name=name, recipe=recipe, policy=policy, gate=gate, step=args.step,
            training_days=args.training_days, initial_training_days=initial_days, fee_bps=10.0,
        )  # fmt: skip
        return ReplayRunner(config, candles, root, progress=log)

    started = time.monotonic()
    runner = runner_for(f"{case}-{seed}", args.initial_days)
    result = runner.run(start, end)
    retrains = result.replay.retrains
    codes = result.replay.decisions.set_index("now")["codes"]
    retrain_codes = [codes.get(t, "") for t in retrains["now"]]
    triggered = sum("no_champion" not in c for c in retrain_codes)
    serving = bool(result.gates["promoted"].iloc[0]) or bool(retrains["promoted"].any())
    record = {
        "case": case,
        "seed": seed,
        "window": f"{start}..{end}",
        "completed_until": str(result.completed_until),
        "first_gate": result.gates["summary"].iloc[0][:300],
        "serving": "champion" if serving else "none",
        "retrains": int(len(retrains)),
        "triggered_retrains": int(triggered),  # by the accuracy charts (not the no-champion retries)
        "no_champion_retrains": int(len(retrains) - triggered),
        "promotions": int(retrains["promoted"].sum()) if len(retrains) else 0,
        # promotions that replaced a serving champion (the others made a first one where none served)
        "replacing_promotions": int((retrains["promoted"] & retrains["previous_version"].notna()).sum()),
        "retrain_times": [str(t) for t in retrains["now"]],
        "worse_promotions": worse_promotions(runner, result, gate),
        **stream_stats(result),
        "seconds": round(time.monotonic() - started, 1),
    }
    if not serving:
        record["pnl_net_bps"] = {**record["pnl_net_bps"], ADAPTIVE: 0.0, FROZEN: 0.0}
    if case in ("b", "d"):
        record["change"] = str(change)
        by_chart = retrains.loc[np.array([("no_champion" not in c) for c in retrain_codes], dtype=bool)]
        after = by_chart[by_chart["now"] >= change]
        record["detection_delay_hours"] = (
            num((after["now"].iloc[0] - change) / pd.Timedelta(hours=1)) if len(after) else None
        )
        record["detection_bound"] = detection_bound(result, change, policy)
    if case in ("a", "d") and args.drift_every > 0:
        checks = drift_checks(candles, start, end, args.drift_every)
        record["drift_checks"] = len(checks)
        record["drift_warnings"] = int(sum(c["warning"] for c in checks))
        late = [c for c in checks if c["warning"] and c["now"] >= change]
        record["drift_alarm_delay_hours"] = (
            num((late[0]["now"] - change) / pd.Timedelta(hours=1)) if late else None
        )
    if case == "b" and args.hindsight_days > 0:
        hindsight_start = change + pd.Timedelta(days=args.hindsight_days)
        if hindsight_start < end:
            reference = runner_for(f"{case}-{seed}-hindsight", args.hindsight_days).run(hindsight_start, end)
            mine = stream_stats(result, hindsight_start)
            theirs = stream_stats(reference, hindsight_start)
            record["recovered_accuracy"] = mine["accuracy"].get(ADAPTIVE)
            record["hindsight_accuracy"] = theirs["accuracy"].get(ADAPTIVE)
            record["hindsight_first_gate"] = reference.gates["summary"].iloc[0][:300]
            n_eff = mine["n"].get(ADAPTIVE, 0) / HORIZON
            p = record["recovered_accuracy"] or 0.5
            record["recovered_se"] = num(math.sqrt(p * (1 - p) / n_eff)) if n_eff else None
    return record


def summarize(runs: list[dict], days: float) -> dict:
    weeks = days / 7.0
    by_case = {c: [r for r in runs if r["case"] == c] for c in "abcd"}
    a, b, d = by_case["a"], by_case["b"], by_case["d"]

    def mean(values):
        values = [v for v in values if v is not None]
        return num(np.mean(values)) if values else None

    worse = [w for r in runs for w in r["worse_promotions"] if w["worse"]]
    false_alarm = (
        sum(r.get("drift_warnings", 0) for r in a) / max(sum(r.get("drift_checks", 0) for r in a), 1)
        if a
        else None
    )
    return {
        "false_retrains_per_week": mean([r["triggered_retrains"] / weeks for r in a]),
        "no_champion_retrains_per_week": mean([r["no_champion_retrains"] / weeks for r in a]),
        "promotions_per_week": mean([r["replacing_promotions"] / weeks for r in a]),
        "first_champion_promotions_per_week": mean(
            [(r["promotions"] - r["replacing_promotions"]) / weeks for r in a]
        ),
        "detection_delay_hours": [r.get("detection_delay_hours") for r in b],
        "detection_bound": [r.get("detection_bound") for r in b],
        "recovered_accuracy": [r.get("recovered_accuracy") for r in b],
        "recovered_se": [r.get("recovered_se") for r in b],
        "hindsight_accuracy": [r.get("hindsight_accuracy") for r in b],
        "drift_alarm_delay_hours": [r.get("drift_alarm_delay_hours") for r in d],
        "drift_false_alarm_rate": num(false_alarm),
        "worse_promotions": len(worse),
        "promotions_checked": sum(len(r["worse_promotions"]) for r in runs),
        "per_case": {
            c: {
                "serving": [r["serving"] for r in rs],
                "accuracy": [r["accuracy"] for r in rs],
                "pnl_net_bps": [r["pnl_net_bps"] for r in rs],
                "retrains": [r["retrains"] for r in rs],
                "triggered_retrains": [r["triggered_retrains"] for r in rs],
                "promotions": [r["promotions"] for r in rs],
            }
            for c, rs in by_case.items()
            if rs
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="abcd")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    parser.add_argument("--days", type=float, default=7.0, help="replay length of each case")
    parser.add_argument("--step", default="1h")
    parser.add_argument("--model-type", default="lstm")
    parser.add_argument("--preset", default="laptop")
    parser.add_argument("--n-folds", type=int, default=1)
    parser.add_argument("--initial-days", type=float, default=3.0, help="history of the first champion")
    parser.add_argument("--training-days", type=float, default=3.0, help="history of each retrain")
    parser.add_argument(
        "--hindsight-days",
        type=float,
        default=2.0,
        help="post-flip history of the reference (1 day leaves its gate too few rows: n_eff 41 < 50)",
    )
    parser.add_argument("--drift-every", type=float, default=3.0, help="hours between drift checks (0: off)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--sim-start", default=str(SIM_START.date()), help="first replayed day of the simulated cases"
    )
    parser.add_argument("--jobs", type=int, default=1, help="replays run at once (one process each)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.monotonic()
    policy, gate = RetrainPolicy(horizon=HORIZON), GateConfig(horizon=HORIZON)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    root = Path(tempfile.mkdtemp(prefix="antmeter-bench-retrain-"))
    work = [(case, seed) for case in args.cases for seed in seeds]
    runs, failed = [], []
    try:
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=max(args.jobs, 1),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=torch.set_num_threads,
            initargs=(1,),
        ) as pool:
            futures = [pool.submit(run_case, case, seed, args, root, policy, gate) for case, seed in work]
            for (case, seed), future in zip(work, futures, strict=True):
                try:
                    runs.append(future.result())
                except Exception as error:  # one failed replay must not discard the others
                    failed.append({"case": case, "seed": seed, "error": f"{type(error).__name__}: {error}"})
                    log(f"== case {case} seed {seed} FAILED:\n" + "".join(traceback.format_exception(error)))
                    continue
                log(f"== case {case} seed {seed} done")
                print(json.dumps(runs[-1], default=str), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary = {
        "bench": "bench_retrain_policy",
        "configuration": {k: str(v) for k, v in vars(args).items()},
        "full_configuration": "--days 7 --seeds 1,2,3 --step 1h (not this run unless equal)",
        "policy": asdict(policy),
        "gate": asdict(gate),
        **summarize(runs, args.days),
        "failed_runs": failed,
        "goals": {
            "false_retrains_per_week": "<= 1 (a)",
            "promotions_per_week": "0 (a)",
            "detection_delay_hours": "<= 3 (b)",
            "recovered_accuracy": "within 1 point or 2 SE of hindsight (b)",
            "worse_promotions": "0",
        },
        "runs": runs,
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
