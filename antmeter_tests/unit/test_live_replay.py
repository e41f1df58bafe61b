"""Replay driver on a deterministic toy market whose regime flips from momentum to mean reversion.

The hooks are plain functions over a small in-memory world: a "model" predicts up when
``multiplier * last 1-min return > 0``; retraining fits the multiplier on outcomes known at that
time and a gate promotes the candidate only if it beats the champion on the most recent outcomes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from antmeter.live.policy import PolicyState, RetrainPolicy, evaluate
from antmeter.live.replay import GateOutcome, ReplayClock, ReplayHooks, run_replay
from antmeter.live.verification import BASELINES, add_baselines, verify_predictions

T0 = pd.Timestamp("2024-03-01 00:00", tz="UTC")
ONE = pd.Timedelta(minutes=1)
N, FLIP = 120, 50
# a toy two-hour world: a bold alternative (accuracy 0.22) and a short in-control run length
POLICY = RetrainPolicy(
    horizon=1, window_candles=30, min_samples=24, cooldown_candles=12, accuracy_threshold=0.52, shift=0.3,
    arl_effective=400,
)  # fmt: skip


class ToyWorld:
    """A 1-minute market: 90% momentum before FLIP, 90% mean reversion after; moves of 20 bps."""

    def __init__(self, seed: int = 11, gate_rejects: bool = False, n: int = N):
        rng = np.random.default_rng(seed)
        signs = np.ones(n)
        for i in range(1, n):
            stay = rng.random() < 0.9
            signs[i] = signs[i - 1] * (1 if stay == (i < FLIP) else -1)
        self.returns = 0.002 * signs
        self.returns[0] = 0.0
        close = 100 * np.exp(np.cumsum(self.returns))
        opens = np.concatenate([[100.0], close[:-1]])
        self.candles = pd.DataFrame(
            {
                "symbol": "BTCUSDT",
                "open_time": pd.date_range(T0, periods=n, freq="min"),
                "open": opens,
                "high": np.maximum(opens, close),
                "low": np.minimum(opens, close),
                "close": close,
                "volume": 1.0,
            }
        )
        # baselines depend only on candles t - h and t, so they can be computed once for every time up front
        times = pd.DataFrame(
            {"symbol": "BTCUSDT", "prediction_time": self.candles["open_time"], "horizon_min": 1}
        )
        self.baselines = add_baselines(times, candles=self.candles, class_rates=0.5).set_index(
            "prediction_time"
        )
        self.latest = -1
        self.multiplier, self.version_no = 1, 1
        self.pending = pd.DataFrame()
        self.gate_rejects = gate_rejects

    def ingest(self, now: pd.Timestamp) -> None:
        self.latest = (now - T0) // ONE - 1  # candle i has closed at T0 + i + 1 min

    def _predict(self, multiplier: int, model_name: str, version: str) -> pd.DataFrame:
        i = self.latest
        if i < 1:
            return pd.DataFrame()
        up = multiplier * self.returns[i] > 0
        frame = pd.DataFrame(
            {
                "symbol": ["BTCUSDT"],
                "prediction_time": pd.DatetimeIndex([T0 + i * ONE]),
                "horizon_min": 1,
                "model_name": model_name,
                "model_version": version,
                "prob_down": 0.2 if up else 0.8,
                "prob_flat": np.nan,
                "prob_up": 0.8 if up else 0.2,
                "predicted_class": int(up),
            }
        )
        self.pending = pd.concat([self.pending, frame], ignore_index=True)
        return frame

    def predict(self, now: pd.Timestamp) -> pd.DataFrame:
        frame = self._predict(self.multiplier, "toy", f"v{self.version_no}")
        if frame.empty:
            return frame
        base = self.baselines.loc[
            frame["prediction_time"], [c for c in self.baselines if c.startswith(BASELINES)]
        ]
        return pd.concat([frame, base.reset_index(drop=True)], axis=1)

    def predict_frozen(self, now: pd.Timestamp) -> pd.DataFrame:
        return self._predict(1, "toy-frozen", "v1")

    def verify(self, now: pd.Timestamp) -> pd.DataFrame:
        if self.pending.empty or (now - T0) // ONE % 3:
            return pd.DataFrame()  # the verification job runs every 3 minutes
        # candles beyond ``now`` are passed on purpose: verify_predictions must ignore what has not closed
        first = (self.pending["prediction_time"].min() - T0) // ONE
        done = verify_predictions(self.pending, self.candles.iloc[first : self.latest + 3], now)
        verified = set(zip(done["model_name"], done["prediction_time"], strict=True))
        still = [
            (m, t) not in verified
            for m, t in zip(self.pending["model_name"], self.pending["prediction_time"], strict=True)
        ]
        self.pending = self.pending[still].reset_index(drop=True)
        return done

    def _accuracy(self, multiplier: int, rows: np.ndarray) -> float:
        return float(np.mean((multiplier * self.returns[rows] > 0) == (self.returns[rows + 1] > 0)))

    def retrain(self, kind: str, now: pd.Timestamp) -> GateOutcome:
        known = np.arange(1, self.latest)  # predictions whose 1-min outcome (candle j + 1) has closed
        train, holdout = known[-20:-8], known[-8:]
        candidate = max((self.multiplier, -self.multiplier), key=lambda m: self._accuracy(m, train))
        scores = {
            "candidate": self._accuracy(candidate, holdout),
            "champion": self._accuracy(self.multiplier, holdout),
        }
        if self.gate_rejects or scores["candidate"] <= scores["champion"]:
            return GateOutcome(False, None, scores)
        self.multiplier, self.version_no = candidate, self.version_no + 1
        return GateOutcome(True, f"v{self.version_no}", {**scores, "kind": kind})

    def hooks(self) -> ReplayHooks:
        return ReplayHooks(self.ingest, self.verify, self.predict, self.predict_frozen, self.retrain)


def replay(world: ToyWorld):
    clock = ReplayClock(T0 + 2 * ONE, T0 + len(world.candles) * ONE)
    return run_replay(clock, world.hooks(), policy=POLICY, model_name="toy", fee_bps=10.0)


@pytest.fixture(scope="module")
def result():
    return replay(ToyWorld())


def test_one_retrain_after_the_flip_is_promoted(result):
    assert len(result.decisions) == N - 1
    retrains = result.retrains
    assert len(retrains) == 1, retrains
    first = retrains.iloc[0]
    assert first["kind"] == "incremental" and first["promoted"] and first["model_version"] == "v2"
    assert T0 + FLIP * ONE < first["now"] <= T0 + (FLIP + POLICY.window_candles) * ONE
    decision = result.decisions.set_index("now").loc[first["now"]]
    assert "accuracy_below_threshold" in decision["codes"] and decision["run_key"] == first["run_key"]
    before = result.decisions[result.decisions["now"] <= T0 + FLIP * ONE]
    assert (before["action"] == "none").all()
    after = result.decisions[result.decisions["now"] > first["now"]]
    assert (after["champion_version"] == "v2").all() and (after["action"] == "none").all()
    assert len(result.promotions) == 1


def test_adaptive_beats_frozen_champion_after_the_flip(result):
    promoted_at = result.retrains["now"].iloc[0]
    late = result.verified[result.verified["prediction_time"] > promoted_at]
    accuracy = late.groupby("stream")["correct"].mean()
    assert accuracy["adaptive"] > 0.8 and accuracy["frozen"] < 0.2
    early = result.verified[result.verified["prediction_time"] < T0 + FLIP * ONE]
    early_accuracy = early.groupby("stream")["correct"].mean()
    assert early_accuracy["adaptive"] == early_accuracy["frozen"] > 0.8  # same model before the flip
    assert (
        early_accuracy["baseline:persistence"] == early_accuracy["adaptive"]
    )  # toy model == persistence at h=1

    pnl = result.pnl.set_index("stream")["net_bps"]
    assert set(pnl.index) == {
        "adaptive",
        "frozen",
        "buy_and_hold",
        "baseline:majority",
        "baseline:persistence",
    }
    assert pnl["adaptive"] > pnl["frozen"]
    assert pnl["baseline:majority"] == 0.0  # P(up) = 0.5 never trades
    summary = result.summary().set_index("stream")
    assert summary.loc["adaptive", "accuracy"] > summary.loc["frozen", "accuracy"]
    curve = result.equity[result.equity["stream"] == "adaptive"]["cum_net_return"]
    assert curve.iloc[-1] * 1e4 == pytest.approx(pnl["adaptive"])


def test_timeline_accumulates(result):
    adaptive = result.timeline[result.timeline["stream"] == "adaptive"]
    assert adaptive["n"].is_monotonic_increasing
    assert adaptive["n"].iloc[-1] == (result.verified["stream"] == "adaptive").sum()
    assert adaptive["n_correct"].iloc[-1] == result.verified.query("stream == 'adaptive'")["correct"].sum()


def test_replay_is_deterministic_and_causal(result):
    # a replay stopped early (before the retrain) makes exactly the decisions of the full run up to then
    stop = T0 + (FLIP + 10) * ONE
    short = run_replay(ReplayClock(T0 + 2 * ONE, stop), ToyWorld().hooks(), policy=POLICY, model_name="toy")
    prefix = result.decisions[result.decisions["now"] <= stop].reset_index(drop=True)
    pd.testing.assert_frame_equal(short.decisions, prefix)
    timeline = result.timeline[result.timeline["now"] <= stop].reset_index(drop=True)
    pd.testing.assert_frame_equal(short.timeline, timeline)


def test_rejected_retrains_cool_down_then_escalate():
    out = replay(ToyWorld(gate_rejects=True, n=130))
    kinds = out.retrains["kind"].tolist()
    assert kinds[:4] == ["incremental", "incremental", "incremental", "full"]
    assert (out.retrains["now"].diff().dropna() >= pd.Timedelta(minutes=POLICY.cooldown_candles)).all()
    assert out.promotions.empty and (out.decisions["champion_version"].dropna() == "v1").all()


def test_look_ahead_outcome_is_refused():
    world = ToyWorld()

    def leaky_verify(now: pd.Timestamp) -> pd.DataFrame:
        world.verify(now)
        # the newest candle (now - 1 min) is the prediction time; its 1-min outcome is known only at now + 1 min
        return pd.DataFrame(
            {"symbol": ["BTCUSDT"], "prediction_time": pd.DatetimeIndex([now - ONE]), "horizon_min": 1,
             "realized_return": 0.001, "realized_class": 1}
        )  # fmt: skip

    hooks = ReplayHooks(world.ingest, leaky_verify, world.predict, world.predict_frozen, world.retrain)
    with pytest.raises(ValueError, match="look-ahead"):
        run_replay(ReplayClock(T0 + 2 * ONE, T0 + 10 * ONE), hooks, policy=POLICY)


def test_replay_decides_like_a_sensor_calling_evaluate(result):
    """Re-deciding from the replay's own verified rows with policy.evaluate gives the recorded decision."""
    verified = result.verified
    rows = verified[verified["stream"] == "adaptive"]
    for b in ("persistence", "majority"):
        base = verified[verified["stream"] == f"baseline:{b}"][["prediction_time", "correct"]]
        rows = rows.merge(base.rename(columns={"correct": f"{b}_correct"}), on="prediction_time", how="left")
        rows[f"{b}_correct"] = rows[f"{b}_correct"].astype("boolean")
    state = PolicyState()
    for record in result.decisions.itertuples():
        if record.champion_version is None or pd.isna(record.champion_version):
            continue
        known = rows[rows["verified_at"] <= record.now]
        decision = evaluate(POLICY, known, record.now, state, None, record.champion_version)
        assert decision.action == record.action and ",".join(decision.codes) == record.codes, record.now
        if decision.action != "none":
            promoted = bool(result.retrains.set_index("now").loc[record.now, "promoted"])
            state = state.after_retrain(record.now, promoted)
