"""The retraining decision: one pure function shared by the live sensor and the replay driver.

What is judged
--------------
Only the verified rows of the **serving champion version** of one model type (a version that no
longer serves is never judged), at the policy's horizon, in order of prediction time. Each model type
gets its own decision, its own cool-down and its own rejection streak.

Sequential tests (they survive repeated looks)
----------------------------------------------
The sensor looks after every verification report, so a fixed-sample test at level 0.05 repeated
hourly fires on noise within days. Both accuracy triggers are instead one-sided **CUSUM** charts
(Page 1954) of a log-likelihood ratio, recomputed over every verified row of the version in the report's
look-back (starting a chart later can only lower it, so truncation never adds alarms):

* **Effective sample size.** An ``h``-candle outcome overlaps the next ``h - 1``, so each row carries
  weight ``w = min(1, gap / h)`` (``gap``: candles since the previous row of the same symbol, the first
  counts 1): a dense stream counts ``n / h`` independent rows (cf. Hansen & Hodrick 1980). Each row adds
  ``w * llr`` to the chart: ``S = max(0, S + w * llr)``.
* **Accuracy below threshold.** Hits are Bernoulli(p); ``H0: p = accuracy_threshold`` against
  ``H1: p = accuracy_threshold - shift``; ``llr = ln(p1/p0)`` for a hit, ``ln((1-p1)/(1-p0))`` for a miss.
* **Worse than the best baseline** (most hits on the same rows). On the discordant rows,
  ``H0: P(baseline right) = 0.5`` against ``0.5 + shift``.
* **Below its validated level** (``validated_chart``). The two charts above test against fixed
  levels, so a champion validated at 0.70 whose edge flips to 0.44 moves them slowly: the information
  per row is ``KL(0.44 || 0.52)``, about 25 hours of two symbols at 5 candles. This chart tests the
  champion against the accuracy its gate validated it at (``validated_accuracy`` of its serving config:
  accuracy and effective rows on the holdout block the gate scored, which it never trained on), taken
  conservatively as the one-sided lower confidence bound ``r = p - z * sqrt(p(1-p)/n_eff)`` at
  ``validated_confidence``: ``H0: p = r`` against ``H1: p = min(0.5, r - shift)`` (the validated edge is
  gone). It runs only when ``r`` is above ``accuracy_threshold`` (otherwise the first chart covers it).
* **Alarm** when ``S >= ln(arl_effective * m)``, ``m`` = tests x model types: by Lorden's bound each
  chart's in-control average run length is at least ``arl_effective * m`` effective rows, so over all
  ``m`` charts false alarms come at most once per ``arl_effective`` effective rows on average (a
  Bonferroni correction of the alarm rate). ``min_samples`` raw rows are needed before any alarm.
* **Episode.** The run key hashes the model type, version, action, the time the alarming chart last
  left zero and the end of the last retrain: every report of one episode gives the same key (Dagster
  launches it once); after a retrain ends, a persisting episode may ask again (escalating).

Drift (:mod:`antmeter.live.drift`) is a **warning** only: it never triggers a retrain by itself,
because a covariate shift that leaves accuracy intact (e.g. volatility tripling) needs no new model,
and a harmful one shows in the accuracy charts, which do trigger. It is reported in the reasons.

Control: nothing happens within ``cooldown_candles`` of the **end** of the type's last retrain
(accepted or not). A trigger asks for an ``incremental`` retrain of that type, escalated to ``full``
once its consecutive rejections reach ``max_consecutive_rejections``. Durations are in candles of
``interval``.

No identical retrain twice. A retrain is deterministic in its recipe, its data window and the champion
it starts from (:func:`retrain_key`). When the retrain a trigger asks for would repeat one that was
already rejected (``PolicyInput.repeats_rejected``), an incremental request escalates to ``full`` at
once, and a full one waits for new data (``awaiting_new_data``) instead of re-running the same
computation to the same rejection.

No champion. When nothing serves for a model type (its first candidate, or every one since, was
refused by the gate), there are no verified rows to judge; the policy then asks for a ``full`` retrain
once ``no_champion_retry_candles`` have passed since the last retrain ended, and only on new data.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Literal

import numpy as np
import pandas as pd

from antmeter.live._frames import require_columns, utc_ns, utc_timestamp
from antmeter.live.verification import BASELINES
from antmeter.market.candles import interval_timedelta

Action = Literal["none", "incremental", "full"]
TESTS_PER_MODEL = 3  # accuracy below threshold, worse than the best baseline, below its validated level


@dataclass(frozen=True)
class RetrainPolicy:
    """Settings of the retraining decision (see the module docstring); durations in candles."""

    accuracy_threshold: float = 0.52
    shift: float = 0.05
    min_samples: int = 200
    arl_effective: float = 2000.0
    cooldown_candles: int = 60
    max_consecutive_rejections: int = 3
    no_champion_retry_candles: int = 24 * 60
    horizon: int = 5
    window_candles: int = 24 * 60
    # the CUSUM charts run over the rows predicted in the last chart_candles (the report's lookback)
    chart_candles: int = 3 * 24 * 60
    interval: str = "1m"
    # the chart against the champion's validated (gate holdout) accuracy, at this lower confidence bound
    validated_chart: bool = True
    validated_confidence: float = 0.95

    def __post_init__(self) -> None:
        checks = {
            "accuracy_threshold": 0 < self.accuracy_threshold < 1,
            "shift": 0 < self.shift < min(self.accuracy_threshold, 0.5),
            "min_samples": self.min_samples >= 1,
            "arl_effective": self.arl_effective > 1,
            "cooldown_candles": self.cooldown_candles >= 0,
            "max_consecutive_rejections": self.max_consecutive_rejections >= 1,
            "no_champion_retry_candles": self.no_champion_retry_candles >= 0,
            "horizon": self.horizon >= 1,
            "window_candles": self.window_candles >= 1,
            "chart_candles": self.chart_candles >= self.window_candles,
            "validated_confidence": 0.5 <= self.validated_confidence < 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"RetrainPolicy.{name} out of range: {getattr(self, name)!r}")
        interval_timedelta(self.interval)

    @property
    def candle(self) -> pd.Timedelta:
        return interval_timedelta(self.interval)

    @property
    def window_minutes(self) -> float:
        return self.window_candles * self.candle / pd.Timedelta(minutes=1)

    @property
    def chart_span(self) -> pd.Timedelta:
        return self.chart_candles * self.candle

    @property
    def cooldown_minutes(self) -> float:
        return self.cooldown_candles * self.candle / pd.Timedelta(minutes=1)

    @property
    def no_champion_retry_minutes(self) -> float:
        return self.no_champion_retry_candles * self.candle / pd.Timedelta(minutes=1)

    @property
    def tests_per_model(self) -> int:
        return TESTS_PER_MODEL if self.validated_chart else TESTS_PER_MODEL - 1

    def alarm_threshold(self, n_models: int = 1) -> float:
        """The CUSUM alarm level ``ln(arl_effective * tests * model types)``."""
        return math.log(self.arl_effective * self.tests_per_model * max(n_models, 1))

    def validated_reference(self, validated: Mapping[str, float] | None) -> float | None:
        """The validated chart's in-control accuracy: the lower ``validated_confidence`` bound of the
        champion's validated accuracy (``{"accuracy": p, "n_effective": n}``), or None when the chart is
        off, nothing was validated, or the bound is not above ``accuracy_threshold``."""
        if not self.validated_chart or not validated:
            return None
        p, n = float(validated.get("accuracy", float("nan"))), float(validated.get("n_effective", 0.0))
        if not (math.isfinite(p) and 0 < p < 1 and n >= 1):
            return None
        z = float(NormalDist().inv_cdf(self.validated_confidence))
        reference = p - z * math.sqrt(p * (1 - p) / n)
        return reference if reference > self.accuracy_threshold else None


@dataclass(frozen=True)
class WindowStats:
    """Verified-window statistics of the serving champion version (baseline fields None without baselines).

    Counts are over the window; the CUSUM values are the charts' current values over all rows given,
    with the time each last left zero (the episode start)."""

    n: int
    n_correct: int
    n_effective: float
    baseline_name: str | None = None
    baseline_n_correct: int | None = None
    model_only_correct: int | None = None
    baseline_only_correct: int | None = None
    cusum_accuracy: float = 0.0
    cusum_baseline: float = 0.0
    episode_accuracy: str | None = None
    episode_baseline: str | None = None
    model_version: str | None = None
    validated_reference: float | None = None
    cusum_validated: float = 0.0
    episode_validated: str | None = None

    @property
    def accuracy(self) -> float:
        return self.n_correct / self.n if self.n else float("nan")


@dataclass(frozen=True)
class PolicyInput:
    """Everything :func:`decide` looks at.

    ``serving``: whether a champion of this type serves (False: nothing to judge, see "No champion");
    ``repeats_rejected``: the actions whose retrain, launched now, would repeat an already rejected one
    exactly (same :func:`retrain_key`)."""

    window: WindowStats
    max_psi: float | None
    now: pd.Timestamp
    last_retrain_at: pd.Timestamp | None
    consecutive_rejections: int
    drift_warning: bool = False
    n_models: int = 1
    serving: bool = True
    repeats_rejected: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Decision:
    """What to do, why (``"code: detail"`` strings) and the numbers behind it."""

    action: Action
    reasons: tuple[str, ...]
    stats: dict = field(default_factory=dict)

    @property
    def codes(self) -> tuple[str, ...]:
        """The reason codes (the part before ``:``)."""
        return tuple(r.split(":", 1)[0] for r in self.reasons)


@dataclass(frozen=True)
class PolicyState:
    """What the caller carries between decisions: when the last retrain ended and the rejection streak."""

    last_retrain_at: pd.Timestamp | None = None
    consecutive_rejections: int = 0

    def to_json(self) -> str:
        """A stable JSON form (e.g. for a sensor cursor)."""
        stamp = (
            None if self.last_retrain_at is None else utc_timestamp(self.last_retrain_at, "last_retrain_at")
        )
        return json.dumps(
            {
                "last_retrain_at": None if stamp is None else stamp.isoformat(),
                "consecutive_rejections": self.consecutive_rejections,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> PolicyState:
        """Inverse of :meth:`to_json`; None or an empty string gives the initial state."""
        if not text:
            return cls()
        data = json.loads(text)
        stamp = data.get("last_retrain_at")
        return cls(
            None if stamp is None else utc_timestamp(stamp, "last_retrain_at"),
            int(data.get("consecutive_rejections", 0)),
        )

    def after_retrain(self, ended_at: pd.Timestamp, promoted: bool) -> PolicyState:
        """State after a retrain that ended at ``ended_at`` whose candidate was (not) promoted."""
        return replace(
            self,
            last_retrain_at=ended_at,
            consecutive_rejections=0 if promoted else self.consecutive_rejections + 1,
        )


def version_key(version: object) -> tuple[int, str]:
    """Sort key of model versions: numerically when they are integers ("9" < "12"), else as text."""
    text = str(version)
    return (int(text), "") if text.isdigit() else (2**63, text)


def overlap_weights(prediction_times: pd.Series, symbols: pd.Series, horizon: int, candle: pd.Timedelta):
    """Per-row weights ``min(1, candles since the previous row of the symbol / horizon)`` (first: 1),
    in the input order."""
    if len(prediction_times) == 0:
        return np.zeros(0)
    times = np.asarray(pd.Series(prediction_times).astype("datetime64[ns, UTC]").astype("int64"))
    codes = pd.factorize(np.asarray(symbols, dtype=object))[0]
    order = np.lexsort((times, codes))
    gaps = np.diff(times[order]) / candle.value
    first = np.concatenate([[True], np.diff(codes[order]) != 0])
    sorted_weights = np.where(first, 1.0, np.minimum(1.0, np.concatenate([[horizon], gaps]) / horizon))
    weights = np.empty_like(sorted_weights)
    weights[order] = sorted_weights
    return weights


def effective_sample_size(
    prediction_times: pd.Series, symbols: pd.Series, horizon: int, candle: pd.Timedelta | None = None
) -> float:
    """Overlap-discounted count: the sum of :func:`overlap_weights`."""
    candle = pd.Timedelta(minutes=1) if candle is None else candle
    return float(overlap_weights(prediction_times, symbols, horizon, candle).sum())


def cusum(hits: np.ndarray, weights: np.ndarray, p0: float, p1: float) -> tuple[float, int | None]:
    """One-sided CUSUM of Bernoulli ``hits`` for ``H1: p = p1`` against ``H0: p = p0`` (weighted rows).

    Returns the chart's final value and the position of the row after which it last left zero (None
    when it ends at zero)."""
    up, down = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    increments = np.where(np.asarray(hits, bool), up, down) * np.asarray(weights, float)
    value, start = 0.0, None
    for i, step in enumerate(increments):
        value = max(0.0, value + step)
        if value == 0.0:
            start = None
        elif start is None:
            start = i
    return value, start


def summarize_window(
    verified: pd.DataFrame,
    policy: RetrainPolicy,
    now: pd.Timestamp,
    model_version: str | None = None,
    validated: Mapping[str, float] | None = None,
) -> WindowStats:
    """Window statistics and CUSUM charts from verified rows (predictions joined with verification, plus
    baselines) of one model version.

    Keeps rows of ``policy.horizon`` (and ``model_version`` when given -- otherwise the rows must hold a
    single version) whose outcome was known by ``now``; ``validated``: the version's validated accuracy at
    the policy horizon (see :meth:`RetrainPolicy.validated_reference`). The counts use those known within the last
    ``window_candles``, the charts those predicted within the last ``chart_candles`` (so a caller passing
    more history, e.g. a replay, charts what the deployment's report does). Baselines are the ``{b}_correct`` columns present with
    at least one value; the baseline comparison uses only the rows where every such column is defined.
    """
    now = utc_timestamp(now, "now")
    require_columns(verified, ["symbol", "prediction_time", "horizon_min", "correct"], "verified")
    rows = verified[verified["horizon_min"].astype("int64") == policy.horizon]
    if model_version is not None:
        require_columns(verified, ["model_version"], "verified")
        rows = rows[rows["model_version"].astype("str") == str(model_version)]
    elif "model_version" in rows.columns and rows["model_version"].nunique() > 1:
        versions = sorted(rows["model_version"].astype("str").unique(), key=version_key)
        raise ValueError(f"verified rows mix model versions {versions}; pass model_version")
    times = utc_ns(rows["prediction_time"], "prediction_time", "verified")
    known_at = times + (policy.horizon + 1) * policy.candle
    known = ((known_at <= now) & (times >= now - policy.chart_span)).to_numpy()
    rows, times = rows[known], times[known]
    order = np.lexsort((rows["symbol"].astype("str").to_numpy(), times.astype("int64").to_numpy()))
    rows, times = rows.iloc[order], times.iloc[order]
    correct = rows["correct"].to_numpy(dtype="float64", na_value=np.nan)
    if np.isnan(correct).any():
        raise ValueError("verified.correct has missing values")
    weights = overlap_weights(times, rows["symbol"].astype("str"), policy.horizon, policy.candle)
    in_window = (
        times + (policy.horizon + 1) * policy.candle > now - policy.window_candles * policy.candle
    ).to_numpy()
    p0 = policy.accuracy_threshold
    chart, start = cusum(correct.astype(bool), weights, p0, p0 - policy.shift)
    stamps = list(times)
    reference = policy.validated_reference(validated)
    validated_chart, validated_start = (
        cusum(correct.astype(bool), weights, reference, min(0.5, reference - policy.shift))
        if reference is not None
        else (0.0, None)
    )
    stats = WindowStats(
        n=int(in_window.sum()),
        n_correct=int(correct[in_window].sum()),
        n_effective=float(weights[in_window].sum()),
        cusum_accuracy=chart,
        episode_accuracy=None if start is None else str(stamps[start]),
        model_version=None if model_version is None else str(model_version),
        validated_reference=reference,
        cusum_validated=validated_chart,
        episode_validated=None if validated_start is None else str(stamps[validated_start]),
    )
    baseline_columns = [
        f"{b}_correct"
        for b in BASELINES
        if f"{b}_correct" in rows.columns and rows[f"{b}_correct"].notna().any()
    ]
    if not baseline_columns:
        return stats
    base = rows[baseline_columns].to_numpy(dtype="float64", na_value=np.nan)
    common = ~np.isnan(base).any(axis=1)
    window_common = common & in_window
    best = int(np.argmax(base[window_common].sum(axis=0))) if window_common.any() else 0
    model, baseline = correct.astype(bool), np.nan_to_num(base[:, best]).astype(bool)
    discordant = common & (model != baseline)
    chart, start = cusum(baseline[discordant], weights[discordant], 0.5, 0.5 + policy.shift)
    discordant_times = [t for t, d in zip(stamps, discordant, strict=True) if d]
    return replace(
        stats,
        baseline_name=baseline_columns[best].removesuffix("_correct"),
        baseline_n_correct=int(baseline[window_common].sum()),
        model_only_correct=int((model & ~baseline & window_common).sum()),
        baseline_only_correct=int((~model & baseline & window_common).sum()),
        cusum_baseline=chart,
        episode_baseline=None if start is None else str(discordant_times[start]),
    )


def decide(policy: RetrainPolicy, inp: PolicyInput) -> Decision:
    """The retraining decision for ``inp`` under ``policy`` (deterministic; see the module docstring)."""
    now = utc_timestamp(inp.now, "now")
    w = inp.window
    level = policy.alarm_threshold(inp.n_models)
    stats: dict = {
        "model_version": w.model_version,
        "n": w.n,
        "n_correct": w.n_correct,
        "n_effective": w.n_effective,
        "accuracy": w.accuracy,
        "max_psi": inp.max_psi,
        "drift_warning": bool(inp.drift_warning),
        "consecutive_rejections": inp.consecutive_rejections,
        "baseline_name": w.baseline_name,
        "baseline_accuracy": (w.baseline_n_correct / w.n)
        if w.baseline_n_correct is not None and w.n
        else None,
        "cusum_accuracy": w.cusum_accuracy,
        "cusum_baseline": w.cusum_baseline,
        "validated_reference": w.validated_reference,
        "cusum_validated": w.cusum_validated,
        "alarm_threshold": level,
        "episode": None,
        "last_retrain_at": None if inp.last_retrain_at is None else str(inp.last_retrain_at),
        "minutes_since_retrain": None,
        "serving": bool(inp.serving),
    }
    warning = (
        (f"drift_warning: persistent feature drift (max PSI {inp.max_psi:.3f}); warning only",)
        if inp.drift_warning and inp.max_psi is not None
        else ()
    )
    if inp.last_retrain_at is not None:
        elapsed = (now - utc_timestamp(inp.last_retrain_at, "last_retrain_at")) / pd.Timedelta(minutes=1)
        stats["minutes_since_retrain"] = elapsed
        if elapsed < policy.cooldown_minutes:
            return Decision(
                "none",
                (
                    f"cooldown: {elapsed:.0f} min since the last retrain ended < {policy.cooldown_minutes:g}",
                    *warning,
                ),
                stats,
            )
    if not inp.serving:
        return _without_champion(policy, inp, stats, warning)
    triggers: list[str] = []
    episodes: list[str] = []
    if w.n >= policy.min_samples:
        if w.cusum_accuracy >= level:
            triggers.append(
                f"accuracy_below_threshold: CUSUM {w.cusum_accuracy:.2f} >= {level:.2f} (accuracy "
                f"{w.accuracy:.3f} vs {policy.accuracy_threshold}, n={w.n}, n_eff={w.n_effective:.1f})"
            )
            episodes.append(str(w.episode_accuracy))
        if w.cusum_baseline >= level:
            triggers.append(
                f"worse_than_baseline: {w.baseline_name} CUSUM {w.cusum_baseline:.2f} >= {level:.2f} "
                f"(baseline right/model wrong {w.baseline_only_correct} vs {w.model_only_correct})"
            )
            episodes.append(str(w.episode_baseline))
        if w.validated_reference is not None and w.cusum_validated >= level:
            triggers.append(
                f"below_validated_level: CUSUM {w.cusum_validated:.2f} >= {level:.2f} (accuracy "
                f"{w.accuracy:.3f} vs validated lower bound {w.validated_reference:.3f}, n={w.n})"
            )
            episodes.append(str(w.episode_validated))
    if not triggers:
        if w.n < policy.min_samples:
            reason = f"insufficient_samples: n={w.n} < {policy.min_samples}"
        else:
            reason = (
                f"healthy: CUSUM accuracy {w.cusum_accuracy:.2f}, baseline {w.cusum_baseline:.2f}, "
                f"validated {w.cusum_validated:.2f} < {level:.2f}"
            )
        return Decision("none", (reason, *warning), stats)
    stats["episode"] = min(episodes)
    if inp.consecutive_rejections >= policy.max_consecutive_rejections:
        escalation = (
            f"escalated: {inp.consecutive_rejections} consecutive rejections >= "
            f"{policy.max_consecutive_rejections}"
        )
        return _unless_repeated(Decision("full", (*triggers, escalation, *warning), stats), inp)
    return _unless_repeated(Decision("incremental", (*triggers, *warning), stats), inp)


def _without_champion(policy: RetrainPolicy, inp: PolicyInput, stats: dict, warning: tuple) -> Decision:
    """Nothing serves: a full retrain once ``no_champion_retry_candles`` after the last one ended."""
    stats["episode"] = f"no champion since {stats['last_retrain_at']}"
    elapsed = stats["minutes_since_retrain"]
    if elapsed is not None and elapsed < policy.no_champion_retry_minutes:
        return Decision(
            "none",
            (
                f"no_champion: nothing serves; next full retrain in "
                f"{policy.no_champion_retry_minutes - elapsed:.0f} min (retry interval "
                f"{policy.no_champion_retry_candles} candles)",
                *warning,
            ),
            stats,
        )
    reason = "no_champion: nothing serves for this model type; a full retrain on the newest data"
    return _unless_repeated(Decision("full", (reason, *warning), stats), inp)


def _unless_repeated(decision: Decision, inp: PolicyInput) -> Decision:
    """An incremental retrain that would repeat a rejected one escalates to full; a full one that would
    repeat a rejected one waits for new data (see "No identical retrain twice")."""
    if decision.action not in inp.repeats_rejected:
        return decision
    if decision.action == "incremental" and "full" not in inp.repeats_rejected:
        reason = (
            "escalated: this incremental retrain (same recipe, data window and champion) was already "
            "rejected; a full retrain instead"
        )
        return replace(decision, action="full", reasons=(*decision.reasons, reason))
    reason = (
        f"awaiting_new_data: this {decision.action} retrain (same recipe, data window and champion) was "
        "already rejected; waiting for new data"
    )
    return replace(decision, action="none", reasons=(*decision.reasons, reason))


def evaluate(
    policy: RetrainPolicy,
    verified: pd.DataFrame,
    now: pd.Timestamp,
    state: PolicyState,
    max_psi: float | None = None,
    model_version: str | None = None,
    drift_warning: bool = False,
    n_models: int = 1,
    serving: bool = True,
    repeats_rejected: frozenset[str] = frozenset(),
    validated: Mapping[str, float] | None = None,
) -> Decision:
    """Summarize the window and decide: the single entry point of both the sensor and the replay."""
    window = summarize_window(verified, policy, now, model_version=model_version, validated=validated)
    return decide(
        policy,
        PolicyInput(
            window,
            max_psi,
            now,
            state.last_retrain_at,
            state.consecutive_rejections,
            drift_warning=drift_warning,
            n_models=n_models,
            serving=serving,
            repeats_rejected=repeats_rejected,
        ),
    )


def retrain_key(
    action: str,
    *,
    data_window: dict,
    run_config: dict,
    base_version: str | None,
) -> str:
    """The identity of a retrain's inputs: its action, run configuration (e.g. the fine-tune settings),
    data window (days, symbols, feature settings) and the champion version it starts from (a fine-tune)
    and is gated against (both). Two retrains with one key compute the same candidate and meet the same
    champion, so the gate would repeat its verdict."""
    payload = json.dumps(
        {
            "action": action,
            "data_window": data_window,
            "run_config": run_config,
            "base_version": None if base_version is None else str(base_version),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def run_key(
    decision: Decision, *, model_name: str, horizon: int, now: pd.Timestamp, symbol: str | None = None
) -> str:
    """A deterministic run key of one episode: action, model, version, horizon, symbol, the episode start
    and the end of the last retrain (see the module docstring); without an episode, the minute of ``now``."""
    stats = decision.stats
    episode = stats.get("episode") or utc_timestamp(now, "now").floor("min").isoformat()
    payload = json.dumps(
        {
            "action": decision.action,
            "model": model_name,
            "version": stats.get("model_version"),
            "horizon": int(horizon),
            "symbol": symbol,
            "episode": str(episode),
            "last_retrain_at": stats.get("last_retrain_at"),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
    return f"retrain-{decision.action}-{model_name}-h{int(horizon)}-{digest}"
