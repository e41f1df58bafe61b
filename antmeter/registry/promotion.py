"""The promotion gate: a candidate becomes champion only when it is sane and *significantly* better.

Pure functions; the Dagster gate asset and the replay both call :func:`gate_candidate` /
:func:`decide_promotion`, so they decide identically on the same inputs.

The test
--------
Every predictor is scored **per row** on the same gate rows: log loss ``-ln p(actual)``, Brier
(squared error of the probability vector) or 0/1 error (``metric="accuracy"``). For two predictors
the per-row loss differences ``d_i = loss_candidate - loss_other`` are averaged per sample time (the
symbols of one minute move together) and tested with the Diebold–Mariano statistic
``t = mean(d) / se``, where ``se`` is the Newey–West (Bartlett kernel, HAC) standard error with lag
``L = max(ceil(h / step) - 1, floor(4 (T / 100)^(2/9)))``: an ``h``-minute outcome overlaps the next
``h - 1``, so at least ``h - 1`` autocovariances are kept. ``p`` is one-sided from Student's t with
``T - 1`` degrees of freedom. The first ``ceil(h / step) - 1`` autocovariances (the overlap) get full
weight (Hansen–Hodrick), the remaining ones Bartlett weights: plain Bartlett weights would understate
the overlap's variance and promote noise too often (measured in the property tests).

* **superiority** over the champion: ``H0: E[d] >= 0``; passes when ``p < level``;
* **not worse** than the best fitted baseline (``logistic``, ``gradient_boosting``: the lowest mean
  loss on these rows), ``baseline_test="not_worse"`` (default): fails when the candidate is
  significantly more than ``margin`` worse, ``p = P(T >= (mean(d) - margin) / se) < level``;
  ``baseline_test="non_inferiority"`` is the formal non-inferiority test instead, ``H0: E[d] >= margin``,
  passing only when ``p < level``: it needs ``se`` well below ``margin``, i.e. days of gate rows (on a
  7-hour block of two symbols the paired se against logistic was 0.037 nats, far above any useful
  margin, so a candidate 0.036 *better* than logistic could not show non-inferiority);
* **first champion**: superiority over each naive baseline (``majority``, ``persistence``) and the
  baseline test against the best fitted one.

All tests of one decision must pass (an intersection–union test), so the decision's false-positive
rate is at most ``level`` without a multiplicity correction. Fewer than ``min_effective_samples``
effective rows (``T * min(1, step / h)``) rejects outright. When no champion can be promoted the type
has **no champion**: a recorded state (``GateDecision.state``), not a failure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from antmeter.market.candles import interval_timedelta

PER_ROW_LOSSES = ("log_loss", "brier", "accuracy")
NAIVE_BASELINES = ("majority", "persistence")
FITTED_BASELINES = ("logistic", "gradient_boosting")
LOSS_FLOOR = 1e-12


@dataclass(frozen=True)
class GateConfig:
    """Which per-row loss decides (at which horizon), at which level, and the non-inferiority margin."""

    metric: str = "log_loss"
    horizon: int = 5
    level: float = 0.05
    margin: float = 0.0
    min_effective_samples: float = 50.0
    baseline_test: str = "not_worse"
    interval: str = "1m"  # the candles' interval: ``horizon`` counts its candles

    @property
    def horizon_minutes(self) -> float:
        """The gate horizon on the clock, in minutes (what the overlap of the rows' outcomes spans)."""
        return self.horizon * interval_timedelta(self.interval) / pd.Timedelta(minutes=1)

    @property
    def label(self) -> str:
        """``log_loss@5m`` on 1-minute candles, ``log_loss@2x1h`` on others."""
        unit = "m" if self.interval == "1m" else f"x{self.interval}"
        return f"{self.metric}@{self.horizon}{unit}"

    def __post_init__(self) -> None:
        interval_timedelta(self.interval)
        if self.metric not in PER_ROW_LOSSES:
            raise ValueError(
                f"promotion metric {self.metric!r} has no per-row loss; choose one of {list(PER_ROW_LOSSES)}"
            )
        if not 0 < self.level < 0.5:
            raise ValueError(f"promotion level must lie in (0, 0.5), got {self.level}")
        if self.margin < 0:
            raise ValueError(f"promotion margin must be >= 0, got {self.margin}")
        if self.baseline_test not in ("not_worse", "non_inferiority"):
            raise ValueError(
                f"baseline_test must be 'not_worse' or 'non_inferiority', got {self.baseline_test!r}"
            )
        if self.min_effective_samples < 2:
            raise ValueError(f"min_effective_samples must be >= 2, got {self.min_effective_samples}")


@dataclass(frozen=True)
class PairedTest:
    """One Diebold–Mariano comparison of the candidate with ``other`` (``d = candidate - other``)."""

    other: str
    kind: str  # "superiority", "non_inferiority" or "not_worse"
    mean_difference: float
    standard_error: float
    statistic: float
    p_value: float
    lag: int
    n_times: int
    margin: float
    passed: bool

    def describe(self) -> str:
        if self.kind == "not_worse":
            verdict = (
                "not significantly worse" if self.passed else "significantly worse"
            ) + f" (margin {self.margin}) than"
        else:
            verb = "better than" if self.kind == "superiority" else f"non-inferior (margin {self.margin}) to"
            verdict = "significantly " + verb if self.passed else "not shown " + verb
        return (
            f"{verdict} {self.other}: mean diff {self.mean_difference:+.5f} ± {self.standard_error:.5f}, "
            f"t={self.statistic:.2f}, p={self.p_value:.4f}"
        )


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: tuple[str, ...]
    candidate_score: float
    champion_score: float | None
    baseline_scores: Mapping[str, float] = field(default_factory=dict)
    tests: tuple[PairedTest, ...] = ()
    rows_used: int = 0
    n_effective: float = 0.0
    level: float = 0.05

    @property
    def summary(self) -> str:
        return ("PROMOTED: " if self.promote else "REJECTED: ") + "; ".join(self.reasons)

    @property
    def deciding_test(self) -> PairedTest | None:
        """The test vs the champion; for a first champion the weakest superiority test (largest p)."""
        for test in self.tests:
            if test.other == "champion":
                return test
        superiority = [t for t in self.tests if t.kind == "superiority"]
        return max(superiority, key=lambda t: t.p_value, default=None)

    def record(self) -> dict[str, Any]:
        """A flat, JSON-able record (Dagster metadata, MLflow tags/metrics, the replay's ledger)."""
        deciding = self.deciding_test
        return {
            "decision": "promoted" if self.promote else "rejected",
            "statistic": None if deciding is None else deciding.statistic,
            "p_value": None if deciding is None else deciding.p_value,
            "deciding_test": None if deciding is None else f"{deciding.kind} vs {deciding.other}",
            "rows_used": self.rows_used,
            "n_effective": self.n_effective,
            "level": self.level,
            "tests": [test.__dict__ for test in self.tests],
        }


def row_losses(y_true: np.ndarray, proba: np.ndarray, metric: str) -> np.ndarray:
    """Per-row loss of class probabilities ``proba`` (N, K) for labels ``y_true`` (N,)."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"proba must be (N, K) with N = len(y_true) = {y.shape[0]}, got {p.shape}")
    rows = np.arange(len(y))
    if metric == "log_loss":
        return -np.log(np.clip(p[rows, y], LOSS_FLOOR, 1.0))
    if metric == "brier":
        return ((p - np.eye(p.shape[1])[y]) ** 2).sum(axis=1)
    if metric == "accuracy":
        return (p.argmax(axis=1) != y).astype(np.float64)
    raise ValueError(f"no per-row loss for metric {metric!r}")


def _per_time(values: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` per distinct time, in time order; and the distinct times (ns)."""
    keys, inverse = np.unique(times, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=keys.size)
    return sums / np.bincount(inverse, minlength=keys.size), keys


def hac_lag(horizon: float, step_minutes: float, n_times: int) -> int:
    """Newey–West lag covering the overlap of ``horizon``-minute outcomes sampled every ``step_minutes``."""
    overlap = max(math.ceil(horizon / max(step_minutes, 1e-9)) - 1, 0)
    rule = int(math.floor(4 * (n_times / 100.0) ** (2.0 / 9.0)))
    return int(min(max(overlap, rule), max(n_times - 2, 0)))


def newey_west_se(series: np.ndarray, lag: int, overlap: int = 0) -> float:
    """HAC standard error of the mean of ``series``: the first ``overlap`` autocovariances at full
    weight (Hansen–Hodrick: exact for the MA(overlap) that overlapping outcomes create), the rest up to
    ``lag`` with Bartlett weights; falls back to pure Bartlett (Newey–West) if that is not positive."""
    x = np.asarray(series, dtype=np.float64)
    n = x.size
    e = x - x.mean()
    gamma = [float(e[k:] @ e[: n - k]) / n for k in range(lag + 1)]
    overlap = min(overlap, lag)
    tail = lag - overlap
    variance = gamma[0] + 2.0 * sum(gamma[1 : overlap + 1])
    variance += 2.0 * sum((1.0 - j / (tail + 1.0)) * gamma[overlap + j] for j in range(1, tail + 1))
    if variance <= 0:
        variance = gamma[0] + 2.0 * sum((1.0 - k / (lag + 1.0)) * gamma[k] for k in range(1, lag + 1))
    return math.sqrt(max(variance, 0.0) / n)


def _step_minutes(time_keys: np.ndarray) -> float:
    gaps = np.diff(time_keys) / 60e9
    return float(np.median(gaps)) if gaps.size else 1.0


def effective_samples(times: np.ndarray, horizon: float) -> float:
    """Distinct sample times discounted for overlap: ``T * min(1, step / horizon)`` (both in minutes:
    pass ``GateConfig.horizon_minutes``)."""
    keys = np.unique(np.asarray(times).astype("datetime64[ns]").astype(np.int64))
    return float(keys.size * min(1.0, _step_minutes(keys) / horizon))


def paired_test(
    candidate_loss: np.ndarray,
    other_loss: np.ndarray,
    times: np.ndarray,
    horizon: float,
    level: float,
    *,
    other: str,
    margin: float = 0.0,
    kind: str = "superiority",
) -> PairedTest:
    """Diebold–Mariano test on ``d = candidate - other`` (see the module doc; ``horizon`` in minutes on the
    clock, ``GateConfig.horizon_minutes``, so the overlap is right at every interval): ``superiority`` /
    ``non_inferiority`` test ``H0: E[d] >= margin`` against ``<``; ``not_worse`` tests ``H0: E[d] <= margin``
    against ``>`` and passes when that is *not* rejected."""
    a, b = np.asarray(candidate_loss, np.float64), np.asarray(other_loss, np.float64)
    if a.shape != b.shape or a.shape[0] != len(times):
        raise ValueError(f"paired losses must have one value per row; got {a.shape}, {b.shape}, {len(times)}")
    keys_ns = np.asarray(times).astype("datetime64[ns]").astype(np.int64)
    d, keys = _per_time(a - b, keys_ns)
    n = d.size
    if n < 3:
        raise ValueError(f"a paired test needs >= 3 sample times, got {n}")
    step = _step_minutes(keys)
    lag = hac_lag(horizon, step, n)
    se = newey_west_se(d, lag, overlap=max(math.ceil(horizon / max(step, 1e-9)) - 1, 0))
    mean = float(d.mean())
    if se > 0:
        statistic = (mean - margin) / se
        below = float(stats.t.cdf(statistic, df=n - 1))
    else:  # identical losses on every row: the sign of (mean - margin) is exact
        statistic = -math.inf if mean < margin else (math.inf if mean > margin else 0.0)
        below = 0.0 if mean < margin else 1.0
    if kind == "not_worse":
        p_value = 1.0 - below if se > 0 else (0.0 if mean > margin else 1.0)
        return PairedTest(other, kind, mean, se, float(statistic), p_value, lag, n, margin, p_value >= level)
    return PairedTest(other, kind, mean, se, float(statistic), below, lag, n, margin, below < level)


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
    candidate_loss: np.ndarray,
    times: np.ndarray,
    champion_loss: np.ndarray | None,
    baseline_losses: Mapping[str, np.ndarray],
    problems: Sequence[str] = (),
    level: float | None = None,
) -> GateDecision:
    """The gate's decision on per-row losses of the same rows (see the module docstring).

    ``champion_loss`` None means there is no champion yet. ``level`` overrides ``config.level`` (the
    caller spends a smaller level when the rows were already used by an earlier gate).
    """
    level = config.level if level is None else level
    reasons: list[str] = list(problems)
    metric = config.label
    n_eff = effective_samples(times, config.horizon_minutes)
    scores = {name: float(np.mean(loss)) for name, loss in baseline_losses.items()}
    candidate_score = float(np.mean(candidate_loss))
    champion_score = None if champion_loss is None else float(np.mean(champion_loss))
    tests: list[PairedTest] = []

    def test(other: str, loss: np.ndarray, kind: str, margin: float = 0.0) -> None:
        tests.append(
            paired_test(
                candidate_loss,
                loss,
                times,
                config.horizon_minutes,
                level,
                other=other,
                margin=margin,
                kind=kind,
            )
        )

    if n_eff < config.min_effective_samples:
        reasons.append(
            f"insufficient gate rows: n_eff={n_eff:.1f} < {config.min_effective_samples} ({len(times)} rows)"
        )
    else:
        if champion_loss is not None:
            test("champion", champion_loss, "superiority")
        else:
            missing = [b for b in NAIVE_BASELINES if b not in baseline_losses]
            if missing:
                raise ValueError(f"first champion needs naive baseline losses; missing {missing}")
            for name in NAIVE_BASELINES:
                test(name, baseline_losses[name], "superiority")
        fitted = [b for b in FITTED_BASELINES if b in baseline_losses]
        if fitted:
            best = min(fitted, key=lambda b: scores[b])
            test(best, baseline_losses[best], config.baseline_test, config.margin)
        reasons.extend(t.describe() for t in tests)
    passed = bool(tests) and all(t.passed for t in tests) and n_eff >= config.min_effective_samples
    head = f"{metric} candidate {candidate_score:.5f}" + (
        f" vs champion {champion_score:.5f}" if champion_score is not None else " (no champion yet)"
    )
    reasons.insert(0, f"{head}; level {level:g}, {len(times)} rows, n_eff {n_eff:.0f}")
    return GateDecision(
        promote=passed and not problems,
        reasons=tuple(reasons),
        candidate_score=candidate_score,
        champion_score=champion_score,
        baseline_scores=scores,
        tests=tuple(tests),
        rows_used=int(len(times)),
        n_effective=n_eff,
        level=level,
    )


