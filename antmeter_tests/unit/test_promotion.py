"""The promotion gate's pure rules: sanity problems disqualify, a champion must be beaten by the margin,
and the first champion must beat the naive baselines."""

from __future__ import annotations

import numpy as np
import pytest

from antmeter.registry.promotion import GateConfig, decide_promotion, sanity_problems

FEATURES = ["rsi_14", "log_return_1", "volatility_15"]
GATE = GateConfig(metric="log_loss", horizon=5, margin=0.001)
BASELINES = {"majority": 0.6930, "persistence": 0.6925, "logistic": 0.6950}


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


def test_candidate_that_beats_the_champion_by_the_margin_is_promoted():
    decision = decide_promotion(
        GATE, candidate_score=0.6800, champion_score=0.6820, baseline_scores=BASELINES
    )
    assert decision.promote
    assert decision.summary.startswith("PROMOTED: ")
    assert "beats champion 0.68200" in decision.summary
    assert decision.champion_score == pytest.approx(0.6820)


def test_candidate_that_beats_the_champion_by_less_than_the_margin_is_rejected():
    decision = decide_promotion(
        GATE, candidate_score=0.68150, champion_score=0.6820, baseline_scores=BASELINES
    )
    assert not decision.promote
    assert "does not beat champion" in decision.summary
    worse = decide_promotion(GATE, candidate_score=0.7000, champion_score=0.6820, baseline_scores=BASELINES)
    assert not worse.promote and "gain -0.01800" in worse.summary


def test_higher_is_better_metrics_compare_the_other_way():
    gate = GateConfig(metric="accuracy", horizon=5, margin=0.005)
    assert decide_promotion(gate, 0.56, 0.55, {}).promote
    assert not decide_promotion(gate, 0.55, 0.56, {}).promote
    assert not decide_promotion(gate, 0.553, 0.55, {}).promote  # better, but by less than the margin


def test_first_champion_must_beat_every_naive_baseline():
    promoted = decide_promotion(GATE, candidate_score=0.6850, champion_score=None, baseline_scores=BASELINES)
    assert (
        promoted.promote
        and "no champion yet" in promoted.summary
        and "beats naive baselines" in promoted.summary
    )
    # logistic is reported, not required
    assert "logistic 0.69500 (better)" in promoted.summary
    # beats majority but not persistence by the margin
    rejected = decide_promotion(GATE, candidate_score=0.6920, champion_score=None, baseline_scores=BASELINES)
    assert not rejected.promote
    assert (
        "does not beat persistence" in rejected.summary
        and "majority" not in rejected.summary.split(" by ")[0]
    )


def test_first_champion_needs_the_naive_baseline_scores():
    with pytest.raises(ValueError, match="missing \\['persistence'\\]"):
        decide_promotion(GATE, 0.68, None, {"majority": 0.69})


def test_sanity_problems_reject_even_a_better_candidate():
    decision = decide_promotion(GATE, 0.60, 0.69, BASELINES, problems=["non-finite outputs"])
    assert not decision.promote
    assert decision.reasons[0] == "non-finite outputs"


def test_gate_config_rejects_unknown_metric_and_negative_margin():
    with pytest.raises(ValueError, match="promotion metric 'auc' unknown"):
        GateConfig(metric="auc")
    with pytest.raises(ValueError, match="margin must be >= 0"):
        GateConfig(margin=-0.1)
