"""Replay driver: run the live loop over historical time with caller-supplied hooks.

At every step ``now`` the driver does what the live deployment does, in this order:

1. ``ingest(now)`` -- the caller makes candles (and news) up to ``now`` available;
2. ``verify(now)`` -- the caller returns the outcomes that became known (verification rows: symbol,
   prediction_time, horizon_min, realized_return, realized_class); an outcome not yet known at
   ``now`` (``prediction_time + h + 1 min > now``) is a look-ahead bug and raises;
3. the retraining sensor: :func:`antmeter.live.policy.evaluate` on the verified window of the current
   champion -- the very function the Dagster sensor calls -- and, when it asks for one,
   ``retrain(kind, now)``, whose :class:`GateOutcome` says whether the candidate was promoted;
4. ``predict(now)`` / ``predict_frozen(now)`` -- prediction rows of the adaptive system's current
   champion and of the never-retrained original champion (both in the predictions schema; adaptive
   rows may carry baseline columns from :func:`antmeter.live.verification.add_baselines`).

The driver matches outcomes to both prediction streams itself (the outcome of ``(symbol, t, h)`` is
model-independent), accumulates accuracy over time for the adaptive system, the frozen champion and
the baselines (scored on the adaptive system's rows), and at the end computes the after-cost P&L of
each with :func:`antmeter.live.trading.long_flat_short_pnl`.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from antmeter.live._frames import LiveInputError, require_columns, utc_ns, utc_timestamp
from antmeter.live.policy import PolicyState, RetrainPolicy, evaluate, run_key
from antmeter.live.trading import long_flat_short_pnl
from antmeter.live.verification import BASELINES, KEY_COLUMNS

ADAPTIVE, FROZEN, BUY_AND_HOLD = "adaptive", "frozen", "buy_and_hold"
BASELINE_STREAMS = tuple(f"baseline:{b}" for b in BASELINES)
OUTCOME_COLUMNS = ["symbol", "prediction_time", "horizon_min", "realized_return", "realized_class"]
VERIFIED_COLUMNS = [
    "stream",
    *KEY_COLUMNS,
    "predicted_class",
    "prob_up",
    "realized_return",
    "realized_class",
    "correct",
    "verified_at",
]
_BASELINE_FIELDS = [f"{b}_{part}" for b in BASELINES for part in ("class", "prob_up")]

DECISION_COLUMNS = [
    "now", "champion_version", "action", "codes", "reasons", "run_key", "n", "n_effective", "accuracy",
    "baseline_name", "baseline_accuracy", "cusum_accuracy", "cusum_baseline", "validated_reference",
    "cusum_validated", "alarm_threshold", "max_psi", "consecutive_rejections",
]  # fmt: skip
PNL_COLUMNS = [
    "stream", "symbol", "horizon_min", "net_bps", "gross_bps", "fees_bps", "n_trades", "turnover", "hit_rate",
    "exposure", "sharpe", "net_log_return", "n_long", "n_short", "n_flat",
]  # fmt: skip
_FLOAT_STATS = (
    "n_effective",
    "accuracy",
    "baseline_accuracy",
    "cusum_accuracy",
    "cusum_baseline",
    "validated_reference",
    "cusum_validated",
    "alarm_threshold",
    "max_psi",
)
Key = tuple[str, pd.Timestamp, int]


@dataclass(frozen=True)
class GateOutcome:
    """Result of a retrain: whether the candidate was promoted and, if so, its model version."""

    promoted: bool
    model_version: str | None = None
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplayHooks:
    """The caller's side of the loop (see the module docstring for the contract of each)."""

    ingest: Callable[[pd.Timestamp], object]
    verify: Callable[[pd.Timestamp], pd.DataFrame]
    predict: Callable[[pd.Timestamp], pd.DataFrame]
    predict_frozen: Callable[[pd.Timestamp], pd.DataFrame]
    retrain: Callable[[str, pd.Timestamp], GateOutcome]
    max_psi: Callable[[pd.Timestamp], float | None] | None = None
    # a version's validated accuracy at the policy horizon (its serving config's validated_accuracy)
    validated: Callable[[str], Mapping[str, float] | None] | None = None