def score_bundle(bundle_dir, samples, indices: np.ndarray, config: GateConfig, prefer_int8: bool = True):
    """Score a served bundle (ONNX Runtime, its own scaler) on the given rows of an unscaled sample set.

    Returns ``(score, proba, regression, feature_names)`` where ``score`` is the mean of the gate's
    per-row loss (for ``accuracy``: the accuracy itself); both the candidate and the champion are
    scored through this one path, on the same rows, so the comparison is like for like.
    """
    proba, regression, names, losses = score_rows(bundle_dir, samples, indices, config, prefer_int8)
    score = 1.0 - float(losses.mean()) if config.metric == "accuracy" else float(losses.mean())
    return score, proba, regression, names


def score_rows(bundle_dir, samples, indices: np.ndarray, config: GateConfig, prefer_int8: bool = True):
    """``(proba, regression, feature_names, per-row losses at the gate horizon)`` of a bundle."""
    from antmeter.learn.bundle import ServingModel

    model = ServingModel.load(bundle_dir, prefer_int8=prefer_int8)
    if config.horizon not in model.horizons:
        raise ValueError(f"gate horizon {config.horizon}m not among the model's horizons {model.horizons}")
    h = model.horizons.index(config.horizon)
    sample_h = list(samples.spec.horizons).index(config.horizon)
    proba, regression = model.predict_samples(samples, indices)
    losses = row_losses(samples.y_class[indices, sample_h], proba[:, h], config.metric)
    return proba, regression, list(model.schema.names), losses


