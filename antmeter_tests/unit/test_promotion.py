"""The promotion gate's pure rules: sanity problems disqualify; a champion must be beaten significantly
(paired Diebold-Mariano test with an overlap-aware HAC error) and the best fitted baseline matched
(non-inferiority); the first champion must beat the naive baselines. Property tests on synthetic paired
losses with overlapping outcomes check the false-positive rate and the power at fixed seeds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from antmeter.registry.promotion import (
    GateConfig,
    decide_promotion,
    effective_samples,
    paired_test,
    row_losses,
    sanity_problems,
)

FEATURES = ["rsi_14", "log_return_1", "volatility_15"]
H = 5
GATE = GateConfig(metric="log_loss", horizon=H, level=0.05)
T = 1200  # distinct sample times of a gate block (one symbol, every minute): n_eff = 240
TIMES = np.datetime64("2024-03-01T00:00") + np.arange(T).astype("timedelta64[m]")


def _outputs(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Varying, normalized probabilities [n, horizons, classes] and finite return forecasts [n, horizons]."""
    rng = np.random.default_rng(seed)
    up = rng.uniform(0.3, 0.7, size=(n, 3))
    return np.stack([1.0 - up, up], axis=-1), rng.normal(0.0, 1e-3, size=(n, 3))


def test_sane_outputs_have_no_problems():
    proba, reg = _outputs()
    assert sanity_problems(proba, reg, FEATURES, list(FEATURES)) == []


def test_constant_predictor_is_a_problem():
    proba, reg = _outputs()
    proba[:] = proba[0]
    assert sanity_problems(proba, reg, FEATURES, FEATURES) == [
        "constant predictor (probabilities do not vary across rows)"
    ]


@pytest.mark.parametrize("target", ["proba", "reg"])
def test_non_finite_outputs_are_a_problem(target):
    proba, reg = _outputs()
    (proba if target == "proba" else reg)[7, 1] = np.nan
    assert sanity_problems(proba, reg, FEATURES, FEATURES) == ["non-finite outputs"]


def test_probabilities_that_do_not_sum_to_one_are_a_problem():
    proba, reg = _outputs()
    proba[:, :, 1] *= 1.2
    assert sanity_problems(proba, reg, FEATURES, FEATURES) == ["class probabilities do not sum to 1"]


@pytest.mark.parametrize(
    "actual",
    [FEATURES[:2], [*FEATURES, "extra_col"], list(reversed(FEATURES))],
    ids=["missing", "extra", "reordered"],
)
def test_feature_schema_mismatch_is_a_problem(actual):
    proba, reg = _outputs()
    problems = sanity_problems(proba, reg, FEATURES, actual)
    assert len(problems) == 1 and problems[0].startswith("feature schema mismatch")


def overlapping_noise(rng: np.random.Generator, n: int, sigma: float, horizon: int = H) -> np.ndarray:
    """MA(horizon - 1) noise with standard deviation ``sigma``: what overlapping horizon outcomes give."""
    z = rng.normal(0.0, sigma, size=n + horizon - 1)
    return np.convolve(z, np.ones(horizon) / np.sqrt(horizon), mode="valid")


def losses(rng, improvement: float = 0.0, sigma: float = 0.05) -> dict[str, np.ndarray]:
    """Champion losses, a candidate = champion - improvement + independent overlapping noise, and
    baselines (majority, persistence clearly worse; logistic slightly worse)."""
    champion = 0.69 + overlapping_noise(rng, T, 0.2)
    return {
        "candidate": champion - improvement + overlapping_noise(rng, T, sigma),
        "champion": champion,
        "majority": champion + 0.02 + overlapping_noise(rng, T, sigma),
        "persistence": champion + 0.02 + overlapping_noise(rng, T, sigma),
        "logistic": champion + 0.005 + overlapping_noise(rng, T, sigma),
    }


def gate(data: dict[str, np.ndarray], first: bool = False, **kwargs):
    baselines = {k: data[k] for k in ("majority", "persistence", "logistic")}
    champion = None if first else data["champion"]
    return decide_promotion(GATE, data["candidate"], TIMES, champion, baselines, **kwargs)


def test_a_candidate_equal_to_the_champion_plus_noise_is_promoted_at_most_at_the_level():
    rng = np.random.default_rng(20240301)
    promoted = [gate(losses(rng)).promote for _ in range(400)]
    rate = float(np.mean(promoted))
    assert rate <= GATE.level + 3 * np.sqrt(GATE.level * (1 - GATE.level) / 400), rate


def test_ignoring_the_overlap_would_promote_noise_far_too_often():
    """The same pairs through an iid t-test (no HAC lag): why the lag must cover the horizon."""
    rng = np.random.default_rng(20240302)
    naive = []
    for _ in range(400):
        data = losses(rng)
        d = data["candidate"] - data["champion"]
        naive.append(d.mean() / (d.std(ddof=1) / np.sqrt(d.size)) < -1.645)
    assert np.mean(naive) > 0.15


def test_a_truly_better_candidate_is_promoted_with_the_expected_power():
    """Improvement = 2.49 standard errors (long-run sd of d = sigma * sqrt(h)): 80% one-sided power at 5%."""
    sigma = 0.05
    se = sigma * np.sqrt(H / T)
    rng = np.random.default_rng(20240303)
    promoted = [gate(losses(rng, improvement=2.487 * se, sigma=sigma)).promote for _ in range(300)]
    assert 0.70 <= np.mean(promoted) <= 0.92, np.mean(promoted)