@dataclass(frozen=True)
class ReplayClock:
    """Wall-clock instants ``start, start + step, ..., <= end`` (UTC)."""

    start: pd.Timestamp
    end: pd.Timestamp
    step: str = "1min"

    def __iter__(self) -> Iterator[pd.Timestamp]:
        start, end = utc_timestamp(self.start, "start"), utc_timestamp(self.end, "end")
        yield from pd.date_range(start, end, freq=self.step)

    def __len__(self) -> int:
        return len(
            pd.date_range(utc_timestamp(self.start, "start"), utc_timestamp(self.end, "end"), freq=self.step)
        )


@dataclass
class ReplayResult:
    """Everything the replay recorded (frames are in time order)."""

    decisions: pd.DataFrame
    retrains: pd.DataFrame
    timeline: pd.DataFrame
    verified: pd.DataFrame
    pnl: pd.DataFrame
    equity: pd.DataFrame

    @property
    def promotions(self) -> pd.DataFrame:
        """The retrains whose candidate was promoted."""
        return self.retrains[self.retrains["promoted"]].reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """Per stream: verified n, accuracy and total after-cost P&L in bps (summed over series)."""
        accuracy = self.verified.groupby("stream", sort=False)["correct"].agg(n="size", accuracy="mean")
        pnl = self.pnl.groupby("stream", sort=False)[["net_bps", "gross_bps", "fees_bps"]].sum()
        return accuracy.join(pnl, how="outer").reset_index()


class _Stream:
    """Pending predictions of one stream, matched to outcomes as they become known."""

    def __init__(self, name: str):
        self.name = name
        self.pending: dict[Key, dict] = {}
        self.seen: set[Key] = set()
        self.verified: list[dict] = []
        self.n = 0
        self.n_correct = 0

    def add(self, rows: list[dict], outcomes: dict[Key, tuple[float, int]], now: pd.Timestamp) -> list[dict]:
        matched = []
        for row in rows:
            key = _key(row)
            if key in self.seen:
                raise ValueError(f"{self.name} predictions repeat the key {key}")
            self.seen.add(key)
            self.pending[key] = row
            if key in outcomes:
                matched.append(self.resolve(key, outcomes[key], now))
        return matched

    def resolve(self, key: Key, outcome: tuple[float, int], now: pd.Timestamp) -> dict:
        row = self.pending.pop(key)
        realized_return, realized_class = outcome
        done = {
            **row,
            "stream": self.name,
            "realized_return": realized_return,
            "realized_class": realized_class,
        }
        done["correct"] = int(row["predicted_class"]) == realized_class
        done["verified_at"] = now
        for b in BASELINES:
            cls = row.get(f"{b}_class")
            done[f"{b}_correct"] = None if cls is None or pd.isna(cls) else int(cls) == realized_class
        self.verified.append(done)
        self.n += 1
        self.n_correct += int(done["correct"])
        return done


def _key(row: Mapping) -> Key:
    return (str(row["symbol"]), row["prediction_time"], int(row["horizon_min"]))