def baseline_row_losses(
    baseline_proba: Mapping[str, np.ndarray], samples, indices: np.ndarray, config: GateConfig
) -> dict[str, np.ndarray]:
    """Per-row gate losses of the baselines from their holdout probabilities ``(N, H, K)`` (rows of
    ``indices``, horizons of ``samples.spec``)."""
    h = list(samples.spec.horizons).index(config.horizon)
    y = samples.y_class[indices, h]
    out = {}
    for name, proba in baseline_proba.items():
        if proba.shape[0] != len(indices):
            raise ValueError(f"baseline {name}: {proba.shape[0]} holdout rows, expected {len(indices)}")
        out[name] = row_losses(y, proba[:, h], config.metric)
    return out


def gate_candidate(
    candidate_dir,
    champion_dir,
    samples,
    indices: np.ndarray,
    config: GateConfig,
    baseline_proba: Mapping[str, np.ndarray],
    extra_problems: Sequence[str] = (),
    rows: np.ndarray | None = None,
    level: float | None = None,
) -> GateDecision:
    """Score the candidate bundle (and the champion bundle, when there is one) per row on the same rows
    through :func:`score_rows`, check the candidate's sanity, and decide with :func:`decide_promotion`.

    ``indices`` are the holdout rows the baselines' probabilities ``(N, H, K)`` belong to; ``rows`` (a
    boolean mask or positions into ``indices``) restricts the test to a sub-block (default: all).
    ``champion_dir`` None means there is no champion yet. ``extra_problems`` (e.g. ONNX parity problems)
    disqualify the candidate like sanity problems. The Dagster gate and the replay runner both call this.
    """
    indices = np.asarray(indices, dtype=np.int64)
    keep = np.arange(len(indices)) if rows is None else np.arange(len(indices))[rows]
    chosen = indices[keep]
    proba, regression, names, candidate_loss = score_rows(candidate_dir, samples, chosen, config)
    problems = [*extra_problems, *sanity_problems(proba, regression, list(samples.schema.names), names)]
    champion_loss = None if champion_dir is None else score_rows(champion_dir, samples, chosen, config)[3]
    baselines = baseline_row_losses({k: v[keep] for k, v in baseline_proba.items()}, samples, chosen, config)
    return decide_promotion(
        config, candidate_loss, samples.sample_time[chosen], champion_loss, baselines, problems, level
    )