def test_much_better_candidate_is_promoted_with_the_test_recorded():
    decision = gate(losses(np.random.default_rng(1), improvement=0.01))
    assert decision.promote and decision.summary.startswith("PROMOTED: ")
    record = decision.record()
    assert record["decision"] == "promoted" and record["deciding_test"] == "superiority vs champion"
    assert record["p_value"] < 0.05 and record["statistic"] < 0 and record["rows_used"] == T
    assert [t["other"] for t in record["tests"]] == ["champion", "logistic"]
    assert decision.tests[0].lag >= H - 1


def test_a_candidate_worse_than_the_best_fitted_baseline_is_rejected_even_when_it_beats_the_champion():
    data = losses(np.random.default_rng(2), improvement=0.01)
    data["logistic"] = data["candidate"] - 0.02  # the fitted baseline is much better still
    decision = gate(data)
    assert not decision.promote
    assert "significantly worse (margin 0.0) than logistic" in decision.summary
    formal = GateConfig(horizon=H, margin=0.01, baseline_test="non_inferiority")
    baselines = {k: data[k] for k in ("majority", "persistence", "logistic")}
    data["logistic"] = data["candidate"] + 0.005 + overlapping_noise(np.random.default_rng(9), T, 0.05)
    proven = decide_promotion(
        formal, data["candidate"], TIMES, data["champion"], {**baselines, "logistic": data["logistic"]}
    )
    assert "significantly non-inferior (margin 0.01) to logistic" in proven.summary


def test_first_champion_must_beat_the_naive_baselines_significantly():
    data = losses(np.random.default_rng(3))
    assert gate(
        data, first=True
    ).promote  # 0.02 better than both naive baselines, a little better than logistic
    data["persistence"] = data["candidate"] + overlapping_noise(np.random.default_rng(4), T, 0.05)
    rejected = gate(data, first=True)
    assert not rejected.promote and "not shown better than persistence" in rejected.summary
    with pytest.raises(ValueError, match="missing \\['persistence'\\]"):
        decide_promotion(GATE, data["candidate"], TIMES, None, {"majority": data["majority"]})


def test_too_few_effective_rows_reject_and_a_spent_level_is_used():
    data = losses(np.random.default_rng(5), improvement=0.01)
    short = {k: v[:100] for k, v in data.items()}  # 100 minutes of 5-minute outcomes: n_eff 20
    baselines = {k: short[k] for k in ("majority", "persistence", "logistic")}
    decision = decide_promotion(GATE, short["candidate"], TIMES[:100], short["champion"], baselines)
    assert not decision.promote and "insufficient gate rows: n_eff=20.0" in decision.summary
    assert effective_samples(TIMES, H) == pytest.approx(T / H)
    assert gate(data, level=0.0125).level == 0.0125


def test_sanity_problems_reject_even_a_better_candidate():
    decision = gate(losses(np.random.default_rng(6), improvement=0.05), problems=["non-finite outputs"])
    assert not decision.promote
    assert decision.reasons[1] == "non-finite outputs"


def test_paired_test_averages_the_symbols_of_one_minute():
    rng = np.random.default_rng(7)
    a, b = rng.normal(0.69, 0.1, 2 * T), rng.normal(0.70, 0.1, 2 * T)
    test = paired_test(a, b, np.repeat(TIMES, 2), H, 0.05, other="champion")
    assert test.n_times == T and test.lag >= H - 1


def test_row_losses():
    proba = np.array([[0.2, 0.8], [0.6, 0.4]])
    y = np.array([1, 1])
    assert row_losses(y, proba, "log_loss") == pytest.approx(-np.log([0.8, 0.4]))
    assert row_losses(y, proba, "brier") == pytest.approx([0.08, 0.72])
    assert row_losses(y, proba, "accuracy") == pytest.approx([0.0, 1.0])


def test_gate_config_rejects_unknown_metric_and_bad_settings():
    with pytest.raises(ValueError, match="promotion metric 'auc' has no per-row loss"):
        GateConfig(metric="auc")
    with pytest.raises(ValueError, match="margin must be >= 0"):
        GateConfig(margin=-0.1)
    with pytest.raises(ValueError, match="level must lie in"):
        GateConfig(level=0.7)


@pytest.mark.parametrize("interval", ["5m", "1h", "1d"])
def test_the_overlap_is_counted_on_the_clock_at_every_interval(interval):
    """Rows one candle apart with a 5-candle horizon overlap exactly as on 1-minute candles: the same
    effective count and the same false-promotion rate (the gate once read a 5-candle 1h horizon as 5
    minutes, saw no overlap and promoted noise far more often than its level)."""
    step = pd.Timedelta(interval).to_timedelta64()
    times = np.datetime64("2024-03-01T00:00") + np.arange(T) * step
    config = dataclasses.replace(GATE, interval=interval)
    assert effective_samples(times, config.horizon_minutes) == effective_samples(TIMES, GATE.horizon_minutes)
    assert effective_samples(times, config.horizon_minutes) == pytest.approx(T / H)
    assert config.label == f"log_loss@{H}x{interval}" and GATE.label == f"log_loss@{H}m"
    rng = np.random.default_rng(20240303)
    promoted = []
    for _ in range(400):
        data = losses(rng)
        baselines = {k: data[k] for k in ("majority", "persistence", "logistic")}
        promoted.append(
            decide_promotion(config, data["candidate"], times, data["champion"], baselines).promote
        )
    assert np.mean(promoted) <= GATE.level + 3 * np.sqrt(GATE.level * (1 - GATE.level) / 400)
