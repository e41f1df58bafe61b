"""Retrain policy: sample minimum, overlap-aware significance, baseline test, drift, cool-down, escalation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from antmeter.live.policy import (
    Decision,
    PolicyInput,
    PolicyState,
    RetrainPolicy,
    WindowStats,
    decide,
    effective_sample_size,
    evaluate,
    run_key,
    summarize_window,
)

NOW = pd.Timestamp("2024-03-02 00:00", tz="UTC")


def verified(n: int, accuracy: float, horizon: int = 5, baseline_accuracy: float | None = None, seed: int = 0,
             version: str = "v1", step_min: int = 1, end: pd.Timestamp = NOW) -> pd.DataFrame:  # fmt: skip
    """``n`` verified predictions, one every ``step_min`` minutes, all known by ``end``; exact hit counts."""
    rng = np.random.default_rng(seed)
    last = end - pd.Timedelta(minutes=horizon + 1)
    times = pd.date_range(end=last, periods=n, freq=f"{step_min}min")
    correct = np.zeros(n, dtype=bool)
    correct[rng.permutation(n)[: round(accuracy * n)]] = True
    frame = pd.DataFrame(
        {"symbol": "BTCUSDT", "prediction_time": times, "horizon_min": horizon, "model_version": version,
         "correct": correct}
    )  # fmt: skip
    if baseline_accuracy is not None:
        base = np.zeros(n, dtype=bool)
        base[rng.permutation(n)[: round(baseline_accuracy * n)]] = True
        frame["persistence_correct"] = pd.array(base, dtype="boolean")
        frame["majority_correct"] = pd.array(np.zeros(n, dtype=bool), dtype="boolean")
    return frame


def run(frame: pd.DataFrame, policy: RetrainPolicy, state: PolicyState | None = None, psi=None) -> Decision:
    return evaluate(policy, frame, NOW, state or PolicyState(), psi)


def test_small_noisy_dip_does_not_trigger():
    policy = RetrainPolicy(horizon=5)
    decision = run(verified(60, 0.30), policy)
    assert decision.action == "none" and decision.codes == ("insufficient_samples",)


def test_overlap_discount_needs_more_evidence_than_independent_rows():
    # 250 rows at 45%: significant if the rows were independent (1-min horizon) ...
    independent = run(verified(250, 0.45, horizon=1), RetrainPolicy(horizon=1))
    assert independent.action == "incremental" and independent.codes == ("accuracy_below_threshold",)
    # ... but with 5-min outcomes overlapping every minute they are only ~50 independent observations
    overlapping = run(verified(250, 0.45, horizon=5), RetrainPolicy(horizon=5))
    assert overlapping.action == "none" and overlapping.codes == ("healthy",)
    assert overlapping.stats["n_effective"] == pytest.approx(1 + 249 / 5)  # first row counts 1, then 1/5 each
    assert overlapping.stats["p_accuracy"] > 0.05


def test_sustained_drop_with_enough_samples_triggers():
    decision = run(verified(1440, 0.45, horizon=5), RetrainPolicy(horizon=5))
    assert decision.action == "incremental" and "accuracy_below_threshold" in decision.codes
    assert decision.stats["p_accuracy"] < 0.05 and decision.stats["n"] == 1440


def test_worse_than_best_baseline_on_same_rows():
    frame = verified(1440, 0.56, horizon=5, baseline_accuracy=0.66)
    decision = run(frame, RetrainPolicy(horizon=5))
    assert decision.codes == ("worse_than_baseline",) and decision.stats["baseline_name"] == "persistence"
    assert decision.stats["baseline_accuracy"] == pytest.approx(0.66, abs=1e-3)
    close = run(verified(1440, 0.56, horizon=5, baseline_accuracy=0.58), RetrainPolicy(horizon=5))
    assert close.action == "none"


def test_drift_triggers_without_sample_minimum():
    assert run(verified(10, 0.6), RetrainPolicy(), psi=0.31).codes == ("drift",)
    assert run(verified(10, 0.6), RetrainPolicy(), psi=0.2).action == "none"


def test_cooldown_suppresses_then_releases():
    frame, policy = verified(1440, 0.40), RetrainPolicy(cooldown_minutes=60)
    recent = PolicyState(last_retrain_at=NOW - pd.Timedelta(minutes=30))
    assert run(frame, policy, recent).codes == ("cooldown",)
    assert run(frame, policy, recent, psi=0.9).action == "none"
    assert (
        run(frame, policy, PolicyState(last_retrain_at=NOW - pd.Timedelta(minutes=61))).action
        == "incremental"
    )


def test_escalation_after_consecutive_rejections():
    frame, policy = verified(1440, 0.40), RetrainPolicy(max_consecutive_rejections=3)
    state = PolicyState()
    actions = []
    for i in range(4):
        actions.append(run(frame, policy, state).action)
        state = state.after_retrain(NOW - pd.Timedelta(hours=5 - i), promoted=False)
    assert actions == ["incremental", "incremental", "incremental", "full"]
    assert "escalated" in run(frame, policy, state).codes
    assert state.after_retrain(NOW, promoted=True).consecutive_rejections == 0


def test_same_input_same_decision_and_run_key():
    frame = verified(1440, 0.40, baseline_accuracy=0.5)
    first, second = run(frame, RetrainPolicy()), run(frame.sample(frac=1.0, random_state=1), RetrainPolicy())
    assert first == second
    key = run_key(first, model_name="lgbm", horizon=5, now=NOW, symbol="BTCUSDT")
    assert key == run_key(
        second, model_name="lgbm", horizon=5, now=NOW + pd.Timedelta(seconds=30), symbol="BTCUSDT"
    )
    assert key != run_key(
        first, model_name="lgbm", horizon=5, now=NOW + pd.Timedelta(minutes=1), symbol="BTCUSDT"
    )
    assert key.startswith("retrain-incremental-lgbm-h5-")


def test_summarize_window_filters_time_horizon_and_version():
    policy = RetrainPolicy(horizon=5, window_minutes=60)
    frame = pd.concat(
        [
            verified(100, 1.0, end=NOW),  # known by NOW; only the last 60 minutes count
            verified(5, 0.0, end=NOW + pd.Timedelta(minutes=5)).iloc[-3:],  # outcomes not known yet
            verified(30, 0.0, horizon=10),  # other horizon
        ]
    )
    stats = summarize_window(frame, policy, NOW)
    assert (stats.n, stats.n_correct) == (60, 60) and stats.n_effective == pytest.approx(1 + 59 / 5)
    mixed = pd.concat([verified(20, 1.0), verified(20, 0.0, version="v2", seed=1)])
    with pytest.raises(ValueError, match="model versions"):
        summarize_window(mixed, policy, NOW)
    assert summarize_window(mixed, policy, NOW, model_version="v2").n_correct == 0


def test_effective_sample_size_dense_sparse_and_per_symbol():
    dense = pd.Series(pd.date_range(NOW, periods=50, freq="min"))
    sparse = pd.Series(pd.date_range(NOW, periods=50, freq="10min"))
    one = pd.Series(["A"] * 50)
    assert effective_sample_size(dense, one, 5) == pytest.approx(1 + 49 / 5)
    assert effective_sample_size(sparse, one, 5) == pytest.approx(50)
    two = pd.Series(["A"] * 25 + ["B"] * 25)
    assert effective_sample_size(
        dense.iloc[list(range(25)) * 2].reset_index(drop=True), two, 5
    ) == pytest.approx(2 * (1 + 24 / 5))


def test_decide_direct_input_and_policy_validation():
    window = WindowStats(n=400, n_correct=160, n_effective=400.0)
    inp = PolicyInput(window, None, NOW, None, 0)
    assert decide(RetrainPolicy(), inp).action == "incremental"
    with pytest.raises(ValueError, match="accuracy_threshold"):
        RetrainPolicy(accuracy_threshold=1.5)
    with pytest.raises(ValueError, match="min_samples"):
        RetrainPolicy(min_samples=0)


def test_policy_state_json_round_trip():
    state = PolicyState(last_retrain_at=NOW, consecutive_rejections=2)
    assert PolicyState.from_json(state.to_json()) == state
    assert PolicyState.from_json(None) == PolicyState()
    assert PolicyState.from_json(PolicyState().to_json()) == PolicyState()


def test_baseline_column_without_values_is_ignored():
    frame = verified(1440, 0.56, horizon=5, baseline_accuracy=0.66)
    frame["majority_correct"] = pd.array([pd.NA] * len(frame), dtype="boolean")
    stats = summarize_window(frame, RetrainPolicy(horizon=5), NOW)
    assert stats.baseline_name == "persistence" and stats.n == 1440
    assert stats.baseline_n_correct == round(0.66 * 1440)
    assert (
        stats.model_only_correct - stats.baseline_only_correct == stats.n_correct - stats.baseline_n_correct
    )