def _prediction_rows(frame: pd.DataFrame | None, source: str) -> list[dict]:
    """Prediction rows as dicts with normalized keys (row-wise: a step returns only a few rows)."""
    if frame is None or len(frame) == 0:
        return []
    require_columns(frame, [*KEY_COLUMNS, "predicted_class", "prob_up"], source)
    columns = [
        *KEY_COLUMNS,
        "predicted_class",
        "prob_up",
        *[c for c in _BASELINE_FIELDS if c in frame.columns],
    ]
    values = [frame[c].tolist() for c in columns]
    rows = [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]
    for i, row in enumerate(rows):
        stamp = row["prediction_time"]
        if not isinstance(stamp, pd.Timestamp) or stamp.tzinfo is None:
            raise LiveInputError(
                source, i, "prediction_time", f"must be a timezone-aware timestamp, got {stamp!r}"
            )
        horizon, cls = row["horizon_min"], row["predicted_class"]
        if pd.isna(horizon) or int(horizon) != horizon or horizon < 1:
            raise LiveInputError(
                source, i, "horizon_min", f"not a positive whole number of minutes: {horizon!r}"
            )
        if pd.isna(cls) or int(cls) != cls:
            raise LiveInputError(source, i, "predicted_class", f"not a class id: {cls!r}")
        row.update(
            symbol=str(row["symbol"]),
            prediction_time=stamp.tz_convert("UTC").as_unit("ns"),
            horizon_min=int(horizon),
            predicted_class=int(cls),
            prob_up=float(row["prob_up"]),
        )
    return rows


def _outcomes(frame: pd.DataFrame | None, now: pd.Timestamp) -> dict[Key, tuple[float, int]]:
    if frame is None or len(frame) == 0:
        return {}
    require_columns(frame, OUTCOME_COLUMNS, "verify(now) result")
    times = utc_ns(frame["prediction_time"], "prediction_time", "verify(now) result")
    horizons = frame["horizon_min"].astype("int64").to_numpy()
    known_at = times + pd.to_timedelta(horizons + 1, unit="min")
    early = (known_at > now).to_numpy()
    if early.any():
        i = int(np.flatnonzero(early)[0])
        raise ValueError(
            f"verify({now}) returned an outcome not known until {known_at.iloc[i]} "
            f"(row {i}: prediction_time={times.iloc[i]}, horizon_min={horizons[i]}): look-ahead"
        )
    return {
        (str(s), t, int(h)): (float(r), int(c))
        for s, t, h, r, c in zip(
            frame["symbol"], times, horizons, frame["realized_return"], frame["realized_class"], strict=True
        )
    }


def _window_frame(rows: Iterable[dict]) -> pd.DataFrame:
    rows = list(rows)
    columns = [*KEY_COLUMNS, "correct", *[f"{b}_correct" for b in BASELINES]]
    frame = pd.DataFrame({c: [r.get(c) for r in rows] for c in columns})
    frame["prediction_time"] = pd.to_datetime(frame["prediction_time"], utc=True).astype(
        "datetime64[ns, UTC]"
    )
    frame["horizon_min"] = frame["horizon_min"].astype("int64")
    for b in BASELINES:
        frame[f"{b}_correct"] = frame[f"{b}_correct"].astype("boolean")
    return frame


def _baseline_rows(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {s: [] for s in BASELINE_STREAMS}
    for row in rows:
        for b, stream in zip(BASELINES, BASELINE_STREAMS, strict=True):
            if row.get(f"{b}_correct") is not None:
                base = {k: row[k] for k in (*KEY_COLUMNS, "realized_return", "realized_class", "verified_at")}
                base.update(
                    stream=stream,
                    predicted_class=int(row[f"{b}_class"]),
                    prob_up=float(row[f"{b}_prob_up"]),
                    correct=bool(row[f"{b}_correct"]),
                )
                out[stream].append(base)
    return out


def _curve(periods: pd.DataFrame, stream: str, symbol: str, horizon: int, column: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "stream": stream,
            "symbol": symbol,
            "horizon_min": horizon,
            "prediction_time": periods["prediction_time"],
            "cum_net_return": periods[column],
        }
    )


