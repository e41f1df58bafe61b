"""The replay runner end to end on simulated candles whose planted signal flips mid-window.

One small replay (two symbols, a champion trained on the 36 hours before the window, six hourly steps,
the laptop LSTM on 30-minute windows with one fold) is run once for the module; the tests then check
that its decisions are exactly what the policy function gives on the same inputs (both the replay's
``evaluate`` entry point and the sensor's path through JSON window stats and ``decide``), that outcomes
are the labels of the labels module and never known early, that a promoted model only serves windows
after its promotion, and that the registry namespace records every gate decision.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from antmeter.features.labels import LabelConfig, compute_labels
from antmeter.learn.recipe import RecipeConfig
from antmeter.live.policy import (
    PolicyInput,
    PolicyState,
    RetrainPolicy,
    WindowStats,
    decide,
    evaluate,
    summarize_window,
)
from antmeter.live.replay import ADAPTIVE, FROZEN
from antmeter.live.replay_runner import ReplayRegistry, ReplayRunConfig, ReplayRunner
from antmeter.live.report import to_jsonable
from antmeter.live.verification import BASELINES
from antmeter.market.simulator import SimulatorConfig, aggregate_simulated, simulate_range
from antmeter.registry.promotion import GateConfig

SYMBOLS = ("BTCUSDT", "ETHUSDT")
START, END = pd.Timestamp("2024-01-02 12:00", tz="UTC"), pd.Timestamp("2024-01-02 18:00", tz="UTC")
FLIP = pd.Timestamp("2024-01-02 15:00", tz="UTC")
# a six-hour replay: a bold alternative (accuracy 0.45) and a short in-control run length (alarm level
# ln(40) over the three charts), so that a flip is caught within three hours (the deployment's defaults
# are far more conservative)
POLICY = RetrainPolicy(
    horizon=5, window_candles=180, min_samples=100, cooldown_candles=24 * 60, accuracy_threshold=0.60,
    shift=0.15, arl_effective=40 / 3,
)  # fmt: skip
HORIZONS = (5, 10)


def make_config(name: str = "sim") -> ReplayRunConfig:
    return ReplayRunConfig(
        name=name,
        recipe=RecipeConfig(
            model_type="lstm",
            preset="laptop",
            n_folds=1,
            holdout_fraction=0.2,
            fine_tune_epochs=1,
            fine_tune_days=0.5,
        ),
        policy=POLICY,
        gate=GateConfig(metric="log_loss", horizon=5),
        labels=LabelConfig(horizons=HORIZONS),
        window=30,
        stride=5,
        training_days=1.0,
        initial_training_days=1.5,
        # 1.5 days train no model that beats persistence; this module tests the loop's mechanics
        serve_refused_first=True,
    )


@pytest.fixture(scope="module")
def candles() -> dict[str, pd.DataFrame]:
    config = SimulatorConfig(seed=3, signal_strength=1.0, signal_flip_at=FLIP.isoformat())
    return {s: simulate_range(s, "2024-01-01", "2024-01-02", config).candles for s in SYMBOLS}


@pytest.fixture(scope="module")
def run(candles, tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("replay-root")
    result = ReplayRunner(make_config(), candles, root, progress=lambda message: None).run(START, END)
    return result, root


def _validated(result, version: str) -> dict:
    return _validated_of(result, version, POLICY)


def _validated_of(result, version: str, policy: RetrainPolicy) -> dict:
    """The version's validated accuracy at the policy horizon, read from its bundle's serving config."""
    config = json.loads(
        (result.namespace / "candidates" / f"v{version}" / "bundle" / "serving.json").read_text()
    )
    validated = config["validated_accuracy"][str(policy.horizon)]
    assert 0 < validated["accuracy"] < 1 and validated["n_effective"] > 0
    return validated


def _adaptive_window(verified: pd.DataFrame) -> pd.DataFrame:
    """The adaptive stream's verified rows with each baseline's correctness on the same key."""
    keys = ["symbol", "prediction_time", "horizon_min"]
    rows = verified[verified["stream"] == ADAPTIVE].reset_index(drop=True)
    for b in BASELINES:
        base = verified[verified["stream"] == f"baseline:{b}"][[*keys, "correct"]]
        rows = rows.merge(base.rename(columns={"correct": f"{b}_correct"}), on=keys, how="left")
        rows[f"{b}_correct"] = rows[f"{b}_correct"].astype("boolean")
    return rows


def test_the_replay_runs_end_to_end(run):
    result, root = run
    steps = pd.date_range(START + pd.Timedelta(hours=1), END, freq="1h")
    assert list(result.replay.decisions["now"]) == list(steps)
    gates = result.gates
    assert gates["kind"].iloc[0] == "bootstrap" and gates["version"].iloc[0] == "1"
    assert len(gates) == 1 + len(result.replay.retrains) >= 2  # the first champion and at least one retrain
    assert (gates["trained_until"] < gates["at"]).all()
    verified = result.replay.verified
    assert set(verified["stream"]) == {ADAPTIVE, FROZEN, *(f"baseline:{b}" for b in BASELINES)}
    assert (verified.loc[verified["stream"] == FROZEN, "model_version"] == "1").all()
    counts = verified.groupby(["stream", "horizon_min"]).size().unstack()
    assert (counts.loc[ADAPTIVE] == counts.loc[FROZEN]).all() and counts.loc[ADAPTIVE, 5] > 500
    pnl = result.pnl().set_index("stream")
    assert {ADAPTIVE, FROZEN, "buy_and_hold", "baseline:persistence"} <= set(pnl.index)
    assert np.isfinite(pnl["net_bps"]).all() and (pnl.loc[ADAPTIVE, "fees_bps"] > 0)
    daily = result.daily_pnl()
    assert daily.loc["2024-01-02", ADAPTIVE] == pytest.approx(pnl.loc[ADAPTIVE, "net_bps"], abs=0.01)


def test_decisions_equal_the_policy_function_on_the_same_inputs(run):
    result, _ = run
    window = _adaptive_window(result.replay.verified)
    retrains = result.replay.retrains
    assert len(result.replay.decisions) == 6
    for decision in result.replay.decisions.itertuples():
        earlier = retrains[retrains["now"] < decision.now]
        state = PolicyState()
        for retrain in earlier.itertuples():
            state = state.after_retrain(retrain.now, bool(retrain.promoted))
        known = window[window["verified_at"] <= decision.now]
        psi = None if pd.isna(decision.max_psi) else float(decision.max_psi)
        validated = _validated(result, decision.champion_version)
        replayed = evaluate(
            POLICY, known, decision.now, state, psi, decision.champion_version, validated=validated
        )
        # the sensor's path: window stats travel as JSON in the report's metadata, then decide()
        stats = to_jsonable(
            summarize_window(
                known[known["horizon_min"] == POLICY.horizon],
                POLICY,
                decision.now,
                model_version=decision.champion_version,
                validated=validated,
            ).__dict__
        )
        sensor = decide(
            POLICY,
            PolicyInput(
                WindowStats(**stats), psi, decision.now, state.last_retrain_at, state.consecutive_rejections
            ),
        )
        for expected in (replayed, sensor):
            assert (decision.action, decision.reasons) == (expected.action, "; ".join(expected.reasons))
    assert (result.replay.decisions["action"] != "none").sum() == len(retrains) >= 1


def test_outcomes_are_the_labels_and_never_known_early(run, candles):
    result, _ = run
    verified = result.replay.verified
    horizon = pd.to_timedelta(verified["horizon_min"], unit="min")
    assert (verified["verified_at"] >= verified["prediction_time"] + horizon + pd.Timedelta(minutes=1)).all()
    assert (verified["prediction_time"] >= START).all() and (verified["verified_at"] <= END).all()
    for symbol in SYMBOLS:
        labels = compute_labels(candles[symbol], LabelConfig(horizons=HORIZONS)).set_index("open_time")
        for h in HORIZONS:
            rows = verified[
                (verified["stream"] == ADAPTIVE)
                & (verified["symbol"] == symbol)
                & (verified["horizon_min"] == h)
            ]
            expected = labels.loc[rows["prediction_time"], f"up_{h}"].to_numpy(dtype="int64")
            assert len(rows) > 0 and (rows["realized_class"].to_numpy() == expected).all()
            np.testing.assert_allclose(
                rows["realized_return"], labels.loc[rows["prediction_time"], f"fwd_return_{h}"]
            )


def test_a_promoted_model_serves_only_windows_after_its_promotion(run):
    result, _ = run
    promotions = result.gates[result.gates["promoted"] & (result.gates["kind"] != "bootstrap")]
    adaptive = result.replay.verified[result.replay.verified["stream"] == ADAPTIVE]
    expected = pd.Series("1", index=adaptive.index)
    for promotion in promotions.itertuples():
        expected[adaptive["prediction_time"] >= promotion.at] = promotion.version
    assert (adaptive["model_version"] == expected).all()
    decisions = result.replay.decisions
    serving = pd.Series("1", index=decisions.index)
    for promotion in promotions.itertuples():  # a step decides with the champion of the steps before
        serving[decisions["now"] > promotion.at] = promotion.version
    assert (decisions["champion_version"] == serving).all()


def test_the_registry_namespace_records_every_gate(run):
    result, root = run
    namespace = root / "replay" / "sim"
    assert result.namespace == namespace
    events = [json.loads(line) for line in (namespace / "events.jsonl").read_text().splitlines()]
    assert [e["version"] for e in events] == list(result.gates["version"])
    assert [e["promoted"] for e in events] == list(result.gates["promoted"])
    champion = json.loads((namespace / "champion.json").read_text())
    promoted = result.gates[result.gates["promoted"] | (result.gates["kind"] == "bootstrap")]
    assert champion["version"] == promoted["version"].iloc[-1]
    for version in result.gates["version"]:
        bundle = namespace / "candidates" / f"v{version}" / "bundle"
        assert (bundle / "model.int8.onnx").exists() and (bundle / "serving.json").exists()
    with pytest.raises(FileExistsError, match="already holds candidates"):
        ReplayRegistry(root, "sim")


def test_bad_settings_name_the_setting(candles, tmp_path):
    with pytest.raises(ValueError, match="name"):
        make_config("../escape")
    with pytest.raises(ValueError, match="policy.horizon 30"):
        ReplayRunConfig(
            name="x",
            recipe=RecipeConfig(model_type="lstm"),
            policy=RetrainPolicy(horizon=30),
            labels=LabelConfig(horizons=HORIZONS),
        )
    broken = {**candles, "ETHUSDT": candles["ETHUSDT"].assign(close=np.nan)}
    with pytest.raises(ValueError, match="close"):
        ReplayRunner(make_config("broken"), broken, tmp_path)


def test_a_refused_first_candidate_serves_nothing_until_a_full_retrain_passes(candles, tmp_path):
    policy = dataclasses.replace(POLICY, no_champion_retry_candles=120, cooldown_candles=60)
    config = dataclasses.replace(make_config("unserved"), policy=policy, serve_refused_first=False)
    result = ReplayRunner(config, candles, tmp_path, progress=lambda message: None).run(
        START, START + pd.Timedelta(hours=4)
    )
    gates, decisions, retrains = result.gates, result.replay.decisions, result.replay.retrains
    assert gates["kind"].iloc[0] == "bootstrap" and not gates["promoted"].iloc[0]
    # the retry interval counts from the refused first gate: nothing at 1 h, a full retrain at 2 h
    assert decisions["codes"].iloc[0] == "no_champion" and decisions["action"].iloc[0] == "none"
    assert decisions["champion_version"].isna().iloc[0]
    assert len(retrains) >= 1 and (retrains["kind"] == "full").all()
    assert retrains["now"].iloc[0] == START + pd.Timedelta(hours=2)
    # nothing predicted before a promotion, and the never-retrained stream has nothing at all
    verified = result.replay.verified
    assert not (verified["stream"] == FROZEN).any()
    promoted = retrains[retrains["promoted"]]
    adaptive = verified[verified["stream"] == ADAPTIVE]
    if promoted.empty:
        assert adaptive.empty
    else:
        assert (adaptive["prediction_time"] >= promoted["now"].iloc[0]).all()


def test_an_hourly_replay_counts_windows_horizons_and_closes_in_hours(tmp_path):
    """The replay on 1-hour candles (aggregated from the simulator): every prediction is for a candle that
    had closed when it was made, each outcome is the label ``h`` candles (hours) on and is known only after
    that candle closed, and the decisions are the policy function's on the same rows."""
    hour = pd.Timedelta(hours=1)
    sim = SimulatorConfig(seed=5, signal_strength=1.0)
    candles = {
        s: aggregate_simulated(simulate_range(s, "2024-01-01", "2024-01-24", sim), "1h").candles
        for s in SYMBOLS
    }
    horizons = (2, 4)
    policy = RetrainPolicy(
        interval="1h", horizon=2, window_candles=24, chart_candles=72, min_samples=10, cooldown_candles=24,
        no_champion_retry_candles=24,
    )  # fmt: skip
    config = ReplayRunConfig(
        name="hourly",
        recipe=RecipeConfig(
            model_type="lstm", preset="ci", n_folds=1, holdout_fraction=0.2, primary_horizon=2
        ),
        policy=policy,
        gate=GateConfig(metric="log_loss", horizon=2, interval="1h", min_effective_samples=10),
        labels=LabelConfig(horizons=horizons, interval="1h"),
        window=8,
        stride=1,
        step="6h",
        training_days=18,
        initial_training_days=18,
        drift_window_candles=6,
        serve_refused_first=True,
    )
    start, end = pd.Timestamp("2024-01-22", tz="UTC"), pd.Timestamp("2024-01-24 12:00", tz="UTC")
    result = ReplayRunner(config, candles, tmp_path, progress=lambda message: None).run(start, end)
    verified = result.replay.verified
    adaptive = verified[verified["stream"] == ADAPTIVE]
    assert len(adaptive) > 50 and set(adaptive["horizon_min"]) == set(horizons)
    assert (adaptive["prediction_time"] >= start).all()
    assert ((adaptive["prediction_time"] - start) % hour == pd.Timedelta(0)).all()
    assert (
        adaptive["verified_at"] >= adaptive["prediction_time"] + (adaptive["horizon_min"] + 1) * hour
    ).all()
    for symbol in SYMBOLS:
        labels = compute_labels(candles[symbol], LabelConfig(horizons=horizons, interval="1h"))
        labels = labels.set_index("open_time")
        for h in horizons:
            rows = adaptive[(adaptive["symbol"] == symbol) & (adaptive["horizon_min"] == h)]
            np.testing.assert_allclose(
                rows["realized_return"], labels.loc[rows["prediction_time"], f"fwd_return_{h}"]
            )
    window = _adaptive_window(verified)
    state = PolicyState()
    for decision in result.replay.decisions.itertuples():
        known = window[window["verified_at"] <= decision.now]
        expected = evaluate(
            policy, known, decision.now, state, None if pd.isna(decision.max_psi) else float(decision.max_psi),
            decision.champion_version, validated=_validated_of(result, decision.champion_version, policy),
        )  # fmt: skip
        assert (decision.action, decision.reasons) == (expected.action, "; ".join(expected.reasons))
        retrained = result.replay.retrains[result.replay.retrains["now"] == decision.now]
        for retrain in retrained.itertuples():
            state = state.after_retrain(retrain.now, bool(retrain.promoted))
