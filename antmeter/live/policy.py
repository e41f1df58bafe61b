"""The retraining decision: one pure function shared by the live sensor and the replay driver.

Statistics
----------
A decision is never taken on a single dip. It needs at least ``min_samples`` verified predictions
in the window (a raw count: with the overlap discount below it would take days of 30-minute
predictions to reach) and a significant one-sided test on the *effective* sample size:

* **Effective sample size.** Predictions are made every minute but an ``h``-minute outcome overlaps
  the next ``h - 1`` outcomes, so consecutive hits are strongly correlated. Each prediction counts as
  ``min(1, gap / h)`` independent observations, where ``gap`` is the minutes since the previous
  prediction of the same symbol (the first counts 1): a dense minute stream counts ``n / h`` (the
  number of non-overlapping outcomes, the usual overlapping-returns correction, cf. Hansen & Hodrick
  1980), a stream sparser than ``h`` counts ``n``. Several symbols are summed as if independent
  (optimistic when they co-move; use one symbol per policy when that matters).
* **Accuracy below threshold.** Normal approximation to the binomial with the effective size:
  ``z = (acc - threshold) / sqrt(threshold (1 - threshold) / n_eff)``, p = Phi(z); triggers when
  ``p < significance``.
* **Worse than the best baseline** (highest hit count on the same rows). McNemar's test on the
  discordant pairs, one-sided, with both discordant counts scaled by ``n_eff / n``:
  ``z = (c - b) * sqrt(n_eff / n) / sqrt(b + c)``, where ``b`` = model right & baseline wrong,
  ``c`` = model wrong & baseline right; triggers when ``p = 1 - Phi(z) < significance``.
* **Drift.** ``max_psi >= psi_alert`` (see :mod:`antmeter.live.drift`); needs no sample minimum.

Control: nothing happens within ``cooldown_minutes`` of the last retrain (accepted or not). A trigger
asks for an ``incremental`` retrain, escalated to ``full`` once ``consecutive_rejections`` (retrains
whose candidate the gate refused, in a row) reaches ``max_consecutive_rejections``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd

from antmeter.live._frames import ONE_MINUTE, require_columns, utc_ns, utc_timestamp
from antmeter.live.verification import BASELINES

Action = Literal["none", "incremental", "full"]


@dataclass(frozen=True)
class RetrainPolicy:
    """Settings of the retraining decision (see the module docstring)."""

    accuracy_threshold: float = 0.52
    min_samples: int = 200
    significance: float = 0.05
    cooldown_minutes: int = 60
    max_consecutive_rejections: int = 3
    psi_alert: float = 0.25
    horizon: int = 5
    window_minutes: int = 24 * 60

    def __post_init__(self) -> None:
        checks = {
            "accuracy_threshold": 0 < self.accuracy_threshold < 1,
            "min_samples": self.min_samples >= 1,
            "significance": 0 < self.significance < 1,
            "cooldown_minutes": self.cooldown_minutes >= 0,
            "max_consecutive_rejections": self.max_consecutive_rejections >= 1,
            "psi_alert": self.psi_alert > 0,
            "horizon": self.horizon >= 1,
            "window_minutes": self.window_minutes >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"RetrainPolicy.{name} out of range: {getattr(self, name)!r}")


@dataclass(frozen=True)
class WindowStats:
    """Verified-window statistics of the champion (baseline fields are None without baselines)."""

    n: int
    n_correct: int
    n_effective: float
    baseline_name: str | None = None
    baseline_n_correct: int | None = None
    model_only_correct: int | None = None
    baseline_only_correct: int | None = None

    @property
    def accuracy(self) -> float:
        return self.n_correct / self.n if self.n else float("nan")


@dataclass(frozen=True)
class PolicyInput:
    """Everything :func:`decide` looks at."""

    window: WindowStats
    max_psi: float | None
    now: pd.Timestamp
    last_retrain_at: pd.Timestamp | None
    consecutive_rejections: int


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
    """What the caller carries between decisions: the last retrain time and the rejection streak."""

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

    def after_retrain(self, now: pd.Timestamp, promoted: bool) -> PolicyState:
        """State after a retrain attempt at ``now`` whose candidate was (not) promoted."""
        return replace(
            self,
            last_retrain_at=now,
            consecutive_rejections=0 if promoted else self.consecutive_rejections + 1,
        )


def _phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def effective_sample_size(prediction_times: pd.Series, symbols: pd.Series, horizon: int) -> float:
    """Overlap-discounted count: each prediction counts ``min(1, minutes since previous / horizon)``."""
    if len(prediction_times) == 0:
        return 0.0
    times = np.asarray(pd.Series(prediction_times).astype("datetime64[ns, UTC]").astype("int64"))
    codes = pd.factorize(np.asarray(symbols, dtype=object))[0]
    order = np.lexsort((times, codes))
    gaps = np.diff(times[order]) / ONE_MINUTE.value
    first = np.concatenate([[True], np.diff(codes[order]) != 0])
    weights = np.where(first, 1.0, np.minimum(1.0, np.concatenate([[horizon], gaps]) / horizon))
    return float(weights.sum())


def summarize_window(
    verified: pd.DataFrame, policy: RetrainPolicy, now: pd.Timestamp, model_version: str | None = None
) -> WindowStats:
    """Window statistics from verified rows (predictions joined with verification, plus baselines).

    Keeps rows of ``policy.horizon`` (and ``model_version`` when given -- otherwise the rows must hold a
    single version) whose outcome became known in ``(now - window_minutes, now]``. Baselines are the
    ``{b}_correct`` columns present with at least one value (see
    :func:`antmeter.live.verification.add_baselines`); the baseline comparison uses only the rows where
    every such column is defined.
    """
    now = utc_timestamp(now, "now")
    require_columns(verified, ["symbol", "prediction_time", "horizon_min", "correct"], "verified")
    rows = verified[verified["horizon_min"].astype("int64") == policy.horizon]
    if model_version is not None:
        require_columns(verified, ["model_version"], "verified")
        rows = rows[rows["model_version"].astype("str") == str(model_version)]
    elif "model_version" in rows.columns and rows["model_version"].nunique() > 1:
        versions = sorted(rows["model_version"].astype("str").unique())
        raise ValueError(f"verified rows mix model versions {versions}; pass model_version")
    times = utc_ns(rows["prediction_time"], "prediction_time", "verified")
    known_at = times.astype("int64").to_numpy() + (policy.horizon + 1) * ONE_MINUTE.value
    in_window = (known_at <= now.value) & (known_at > now.value - policy.window_minutes * ONE_MINUTE.value)
    rows, times = rows[in_window], times[in_window]
    correct = rows["correct"].to_numpy(dtype="float64", na_value=np.nan)
    if np.isnan(correct).any():
        raise ValueError("verified.correct has missing values")
    stats = WindowStats(
        n=len(rows),
        n_correct=int(correct.sum()),
        n_effective=effective_sample_size(times, rows["symbol"].astype("str"), policy.horizon),
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
    base, model = base[common].astype(bool), correct[common].astype(bool)
    best = int(np.argmax(base.sum(axis=0)))
    return replace(
        stats,
        baseline_name=baseline_columns[best].removesuffix("_correct"),
        baseline_n_correct=int(base[:, best].sum()),
        model_only_correct=int((model & ~base[:, best]).sum()),
        baseline_only_correct=int((~model & base[:, best]).sum()),
    )


def decide(policy: RetrainPolicy, inp: PolicyInput) -> Decision:
    """The retraining decision for ``inp`` under ``policy`` (deterministic; see the module docstring)."""
    now = utc_timestamp(inp.now, "now")
    w = inp.window
    stats: dict = {
        "n": w.n,
        "n_correct": w.n_correct,
        "n_effective": w.n_effective,
        "accuracy": w.accuracy,
        "max_psi": inp.max_psi,
        "consecutive_rejections": inp.consecutive_rejections,
        "baseline_name": w.baseline_name,
        "baseline_accuracy": (w.baseline_n_correct / w.n)
        if w.baseline_n_correct is not None and w.n
        else None,
        "p_accuracy": None,
        "p_worse_than_baseline": None,
        "minutes_since_retrain": None,
    }
    if inp.last_retrain_at is not None:
        elapsed = (now - utc_timestamp(inp.last_retrain_at, "last_retrain_at")) / ONE_MINUTE
        stats["minutes_since_retrain"] = elapsed
        if elapsed < policy.cooldown_minutes:
            return Decision(
                "none",
                (f"cooldown: {elapsed:.0f} min since last retrain < {policy.cooldown_minutes}",),
                stats,
            )
    triggers: list[str] = []
    if w.n >= policy.min_samples and w.n_effective > 0:
        thr = policy.accuracy_threshold
        z = (w.accuracy - thr) / math.sqrt(thr * (1 - thr) / w.n_effective)
        stats["p_accuracy"] = _phi(z)
        if stats["p_accuracy"] < policy.significance:
            triggers.append(
                f"accuracy_below_threshold: {w.accuracy:.3f} < {thr} (p={stats['p_accuracy']:.4f}, "
                f"n={w.n}, n_eff={w.n_effective:.1f})"
            )
        b, c = w.model_only_correct, w.baseline_only_correct
        if b is not None and c is not None and b + c > 0:
            z = (c - b) * math.sqrt(w.n_effective / w.n) / math.sqrt(b + c)
            stats["p_worse_than_baseline"] = 1.0 - _phi(z)
            if stats["p_worse_than_baseline"] < policy.significance:
                triggers.append(
                    f"worse_than_baseline: {w.baseline_name} right/model wrong {c} vs {b} "
                    f"(p={stats['p_worse_than_baseline']:.4f})"
                )
    if inp.max_psi is not None and np.isfinite(inp.max_psi) and inp.max_psi >= policy.psi_alert:
        triggers.append(f"drift: max_psi={inp.max_psi:.3f} >= {policy.psi_alert}")
    if not triggers:
        if w.n < policy.min_samples:
            return Decision("none", (f"insufficient_samples: n={w.n} < {policy.min_samples}",), stats)
        return Decision("none", ("healthy: no significant degradation or drift",), stats)
    if inp.consecutive_rejections >= policy.max_consecutive_rejections:
        escalation = f"escalated: {inp.consecutive_rejections} consecutive rejections >= {policy.max_consecutive_rejections}"
        return Decision("full", (*triggers, escalation), stats)
    return Decision("incremental", tuple(triggers), stats)


def evaluate(
    policy: RetrainPolicy,
    verified: pd.DataFrame,
    now: pd.Timestamp,
    state: PolicyState,
    max_psi: float | None = None,
    model_version: str | None = None,
) -> Decision:
    """Summarize the window and decide: the single entry point of both the sensor and the replay."""
    window = summarize_window(verified, policy, now, model_version=model_version)
    return decide(
        policy, PolicyInput(window, max_psi, now, state.last_retrain_at, state.consecutive_rejections)
    )


def run_key(
    decision: Decision, *, model_name: str, horizon: int, now: pd.Timestamp, symbol: str | None = None
) -> str:
    """A deterministic run key: the same action, model, horizon, symbol and minute give the same key."""
    minute = utc_timestamp(now, "now").floor("min").isoformat()
    payload = json.dumps(
        {
            "action": decision.action,
            "model": model_name,
            "horizon": int(horizon),
            "symbol": symbol,
            "minute": minute,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
    return f"retrain-{decision.action}-{model_name}-h{int(horizon)}-{digest}"
