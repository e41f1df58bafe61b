"""The promotion gate: a candidate becomes champion only when it is sane and measurably better.

Pure functions; the Dagster gate asset, the incremental-retraining job and the replay all call
:func:`decide_promotion`, so they decide identically on the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LOWER_IS_BETTER = {
    "log_loss": True,
    "brier": True,
    "ece": True,
    "accuracy": False,
    "balanced_accuracy": False,
    "f1_macro": False,
    "mcc": False,
}
NAIVE_BASELINES = ("majority", "persistence")


@dataclass(frozen=True)
class GateConfig:
    """Which metric decides (at which horizon), and by how much a candidate must win."""

    metric: str = "log_loss"
    horizon: int = 5
    margin: float = 0.001

    def __post_init__(self) -> None:
        if self.metric not in LOWER_IS_BETTER:
            raise ValueError(
                f"promotion metric {self.metric!r} unknown; choose one of {sorted(LOWER_IS_BETTER)}"
            )
        if self.margin < 0:
            raise ValueError(f"promotion margin must be >= 0, got {self.margin}")

    def improvement(self, candidate: float, reference: float) -> float:
        """How much better the candidate is (positive = better), in the metric's own units."""
        return reference - candidate if LOWER_IS_BETTER[self.metric] else candidate - reference


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: tuple[str, ...]
    candidate_score: float
    champion_score: float | None
    baseline_scores: Mapping[str, float] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return ("PROMOTED: " if self.promote else "REJECTED: ") + "; ".join(self.reasons)


def sanity_problems(
    proba: np.ndarray,
    regression: np.ndarray,
    expected_features: Sequence[str],
    actual_features: Sequence[str],
) -> list[str]:
    """Problems that disqualify a candidate whatever its score: non-finite outputs, a constant
    predictor, probabilities that do not sum to one, or a feature schema that does not match."""
    problems = []
    if not np.isfinite(proba).all() or not np.isfinite(regression).all():
        problems.append("non-finite outputs")
    elif not np.allclose(proba.sum(axis=-1), 1.0, atol=1e-3):
        problems.append("class probabilities do not sum to 1")
    elif proba.shape[0] > 1 and float(np.max(proba.std(axis=0))) < 1e-4:
        problems.append("constant predictor (probabilities do not vary across rows)")
    if list(expected_features) != list(actual_features):
        missing = sorted(set(expected_features) - set(actual_features))
        extra = sorted(set(actual_features) - set(expected_features))
        problems.append(f"feature schema mismatch (missing {missing[:5]}, extra {extra[:5]}, or reordered)")
    return problems


def decide_promotion(
    config: GateConfig,
    candidate_score: float,
    champion_score: float | None,
    baseline_scores: Mapping[str, float],
    problems: Sequence[str] = (),
) -> GateDecision:
    """Promote when there are no sanity problems and the candidate beats the champion (scored on the
    same holdout rows) by ``margin``; with no champion yet, it must beat every naive baseline
    (majority, persistence) by ``margin``. Standing against the other baselines is reported."""
    reasons: list[str] = list(problems)
    metric = f"{config.metric}@{config.horizon}m"
    if champion_score is not None:
        gain = config.improvement(candidate_score, champion_score)
        verdict = "beats" if gain >= config.margin else "does not beat"
        reasons.append(
            f"{metric} {candidate_score:.5f} {verdict} champion {champion_score:.5f} by margin {config.margin}"
            f" (gain {gain:+.5f})"
        )
        wins = gain >= config.margin
    else:
        missing = [b for b in NAIVE_BASELINES if b not in baseline_scores]
        if missing:
            raise ValueError(f"first champion needs naive baseline scores; missing {missing}")
        losses = [
            b
            for b in NAIVE_BASELINES
            if config.improvement(candidate_score, baseline_scores[b]) < config.margin
        ]
        wins = not losses
        reasons.append(
            f"no champion yet: {metric} {candidate_score:.5f} "
            + ("beats naive baselines " if wins else f"does not beat {', '.join(losses)} ")
            + f"by margin {config.margin}"
        )
    others = {k: v for k, v in baseline_scores.items() if k not in NAIVE_BASELINES}
    if others:
        reasons.append(
            "vs other baselines: "
            + ", ".join(
                f"{name} {score:.5f} ({'better' if config.improvement(candidate_score, score) > 0 else 'worse'})"
                for name, score in others.items()
            )
        )
    return GateDecision(
        promote=wins and not problems,
        reasons=tuple(reasons),
        candidate_score=float(candidate_score),
        champion_score=None if champion_score is None else float(champion_score),
        baseline_scores=dict(baseline_scores),
    )


def score_bundle(bundle_dir, samples, indices: np.ndarray, config: GateConfig, prefer_int8: bool = True):
    """Score a served bundle (ONNX Runtime, its own scaler) on the given rows of an unscaled sample set.

    Returns ``(score, proba, regression, feature_names)``; both the candidate and the champion are
    scored through this one path, on the same rows, so the comparison is like for like.
    """
    from antmeter.learn.bundle import ServingModel
    from antmeter.learn.metrics import classification_metrics

    model = ServingModel.load(bundle_dir, prefer_int8=prefer_int8)
    if config.horizon not in model.horizons:
        raise ValueError(f"gate horizon {config.horizon}m not among the model's horizons {model.horizons}")
    h = model.horizons.index(config.horizon)
    sample_h = list(samples.spec.horizons).index(config.horizon)
    proba, regression = model.predict_samples(samples, indices)
    metrics = classification_metrics(samples.y_class[indices, sample_h], proba[:, h])
    return float(metrics[config.metric]), proba, regression, list(model.schema.names)


def holdout_baseline_scores(
    holdout_metrics: Iterable[Mapping[str, Any]], config: GateConfig, model_name: str
) -> dict[str, float]:
    """The baselines' gate-metric scores at the gate horizon from tidy holdout rows (``model, horizon,
    metric, value``, e.g. ``CandidateResult.holdout_metrics.to_dict(orient="records")``), the model's own
    row left out."""
    return {
        str(row["model"]): float(row["value"])
        for row in holdout_metrics
        if row["metric"] == config.metric
        and int(row["horizon"]) == config.horizon
        and row["model"] != model_name
    }


def gate_candidate(
    candidate_dir,
    champion_dir,
    samples,
    indices: np.ndarray,
    config: GateConfig,
    baseline_scores: Mapping[str, float],
    extra_problems: Sequence[str] = (),
) -> GateDecision:
    """Score the candidate bundle (and the champion bundle, when there is one) on the same rows through
    :func:`score_bundle`, check the candidate's sanity, and decide with :func:`decide_promotion`.

    ``champion_dir`` None means there is no champion yet. ``extra_problems`` (e.g. ONNX parity problems)
    disqualify the candidate like sanity problems. The Dagster gate and the replay runner both call this.
    """
    candidate_score, proba, regression, names = score_bundle(candidate_dir, samples, indices, config)
    problems = [*extra_problems, *sanity_problems(proba, regression, list(samples.schema.names), names)]
    champion_score = None if champion_dir is None else score_bundle(champion_dir, samples, indices, config)[0]
    return decide_promotion(config, candidate_score, champion_score, baseline_scores, problems)