def _pnl(
    verified: pd.DataFrame, fee_bps: float, threshold: float, interval: str = "1m"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, curves = [], []
    for stream in (ADAPTIVE, FROZEN):
        part = verified[verified["stream"] == stream]
        for (symbol, horizon), series in part.groupby(["symbol", "horizon_min"], sort=True):
            columns = ["prediction_time", "prob_up", "realized_return"]
            extra = [
                f"{b}_prob_up" for b in BASELINES if stream == ADAPTIVE and f"{b}_prob_up" in series.columns
            ]
            frame = series[columns + extra].astype({c: "float64" for c in extra})
            summary, periods = long_flat_short_pnl(
                frame, None, fee_bps, threshold, int(horizon), baseline_columns=extra, interval=interval
            )
            books = {stream: summary["strategy"]}
            if stream == ADAPTIVE:
                books[BUY_AND_HOLD] = summary["buy_and_hold"]
                books.update({f"baseline:{name}": m for name, m in summary["baselines"].items()})
                curves.append(_curve(periods, BUY_AND_HOLD, symbol, horizon, "buy_and_hold_cum_net_return"))
            curves.append(_curve(periods, stream, symbol, horizon, "cum_net_return"))
            rows += [{"stream": s, "symbol": symbol, "horizon_min": horizon, **m} for s, m in books.items()]
    pnl = pd.DataFrame(rows, columns=PNL_COLUMNS)
    equity_columns = ["stream", "symbol", "horizon_min", "prediction_time", "cum_net_return"]
    equity = (
        pd.concat(curves, ignore_index=True)[equity_columns]
        if curves
        else pd.DataFrame(columns=equity_columns)
    )
    return pnl, equity


def run_replay(
    steps: Iterable[pd.Timestamp],
    hooks: ReplayHooks,
    *,
    policy: RetrainPolicy | None = None,
    model_name: str = "champion",
    champion_version: str | None = None,
    fee_bps: float = 10.0,
    threshold: float = 0.0,
    run_key_symbol: str | None = None,
    serving: bool = True,
    initial_state: PolicyState | None = None,
) -> ReplayResult:
    """Drive the live loop over ``steps`` (strictly increasing UTC instants) with ``hooks``.

    ``champion_version`` is the adaptive system's initial model version (default: the version of its
    first prediction at ``policy.horizon``); the policy judges only the current champion's rows and
    switches to ``GateOutcome.model_version`` on promotion. ``serving=False``: nothing serves until a
    retrain is promoted (the first candidate was refused; the policy's "no champion" rule applies).
    ``initial_state``: the policy state at the start (e.g. the first champion's gate as the last
    retrain). ``fee_bps``/``threshold`` drive the P&L.
    """
    policy = policy or RetrainPolicy()
    state = initial_state or PolicyState()
    adaptive, frozen = _Stream(ADAPTIVE), _Stream(FROZEN)
    outcomes: dict[Key, tuple[float, int]] = {}
    window: deque[dict] = deque()
    decisions, retrains, timeline = [], [], []
    baseline_counts = {s: [0, 0] for s in BASELINE_STREAMS}
    previous: pd.Timestamp | None = None
    for raw in steps:
        now = utc_timestamp(raw, "step")
        if previous is not None and now <= previous:
            raise ValueError(f"replay steps must strictly increase: {now} after {previous}")
        previous = now
        hooks.ingest(now)
        new_outcomes = _outcomes(hooks.verify(now), now)
        fresh = {k: v for k, v in new_outcomes.items() if k not in outcomes}
        outcomes.update(fresh)
        matched = []
        for key, outcome in fresh.items():
            if key in adaptive.pending:
                matched.append(adaptive.resolve(key, outcome, now))
            if key in frozen.pending:
                frozen.resolve(key, outcome, now)
        window.extend(matched)
        _count_baselines(matched, baseline_counts)
        while window and window[0]["prediction_time"] < now - policy.chart_span:
            window.popleft()  # what the charts no longer see (summarize_window filters the same span)
        psi = hooks.max_psi(now) if hooks.max_psi is not None else None
        decision = evaluate(
            policy,
            _window_frame(window),
            now,
            state,
            psi,
            champion_version,
            serving=serving or champion_version is not None,
            validated=None
            if hooks.validated is None or champion_version is None
            else hooks.validated(champion_version),
        )
        key = run_key(decision, model_name=model_name, horizon=policy.horizon, now=now, symbol=run_key_symbol)
        decisions.append(
            {
                "now": now,
                "champion_version": champion_version,
                "action": decision.action,
                "codes": ",".join(decision.codes),
                "reasons": "; ".join(decision.reasons),
                "run_key": key,
                **{k: decision.stats.get(k) for k in DECISION_COLUMNS[6:]},
            }
        )
        if decision.action != "none":
            gate = hooks.retrain(decision.action, now)
            if gate.promoted and not gate.model_version:
                raise ValueError(f"retrain at {now} promoted a candidate without a model_version")
            retrains.append(
                {
                    "now": now,
                    "kind": decision.action,
                    "promoted": bool(gate.promoted),
                    "previous_version": champion_version,
                    "model_version": gate.model_version if gate.promoted else champion_version,
                    "run_key": key,
                    "details": json.dumps(dict(gate.details), sort_keys=True, default=str),
                }
            )
            state = state.after_retrain(now, gate.promoted)
            if gate.promoted:
                champion_version = str(gate.model_version)
        new_rows = _prediction_rows(hooks.predict(now), "predict(now) result")
        if champion_version is None:
            versions = [str(r["model_version"]) for r in new_rows if int(r["horizon_min"]) == policy.horizon]
            champion_version = versions[0] if versions else None
        early = adaptive.add(new_rows, outcomes, now)
        window.extend(early)
        _count_baselines(early, baseline_counts)
        frozen.add(_prediction_rows(hooks.predict_frozen(now), "predict_frozen(now) result"), outcomes, now)
        counts = {ADAPTIVE: (adaptive.n, adaptive.n_correct), FROZEN: (frozen.n, frozen.n_correct)}
        counts.update({name: (n, n_correct) for name, (n, n_correct) in baseline_counts.items()})
        for name, (n, n_correct) in counts.items():
            accuracy = n_correct / n if n else np.nan
            timeline.append(
                {"now": now, "stream": name, "n": n, "n_correct": n_correct, "accuracy": accuracy}
            )
    return _result(adaptive, frozen, decisions, retrains, timeline, fee_bps, threshold, policy.interval)


def _count_baselines(rows: list[dict], counts: dict[str, list[int]]) -> None:
    for stream, items in _baseline_rows(rows).items():
        counts[stream][0] += len(items)
        counts[stream][1] += sum(int(r["correct"]) for r in items)


def _result(
    adaptive: _Stream, frozen: _Stream, decisions, retrains, timeline, fee_bps, threshold, interval="1m"
) -> ReplayResult:
    baseline = _baseline_rows(adaptive.verified)
    baseline_columns = [f"{b}_prob_up" for b in BASELINES]
    rows = [
        *adaptive.verified,
        *frozen.verified,
        *[r for s in BASELINE_STREAMS for r in baseline[s]],
    ]
    verified = pd.DataFrame(rows, columns=[*VERIFIED_COLUMNS, *baseline_columns])
    verified["prediction_time"] = verified["prediction_time"].astype("datetime64[ns, UTC]")
    verified["verified_at"] = verified["verified_at"].astype("datetime64[ns, UTC]")
    verified["correct"] = verified["correct"].astype("bool")
    present = [c for c in baseline_columns if verified[c].notna().any()]
    verified = verified.drop(columns=[c for c in baseline_columns if c not in present])
    pnl, equity = _pnl(verified, fee_bps, threshold, interval)
    retrain_columns = ["now", "kind", "promoted", "previous_version", "model_version", "run_key", "details"]
    return ReplayResult(
        decisions=pd.DataFrame(decisions, columns=DECISION_COLUMNS).astype(
            dict.fromkeys(_FLOAT_STATS, "float64")
        ),
        retrains=pd.DataFrame(retrains, columns=retrain_columns).astype({"promoted": "bool"}),
        timeline=pd.DataFrame(timeline),
        verified=verified.sort_values(
            ["stream", "symbol", "horizon_min", "prediction_time"], kind="stable"
        ).reset_index(drop=True),
        pnl=pnl,
        equity=equity,
    )
