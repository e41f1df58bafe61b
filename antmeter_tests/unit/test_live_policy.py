"""Retrain policy: CUSUM charts on the serving version's rows (overlap-weighted), repeated looks,
the sample minimum, drift as a warning only, cool-down from the end of a retrain, escalation, episode keys."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from antmeter.live.policy import (
    Decision,
    PolicyInput,
    PolicyState,
    RetrainPolicy,
    WindowStats,
    cusum,
    decide,
    effective_sample_size,
    evaluate,
    retrain_key,
    run_key,
    summarize_window,
    version_key,
)

NOW = pd.Timestamp("2024-03-02 00:00", tz="UTC")


def verified(n: int, accuracy: float, horizon: int = 5, baseline_accuracy: float | None = None, seed: int = 0,
             version: str = "1", step_min: int = 1, end: pd.Timestamp = NOW, random: bool = False,
             symbol: str = "BTCUSDT") -> pd.DataFrame:  # fmt: skip
    """``n`` verified predictions, one every ``step_min`` minutes, all known by ``end``; exact hit counts
    (or Bernoulli draws with ``random``)."""
    rng = np.random.default_rng(seed)
    last = end - pd.Timedelta(minutes=horizon + 1)
    times = pd.date_range(end=last, periods=n, freq=f"{step_min}min")
    if random:
        correct = rng.random(n) < accuracy
    else:
        correct = np.zeros(n, dtype=bool)
        correct[rng.permutation(n)[: round(accuracy * n)]] = True
    frame = pd.DataFrame(
        {"symbol": symbol, "prediction_time": times, "horizon_min": horizon, "model_version": version,
         "correct": correct}
    )  # fmt: skip
    if baseline_accuracy is not None:
        base = np.zeros(n, dtype=bool)
        base[rng.permutation(n)[: round(baseline_accuracy * n)]] = True
        frame["persistence_correct"] = pd.array(base, dtype="boolean")
        frame["majority_correct"] = pd.array(np.zeros(n, dtype=bool), dtype="boolean")
    return frame


def run(frame: pd.DataFrame, policy: RetrainPolicy, state: PolicyState | None = None, **kwargs) -> Decision:
    return evaluate(policy, frame, NOW, state or PolicyState(), **kwargs)


def test_a_clear_drop_triggers_a_small_dip_does_not():
    policy = RetrainPolicy(accuracy_threshold=0.55, horizon=5)
    assert run(verified(2880, 0.40), policy).codes == ("accuracy_below_threshold",)
    dip = run(verified(2880, 0.54), policy)  # barely below the threshold: not worth a retrain
    assert dip.action == "none" and dip.codes == ("healthy",)


def test_overlap_discount_makes_the_same_rows_count_less():
    """600 rows at 0.40: as 1-minute outcomes (independent) they alarm, as overlapping 5-minute ones not."""
    independent = run(verified(600, 0.40, horizon=1), RetrainPolicy(horizon=1, accuracy_threshold=0.55))
    overlapping = run(verified(600, 0.40, horizon=5), RetrainPolicy(horizon=5, accuracy_threshold=0.55))
    assert independent.action == "incremental" and overlapping.action == "none"
    assert overlapping.stats["cusum_accuracy"] < overlapping.stats["alarm_threshold"]


def alarms_in_a_week_of_hourly_looks(policy: RetrainPolicy, accuracy: float, **kwargs) -> int:
    """Alarms of ``policy`` judging a model of constant ``accuracy`` (Bernoulli hits, 2 symbols, a 5-minute
    prediction a minute) every hour for 7 days over 3-day charts (168 looks)."""
    end = NOW + pd.Timedelta(days=7)
    rows = pd.concat(
        [verified(7 * 1440, accuracy, random=True, seed=s, end=end, symbol=sym) for s, sym in enumerate("AB")]
    )
    alarms = 0
    for hour in range(24, 7 * 24 + 1):
        now = NOW + pd.Timedelta(hours=hour)
        known = rows[rows["prediction_time"] < now - pd.Timedelta(minutes=6)]
        lookback = known[known["prediction_time"] >= now - pd.Timedelta(days=3)]
        alarms += evaluate(policy, lookback, now, PolicyState(), **kwargs).action != "none"
    return alarms


def test_repeated_hourly_looks_at_a_healthy_model_stay_quiet_for_a_week():
    """A model at exactly the threshold, judged every hour for 7 days."""
    assert alarms_in_a_week_of_hourly_looks(RetrainPolicy(accuracy_threshold=0.52, horizon=5), 0.52) == 0


def test_worse_than_the_baseline_triggers():
    decision = run(verified(4320, 0.56, baseline_accuracy=0.75), RetrainPolicy(accuracy_threshold=0.52))
    assert decision.codes == ("worse_than_baseline",)
    assert decision.stats["baseline_name"] == "persistence"
    close = run(verified(4320, 0.56, baseline_accuracy=0.57), RetrainPolicy(accuracy_threshold=0.52))
    assert close.action == "none"


def test_drift_is_a_warning_never_a_trigger():
    healthy = run(verified(2880, 0.60), RetrainPolicy(), max_psi=3.0, drift_warning=True)
    assert healthy.action == "none" and healthy.codes == ("healthy", "drift_warning")
    degraded = run(verified(2880, 0.40), RetrainPolicy(), max_psi=3.0, drift_warning=True)
    assert degraded.codes == ("accuracy_below_threshold", "drift_warning")


def test_sample_minimum():
    decision = run(verified(100, 0.0, horizon=1), RetrainPolicy(horizon=1, min_samples=200))
    assert decision.action == "none" and decision.codes == ("insufficient_samples",)


def test_cooldown_counts_from_the_end_of_the_last_retrain_in_candles():
    frame, policy = verified(2880, 0.40), RetrainPolicy(cooldown_candles=60)
    ended = PolicyState(last_retrain_at=NOW - pd.Timedelta(minutes=30))
    assert run(frame, policy, ended).codes == ("cooldown",)
    assert run(frame, policy, PolicyState(last_retrain_at=NOW - pd.Timedelta(minutes=61))).action != "none"
    five_minute = RetrainPolicy(cooldown_candles=12, interval="5m", horizon=1, window_candles=288)
    assert five_minute.cooldown_minutes == 60 and five_minute.window_minutes == 1440


def test_escalates_after_repeated_rejections():
    frame, policy = verified(2880, 0.40), RetrainPolicy(max_consecutive_rejections=3)
    state = PolicyState()
    for _ in range(3):
        assert run(frame, policy, state).action == "incremental"
        state = state.after_retrain(NOW - pd.Timedelta(days=1), promoted=False)
    escalated = run(frame, policy, state)
    assert escalated.action == "full" and "escalated" in escalated.codes
    assert state.after_retrain(NOW, promoted=True).consecutive_rejections == 0


def test_a_retrain_that_would_repeat_a_rejected_one_escalates_or_waits_for_new_data():
    frame, policy = verified(2880, 0.40), RetrainPolicy()
    state = PolicyState().after_retrain(NOW - pd.Timedelta(hours=2), promoted=False)
    assert run(frame, policy, state).action == "incremental"
    escalated = run(frame, policy, state, repeats_rejected=frozenset({"incremental"}))
    assert escalated.action == "full" and escalated.codes[-1] == "escalated"
    waiting = run(frame, policy, state, repeats_rejected=frozenset({"incremental", "full"}))
    assert waiting.action == "none" and waiting.codes[-1] == "awaiting_new_data"
    # the streak escalated to full, and that full retrain was rejected on this data: wait as well
    streak = PolicyState(NOW - pd.Timedelta(hours=2), consecutive_rejections=3)
    assert run(frame, policy, streak, repeats_rejected=frozenset({"full"})).codes[-1] == "awaiting_new_data"


def test_retrain_key_is_the_identity_of_a_retrains_inputs():
    window = {"days": ["2024-03-04", "2024-03-05"], "symbols": ["BTCUSDT"], "features": {"rsi": 14}}
    key = retrain_key("incremental", data_window=window, run_config={"fine_tune_lr": 0.01}, base_version="3")
    same = retrain_key(
        "incremental", data_window=dict(reversed(window.items())), run_config={"fine_tune_lr": 0.01},
        base_version=3,
    )  # fmt: skip
    assert key == same
    newer = {**window, "days": ["2024-03-05", "2024-03-06"]}
    for other in (
        retrain_key("incremental", data_window=newer, run_config={"fine_tune_lr": 0.01}, base_version="3"),
        retrain_key("incremental", data_window=window, run_config={"fine_tune_lr": 0.02}, base_version="3"),
        retrain_key("incremental", data_window=window, run_config={"fine_tune_lr": 0.01}, base_version="4"),
        retrain_key("full", data_window=window, run_config={"fine_tune_lr": 0.01}, base_version="3"),
    ):
        assert other != key
    # a full retrain is gated against the champion: another champion, another verdict
    full = retrain_key("full", data_window=window, run_config={}, base_version="3")
    assert full != retrain_key("full", data_window=window, run_config={}, base_version="4")


def test_without_a_champion_a_full_retrain_is_tried_once_per_retry_interval_on_new_data():
    policy = RetrainPolicy(no_champion_retry_candles=24 * 60, cooldown_candles=60)
    nothing = verified(0, 0.5)
    state = PolicyState().after_retrain(NOW - pd.Timedelta(hours=5), promoted=False)
    early = run(nothing, policy, state, serving=False, model_version=None)
    assert early.action == "none" and early.codes == ("no_champion",) and not early.stats["serving"]
    state = PolicyState().after_retrain(NOW - pd.Timedelta(hours=25), promoted=False)
    retry = run(nothing, policy, state, serving=False, model_version=None)
    assert retry.action == "full" and retry.codes == ("no_champion",)
    stale = run(nothing, policy, state, serving=False, repeats_rejected=frozenset({"full"}))
    assert stale.action == "none" and stale.codes == ("no_champion", "awaiting_new_data")
    # one episode: the same key at every look until the next retrain ends
    keys = {run_key(retry, model_name="m", horizon=5, now=NOW + pd.Timedelta(minutes=m)) for m in (0, 60)}
    assert len(keys) == 1


def test_run_key_is_one_per_episode():
    frame = verified(2880, 0.40)
    first = run(frame, RetrainPolicy())
    later = evaluate(RetrainPolicy(), frame, NOW + pd.Timedelta(hours=1), PolicyState())
    key = run_key(first, model_name="antmeter-lstm", horizon=5, now=NOW)
    assert key == run_key(later, model_name="antmeter-lstm", horizon=5, now=NOW + pd.Timedelta(hours=1))
    after_retrain = run(frame, RetrainPolicy(), PolicyState(last_retrain_at=NOW - pd.Timedelta(hours=2)))
    assert run_key(after_retrain, model_name="antmeter-lstm", horizon=5, now=NOW) != key
    assert key.startswith("retrain-incremental-antmeter-lstm-h5-")


def test_only_the_given_version_is_judged_and_versions_sort_numerically():
    policy = RetrainPolicy(horizon=5, window_candles=60)
    old = verified(2880, 0.30, version="9")
    new = verified(2880, 0.60, version="12", seed=1)
    both = pd.concat([old, new])
    with pytest.raises(ValueError, match=r"mix model versions \['9', '12'\]"):
        summarize_window(both, policy, NOW)
    assert run(both, RetrainPolicy(), model_version="12").action == "none"
    assert run(both, RetrainPolicy(), model_version="9").action == "incremental"
    assert sorted(["12", "9", "10"], key=version_key) == ["9", "10", "12"]


def test_summarize_window_filters_time_and_horizon():
    policy = RetrainPolicy(horizon=5, window_candles=60)
    frame = pd.concat(
        [
            verified(100, 1.0, end=NOW),  # known by NOW; only the last 60 minutes count
            verified(5, 0.0, end=NOW + pd.Timedelta(minutes=5)).iloc[-3:],  # outcomes not known yet
            verified(30, 0.0, horizon=10),  # other horizon
        ]
    )
    stats = summarize_window(frame, policy, NOW)
    assert (stats.n, stats.n_correct) == (60, 60) and stats.n_effective == pytest.approx(60 / 5)


def test_the_charts_see_only_rows_predicted_within_the_chart_span():
    policy = RetrainPolicy(horizon=5, window_candles=60, chart_candles=120, accuracy_threshold=0.55)
    old_misses = verified(200, 0.0, end=NOW - pd.Timedelta(minutes=120))  # predicted before the span
    recent = verified(100, 0.6, end=NOW)
    alone = summarize_window(recent, policy, NOW)
    with_history = summarize_window(pd.concat([old_misses, recent]), policy, NOW)
    assert with_history == alone  # a caller holding more history charts what the report does
    assert (
        summarize_window(old_misses, dataclasses.replace(policy, chart_candles=600), NOW).cusum_accuracy > 0
    )
    with pytest.raises(ValueError, match="chart_candles"):
        RetrainPolicy(window_candles=60, chart_candles=59)


def test_cusum_resets_and_marks_the_episode_start():
    hits = np.array([True] * 50 + [False] * 30)
    value, start = cusum(hits, np.ones(80), 0.55, 0.50)
    assert value == pytest.approx(30 * np.log(0.5 / 0.45)) and start == 50
    assert cusum(np.ones(20, bool), np.ones(20), 0.55, 0.5) == (0.0, None)


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
    window = WindowStats(n=400, n_correct=160, n_effective=400.0, cusum_accuracy=20.0)
    assert decide(RetrainPolicy(), PolicyInput(window, None, NOW, None, 0)).action == "incremental"
    several = PolicyInput(window, None, NOW, None, 0, n_models=3)
    # three charts per model type (threshold, baseline, validated level), Bonferroni over the types
    assert decide(RetrainPolicy(), several).stats["alarm_threshold"] == pytest.approx(np.log(2000 * 3 * 3))
    without = RetrainPolicy(validated_chart=False)
    assert decide(without, several).stats["alarm_threshold"] == pytest.approx(np.log(2000 * 2 * 3))
    with pytest.raises(ValueError, match="accuracy_threshold"):
        RetrainPolicy(accuracy_threshold=1.5)
    with pytest.raises(ValueError, match="min_samples"):
        RetrainPolicy(min_samples=0)
    with pytest.raises(ValueError, match="validated_confidence"):
        RetrainPolicy(validated_confidence=1.0)


def test_validated_reference_is_the_lower_confidence_bound_above_the_threshold():
    policy = RetrainPolicy(accuracy_threshold=0.52, validated_confidence=0.95)
    reference = policy.validated_reference({"accuracy": 0.70, "n_effective": 200.0})
    assert reference == pytest.approx(0.70 - 1.6449 * np.sqrt(0.7 * 0.3 / 200), abs=1e-4)
    # too few rows or too little edge for a bound above the threshold: no validated chart
    assert policy.validated_reference({"accuracy": 0.56, "n_effective": 100.0}) is None
    assert policy.validated_reference(None) is None
    assert (
        RetrainPolicy(validated_chart=False).validated_reference({"accuracy": 0.7, "n_effective": 200})
        is None
    )


def _flipped_stream(
    hours_after: float, before: float, after: float, seed: int
) -> tuple[pd.DataFrame, pd.Timestamp]:
    """Two symbols, one 5-minute prediction a minute: 2 days at ``before``, then ``hours_after`` at
    ``after`` (Bernoulli draws); returns the rows and the time the last outcome is known."""
    flip = NOW + pd.Timedelta(days=2)
    end = flip + pd.Timedelta(hours=hours_after)
    frames = []
    for k, symbol in enumerate(("BTCUSDT", "ETHUSDT")):
        pre = verified(2 * 1440, before, random=True, seed=seed * 10 + k, end=flip + pd.Timedelta(minutes=6),
                       symbol=symbol)  # fmt: skip
        post = verified(
            int(hours_after * 60), after, random=True, seed=seed * 10 + k + 5, end=end, symbol=symbol
        )
        frames += [pre, post]
    return pd.concat(frames, ignore_index=True), end


def test_a_champion_that_loses_its_validated_edge_alarms_within_hours_the_fixed_charts_do_not():
    """Validated at 0.70 on 250 effective rows, live at 0.70, then its edge flips to 0.44: the validated
    chart alarms within 6 hours of the flip (its expected delay is about 3.5 h), the threshold chart alone
    would not have (25 h expected)."""
    policy = RetrainPolicy()
    validated = {"accuracy": 0.70, "n_effective": 250.0}
    delays = []
    for seed in range(5):
        rows, _ = _flipped_stream(12, 0.70, 0.44, seed)
        flip = NOW + pd.Timedelta(days=2)
        for hour in range(1, 13):
            now = flip + pd.Timedelta(hours=hour)
            decision = evaluate(policy, rows[rows["prediction_time"] < now - pd.Timedelta(minutes=6)], now,
                                PolicyState(), validated=validated)  # fmt: skip
            if decision.action != "none":
                assert "below_validated_level" in decision.codes
                assert decision.stats["validated_reference"] > policy.accuracy_threshold
                delays.append(hour)
                break
        fixed = evaluate(RetrainPolicy(validated_chart=False), rows, now, PolicyState())
        assert fixed.action == "none"
    assert len(delays) == 5 and max(delays) <= 6


def test_a_champion_that_holds_its_validated_level_stays_quiet_for_a_week_of_hourly_looks():
    """Live accuracy exactly at the validated point estimate (0.62 on 150 effective rows), 2 symbols,
    168 hourly looks over 3-day charts: no alarm."""
    validated = {"accuracy": 0.62, "n_effective": 150.0}
    assert alarms_in_a_week_of_hourly_looks(RetrainPolicy(), 0.62, validated=validated) == 0


def test_policy_state_json_round_trip():
    state = PolicyState(last_retrain_at=NOW, consecutive_rejections=2)
    assert PolicyState.from_json(state.to_json()) == state
    assert PolicyState.from_json(None) == PolicyState()
