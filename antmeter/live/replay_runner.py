"""Replay runner: the whole live loop over a historical window in simulated time, with the real pieces.

:class:`ReplayRunner` drives :func:`antmeter.live.replay.run_replay` with hooks built from the production
code, so a replay decides, retrains and promotes exactly as the deployment would:

* **Start.** The first champion is trained by :func:`antmeter.learn.recipe.train_candidate` (full
  walk-forward recipe) only on candles that have closed by the window's start, and gated by
  :func:`antmeter.registry.promotion.gate_candidate` against the naive baselines (``bootstrap`` row of
  ``gates``). When that gate refuses it, nothing serves (no predictions, flat P&L, as in the
  deployment) and the policy's "no champion" rule asks for a full retrain once a day on newer data.
* **Every step** ``now`` (hourly by default): *ingest* makes the candles with ``open_time + 1 min <= now``
  visible and computes features on them (:func:`antmeter.features.pipeline.compute_features`, the training
  code, over a tail long enough for every feature's warm-up); *verify* runs
  :func:`antmeter.live.verification.verify_predictions` at ``now`` on the still unverified predictions;
  *max_psi* is :func:`antmeter.live.drift.feature_drift` of the last ``drift_window`` of features against
  the champion's last ``drift_reference_days`` of training features (as the verification report does);
  the driver then decides with :func:`antmeter.live.policy.evaluate`, the very function behind the
  sensor; *retrain* (on ``incremental``: fine-tune the champion with ``train_candidate(base_bundle=...)``;
  on ``full``: the full recipe) trains on the newest ``training_days`` of closed candles and gates the
  candidate with ``gate_candidate`` on its holdout rows, the same call the Dagster gate makes; *predict*
  scores every new window with :func:`antmeter.live.inference.predict_symbol` through
  :class:`antmeter.learn.bundle.ServingModel` (INT8 ONNX), for the adaptive champion (with the majority and
  persistence baselines of :func:`antmeter.live.verification.add_baselines`) and for the never-retrained
  first champion.
* **No look-ahead.** A candidate promoted at step ``now`` was trained on labels known at ``now``, which
  cover prediction times of the hour just ended; so the predictions for that hour are made by the
  champion that was in force during it, and the promoted model serves from the next step on (as in the
  deployment, where those predictions were made minute by minute before the retrain).
* **Registry.** No MLflow and no live aliases: bundles live in the namespace directory
  ``<root>/replay/<name>/`` (``candidates/v<N>/bundle``, ``champion.json``, ``events.jsonl``), see
  :class:`ReplayRegistry`.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import takewhile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from antmeter.features.labels import LabelConfig, compute_labels
from antmeter.features.pipeline import (
    FeatureConfig,
    compute_features,
    model_feature_columns,
    required_warmup_candles,
)
from antmeter.learn.bundle import SERVING_FILE, ServingModel
from antmeter.learn.datasets import TASKS, DatasetSpec, SampleSet, build_samples
from antmeter.learn.recipe import CandidateResult, RecipeConfig, train_candidate
from antmeter.live import drift
from antmeter.live._frames import utc_timestamp
from antmeter.live.inference import predict_symbol
from antmeter.live.policy import PolicyState, RetrainPolicy
from antmeter.live.replay import (
    OUTCOME_COLUMNS,
    GateOutcome,
    ReplayClock,
    ReplayHooks,
    ReplayResult,
    run_replay,
)
from antmeter.live.verification import KEY_COLUMNS, add_baselines, verify_predictions
from antmeter.market.candles import interval_timedelta, validate_candles
from antmeter.registry.promotion import GateConfig, gate_candidate

Progress = Callable[[str], None]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
GATE_COLUMNS = [
    "at", "kind", "version", "promoted", "candidate_score", "champion_version", "champion_score",
    "baseline_scores", "problems", "summary", "trained_until", "samples", "seconds",
]  # fmt: skip


@dataclass(frozen=True)
class ReplayRunConfig:
    """What the replay trains, how it decides and how it trades (see the module docstring).

    ``name`` names the registry namespace ``replay/<name>``. ``recipe`` is the training recipe of the
    first champion and of every retrain (its ``preset`` gives the sample stride unless ``stride`` is
    set); ``policy`` and ``gate`` are the retraining policy and promotion gate; ``features``/``labels``
    the feature and label settings (no sentiment: a replay has no news); ``interval`` the candles'
    interval (the policy's, the gate's and the labels' too); ``window`` the model input length in
    candles; ``step`` the time between steps. Retrains train on the newest ``training_days``
    of closed candles, the first champion on ``initial_training_days`` (None: all history before the
    start). ``fee_bps`` (per side) and ``threshold`` drive the long/flat/short P&L. With ``drift`` the
    policy sees the max PSI of the last ``drift_window_candles`` of features against the champion's last
    ``drift_reference_days`` of training candles. ``serve_refused_first``: a research switch that lets a
    first candidate the gate refused serve anyway (to study the loop's mechanics on a window too short
    to train a model that beats the baselines); by default nothing serves then, as in the deployment.
    """

    name: str
    recipe: RecipeConfig
    policy: RetrainPolicy = field(default_factory=RetrainPolicy)
    gate: GateConfig = field(default_factory=GateConfig)
    features: FeatureConfig = field(default_factory=lambda: FeatureConfig(include_sentiment=False))
    labels: LabelConfig = field(default_factory=LabelConfig)
    window: int = 60
    stride: int | None = None
    task: str = "binary"
    step: str = "1h"
    training_days: float = 14.0
    initial_training_days: float | None = None
    fee_bps: float = 10.0
    threshold: float = 0.0
    drift: bool = True
    drift_window_candles: int = 6 * 60
    drift_reference_days: float = 3.0
    serve_refused_first: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"ReplayRunConfig.name {self.name!r}: use 1-64 letters, digits, '_', '.' or '-'")
        if self.features.include_sentiment:
            raise ValueError("ReplayRunConfig.features: the replay has no news; set include_sentiment=False")
        if self.task not in TASKS:
            raise ValueError(f"ReplayRunConfig.task must be one of {sorted(TASKS)}, got {self.task!r}")
        if self.task == "three_class" and self.labels.flat_band_vol_mult is not None:
            raise ValueError(
                "ReplayRunConfig.labels: verification needs a fixed flat band (flat_band_vol_mult=None)"
            )
        for name, horizon in (
            ("policy.horizon", self.policy.horizon),
            ("gate.horizon", self.gate.horizon),
            ("recipe.primary_horizon", self.recipe.primary_horizon),
        ):
            if horizon not in self.labels.horizons:
                raise ValueError(
                    f"ReplayRunConfig.{name} {horizon} is not among labels.horizons {self.labels.horizons}"
                )
        checks = {
            "window": self.window >= 1,
            "stride": self.stride is None or self.stride >= 1,
            "training_days": self.training_days > 0,
            "initial_training_days": self.initial_training_days is None or self.initial_training_days > 0,
            "fee_bps": math.isfinite(self.fee_bps) and self.fee_bps >= 0,
            "drift_window_candles": self.drift_window_candles >= 1,
            "drift_reference_days": self.drift_reference_days > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ReplayRunConfig.{name} out of range: {getattr(self, name)!r}")
        for name, interval in (
            ("gate.interval", self.gate.interval),
            ("labels.interval", self.labels.interval),
        ):
            if interval != self.interval:
                raise ValueError(
                    f"ReplayRunConfig.{name} {interval!r} must be the policy's interval {self.interval!r}"
                )
        if pd.Timedelta(self.step) < self.candle:
            raise ValueError(
                f"ReplayRunConfig.step must be at least one candle ({self.interval}), got {self.step!r}"
            )

    @property
    def interval(self) -> str:
        """The candles' interval: the retrain policy's (windows, horizons and spans count its candles)."""
        return self.policy.interval

    @property
    def candle(self) -> pd.Timedelta:
        return interval_timedelta(self.interval)

    def dataset_spec(self) -> DatasetSpec:
        """The sample spec of every training run: the config's stride or else the preset's."""
        from antmeter.learn.models import load_preset

        stride = self.stride or int(
            load_preset(self.recipe.preset, self.recipe.model_type)["dataset"].get("stride", 1)
        )
        return DatasetSpec(
            window=self.window,
            stride=stride,
            horizons=self.labels.horizons,
            task=self.task,
            interval=self.interval,
        )


class ReplayRegistry:
    """Candidate and champion bundles of one replay under ``<root>/replay/<name>/``.

    ``candidates/v<N>/`` is version N's training directory (bundle in ``bundle/``), ``champion.json``
    names the current champion and ``events.jsonl`` holds one JSON line per gate decision. It never
    talks to MLflow, so no live alias can move. A namespace that already holds versions is refused.
    """

    def __init__(self, root: str | os.PathLike[str], name: str):
        self.directory = Path(root) / "replay" / name
        if (self.directory / "candidates").exists() and any((self.directory / "candidates").iterdir()):
            raise FileExistsError(
                f"replay namespace {self.directory} already holds candidates; use a new name"
            )
        (self.directory / "candidates").mkdir(parents=True, exist_ok=True)
        self.versions: list[str] = []

    def new_version(self) -> tuple[str, Path]:
        """The next version number and its (new, empty) training directory."""
        version = str(len(self.versions) + 1)
        self.versions.append(version)
        work = self.directory / "candidates" / f"v{version}"
        work.mkdir(parents=True)
        return version, work

    def bundle(self, version: str) -> Path:
        return self.directory / "candidates" / f"v{version}" / "bundle"

    def record(self, event: Mapping[str, Any]) -> None:
        """Append one gate event to ``events.jsonl``."""
        with (self.directory / "events.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(event), default=str, sort_keys=True) + "\n")

    def promote(self, version: str, at: pd.Timestamp) -> None:
        """Point ``champion.json`` at ``version`` (written to a temporary file and renamed)."""
        payload = json.dumps(
            {"version": version, "bundle": str(self.bundle(version)), "promoted_at": str(at)}
        )
        with tempfile.NamedTemporaryFile("w", dir=self.directory, suffix=".json", delete=False) as fh:
            fh.write(payload)
        os.replace(fh.name, self.directory / "champion.json")

    def champion(self) -> str | None:
        """The current champion's version, or None before the first promotion."""
        path = self.directory / "champion.json"
        return json.loads(path.read_text())["version"] if path.exists() else None


@dataclass
class _Served:
    """A model in service: its version, bundle, loaded ONNX model and drift reference features."""

    version: str
    bundle: Path
    model: ServingModel
    reference: pd.DataFrame | None


@dataclass
class ReplayRunResult:
    """The driver's record (:class:`~antmeter.live.replay.ReplayResult`) plus every gate decision."""

    replay: ReplayResult
    gates: pd.DataFrame
    namespace: Path
    primary_horizon: int
    completed_until: pd.Timestamp

    def accuracy(self, horizon: int | None = None) -> pd.DataFrame:
        """Verified n and accuracy per stream at ``horizon`` (default: the primary horizon)."""
        h = self.primary_horizon if horizon is None else horizon
        rows = self.replay.verified[self.replay.verified["horizon_min"] == h]
        return rows.groupby("stream", sort=False)["correct"].agg(n="size", accuracy="mean").reset_index()

    def daily_accuracy(self, horizon: int | None = None) -> pd.DataFrame:
        """Accuracy per stream and UTC day of prediction time at ``horizon`` (rows: day, columns: streams)."""
        h = self.primary_horizon if horizon is None else horizon
        rows = self.replay.verified[self.replay.verified["horizon_min"] == h]
        day = rows["prediction_time"].dt.floor("D").dt.strftime("%Y-%m-%d")
        return rows.assign(day=day).pivot_table(
            index="day", columns="stream", values="correct", aggfunc="mean"
        )

    def pnl(self, horizon: int | None = None) -> pd.DataFrame:
        """After-fee P&L per stream at ``horizon``, summed over symbols (bps), with trades and hit rate."""
        h = self.primary_horizon if horizon is None else horizon
        rows = self.replay.pnl[self.replay.pnl["horizon_min"] == h]
        return (
            rows.groupby("stream", sort=False)
            .agg(
                net_bps=("net_bps", "sum"),
                gross_bps=("gross_bps", "sum"),
                fees_bps=("fees_bps", "sum"),
                n_trades=("n_trades", "sum"),
                hit_rate=("hit_rate", "mean"),
            )
            .reset_index()
        )

    def daily_pnl(self, horizon: int | None = None) -> pd.DataFrame:
        """Cumulative after-fee return (bps, summed over symbols) at the end of each UTC day, per stream."""
        h = self.primary_horizon if horizon is None else horizon
        curves = self.replay.equity[self.replay.equity["horizon_min"] == h]
        day = curves["prediction_time"].dt.floor("D").dt.strftime("%Y-%m-%d")
        last = curves.assign(day=day).groupby(["stream", "symbol", "day"])["cum_net_return"].last()
        wide = last.unstack(["stream", "symbol"]).sort_index().ffill().fillna(0.0)
        return (wide.T.groupby(level="stream").sum().T * 1e4).round(2)


class ReplayRunner:
    """Run the live loop over ``[start, end]`` on the given candles (see the module docstring)."""

    def __init__(
        self,
        config: ReplayRunConfig,
        candles: Mapping[str, pd.DataFrame],
        root: str | os.PathLike[str],
        progress: Progress = print,
    ):
        if not candles:
            raise ValueError("ReplayRunner needs candles of at least one symbol")
        self.config = config
        self.symbols = tuple(sorted(candles))
        self.candles = {
            s: validate_candles(candles[s], f"candles[{s}]", config.interval) for s in self.symbols
        }
        self._open_ns = {s: pd.DatetimeIndex(self.candles[s]["open_time"]).asi8 for s in self.symbols}
        self.registry = ReplayRegistry(root, config.name)
        self.progress = progress
        self.spec = config.dataset_spec()
        self.columns = model_feature_columns(config.features)
        self.candle = config.candle
        self.warmup = (required_warmup_candles(config.features) + config.window + 5) * self.candle
        self.model_name = f"replay/{config.name}/{config.recipe.model_type}"
        self.frozen_name = f"{self.model_name}@frozen"
        self._gates: list[dict[str, Any]] = []
        self._pending = pd.DataFrame()
        self._after: dict[str, pd.Timestamp] = {}
        self._features: dict[str, pd.DataFrame] = {}
        self.champion: _Served | None = None
        self.frozen: _Served | None = None
        self._promoted: _Served | None = None
        self._started = False

    # ------------------------------------------------------------------ data as known at a time

    def known_candles(
        self, symbol: str, now: pd.Timestamp, since: pd.Timestamp | None = None
    ) -> pd.DataFrame:
        """Candles of ``symbol`` closed by ``now`` (``open_time + candle <= now``), opened at or after ``since``."""
        times = self._open_ns[symbol]
        hi = int(np.searchsorted(times, (now - self.candle).value, side="right"))
        lo = 0 if since is None else int(np.searchsorted(times, since.value, side="left"))
        return self.candles[symbol].iloc[lo:hi].reset_index(drop=True)

    def samples_at(self, now: pd.Timestamp, days: float | None) -> SampleSet:
        """Training samples from the candles closed by ``now`` whose windows start in the last ``days`` days
        (all history when None): features with their warm-up before, labels only where known by ``now``."""
        since = None if days is None else now - pd.Timedelta(days=days)
        frames = {}
        for symbol in self.symbols:
            candles = self.known_candles(symbol, now, None if since is None else since - self.warmup)
            frame = self._features_of(candles).merge(
                compute_labels(candles, self.config.labels), on="open_time"
            )
            if since is not None:
                frame = frame[frame["open_time"] >= since].reset_index(drop=True)
            frames[symbol] = frame
        return build_samples(frames, self.columns, self.spec)

    def _validated(self, version: str) -> dict | None:
        """Version ``version``'s validated accuracy at the policy horizon (its serving config), as the
        verification report passes it to the policy."""
        config = json.loads((self.registry.bundle(version) / SERVING_FILE).read_text())
        return (config.get("validated_accuracy") or {}).get(str(self.config.policy.horizon))

    def _reference_features(self, trained_at: pd.Timestamp) -> pd.DataFrame | None:
        """Features of the last ``drift_reference_days`` of candles a model was trained with (symbols pooled)."""
        if not self.config.drift:
            return None
        since = trained_at - pd.Timedelta(days=self.config.drift_reference_days)
        parts = []
        for symbol in self.symbols:
            frame = self._features_of(self.known_candles(symbol, trained_at, since - self.warmup))
            parts.append(frame[frame["open_time"] >= since])
        return pd.concat(parts, ignore_index=True)

    # ------------------------------------------------------------------ training and the gate

    def _train_and_gate(
        self, kind: str, now: pd.Timestamp, days: float | None
    ) -> tuple[dict[str, Any], _Served]:
        started = time.monotonic()
        samples = self.samples_at(now, days)
        version, work = self.registry.new_version()
        base = self.champion.bundle if kind == "incremental" and self.champion is not None else None
        self.progress(f"[{now}] {kind} training of v{version} on {len(samples)} samples")
        result: CandidateResult = train_candidate(
            samples,
            self.config.recipe,
            work,
            progress=lambda m: self.progress(f"  {m}"),
            base_bundle=base,
            extra_serving={"replay": self.config.name, "trained_at": str(now)},
        )
        champion_bundle = None if self.champion is None else self.champion.bundle
        decision = gate_candidate(
            result.bundle_dir,
            champion_bundle,
            samples,
            result.holdout_indices,
            self.config.gate,
            result.holdout_baseline_proba,
            extra_problems=result.parity_problems,
        )
        event = {
            "at": now,
            "kind": "bootstrap" if self.champion is None else kind,
            "version": version,
            "promoted": decision.promote,
            "candidate_score": decision.candidate_score,
            "champion_version": None if self.champion is None else self.champion.version,
            "champion_score": decision.champion_score,
            "baseline_scores": dict(decision.baseline_scores),
            "problems": list(result.parity_problems),
            "summary": decision.summary,
            "trained_until": result.trained_until,
            "samples": len(samples),
            "seconds": round(time.monotonic() - started, 2),
        }
        self._gates.append(event)
        self.registry.record(event)
        self.progress(f"[{now}] v{version}: {decision.summary}")
        served = _Served(
            version, result.bundle_dir, ServingModel.load(result.bundle_dir), self._reference_features(now)
        )
        return event, served

    def _retrain(self, kind: str, now: pd.Timestamp) -> GateOutcome:
        event, served = self._train_and_gate(kind, now, self.config.training_days)
        if event["promoted"]:
            self.registry.promote(served.version, now)
            self._promoted = served  # serves from the next step (see "No look-ahead")
        details = {
            k: event[k] for k in ("candidate_score", "champion_score", "summary", "seconds", "samples")
        }
        return GateOutcome(bool(event["promoted"]), served.version, details)

    # ------------------------------------------------------------------ hooks

    def _ingest(self, now: pd.Timestamp) -> None:
        span = max(self.config.drift_window_candles * self.candle, now - min(self._after.values()))
        since = now - span - self.warmup
        self._features = {s: self._features_of(self.known_candles(s, now, since)) for s in self.symbols}

    def _features_of(self, candles: pd.DataFrame) -> pd.DataFrame:
        return compute_features(candles, self.config.features, interval=self.config.interval)

    def _verify(self, now: pd.Timestamp) -> pd.DataFrame:
        if self._pending.empty:
            return pd.DataFrame(columns=OUTCOME_COLUMNS)
        oldest = self._pending["prediction_time"].min()
        candles = {s: self.known_candles(s, now, oldest) for s in self.symbols}
        rows = verify_predictions(
            self._pending,
            candles,
            now,
            task=self.config.task,
            flat_band_bps=self.config.labels.flat_band_bps if self.config.task != "binary" else None,
            interval=self.config.interval,
        )
        if len(rows):
            done = pd.MultiIndex.from_frame(rows[KEY_COLUMNS])
            keep = ~pd.MultiIndex.from_frame(self._pending[KEY_COLUMNS]).isin(done)
            self._pending = self._pending[keep].reset_index(drop=True)
        return rows[OUTCOME_COLUMNS]

    def _max_psi(self, now: pd.Timestamp) -> float | None:
        if self.champion is None or self.champion.reference is None:
            return None
        since = now - self.config.drift_window_candles * self.candle
        current = pd.concat([f[f["open_time"] >= since] for f in self._features.values()], ignore_index=True)
        columns = drift.psi_eligible([c for c in self.columns if c in current.columns])
        return drift.max_psi(drift.feature_drift(self.champion.reference, current, columns))

    def _class_rates(self) -> dict[tuple[str, int], list[float]]:
        rates = self.champion.model.config.get("class_rates") or {}
        return {(s, int(h)): r for s in self.symbols for h, r in rates.items()}

    def _predict(self, now: pd.Timestamp) -> pd.DataFrame:
        frames = []
        for symbol in self.symbols if self.champion is not None else ():
            rows = predict_symbol(
                self.champion.model,
                self._features[symbol],
                symbol,
                self.model_name,
                self.champion.version,
                self._after[symbol],
                created_at=now,
            )
            if len(rows):
                history = self.known_candles(
                    symbol,
                    now,
                    rows["prediction_time"].min() - (max(self.champion.model.horizons) + 1) * self.candle,
                )
                frames.append(
                    add_baselines(
                        rows,
                        candles={symbol: history},
                        class_rates=self._class_rates(),
                        task=self.config.task,
                        flat_band_bps=self._flat_band(),
                        interval=self.config.interval,
                    )
                )
        predictions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if len(predictions):
            self._pending = pd.concat(
                [self._pending, predictions[[*KEY_COLUMNS, "predicted_class"]]], ignore_index=True
            )
        return predictions

    def _predict_frozen(self, now: pd.Timestamp) -> pd.DataFrame:
        frames = []
        for symbol in self.symbols if self.frozen is not None else ():
            rows = predict_symbol(
                self.frozen.model,
                self._features[symbol],
                symbol,
                self.frozen_name,
                self.frozen.version,
                self._after[symbol],
                created_at=now,
            )
            if len(rows):
                frames.append(rows)
        # both streams predicted the same new windows; move on and swap in a champion promoted this step
        for symbol in self.symbols:
            self._after[symbol] = max(self._after[symbol], self._features[symbol]["open_time"].max())
        if self._promoted is not None:
            self.champion, self._promoted = self._promoted, None
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _flat_band(self) -> float | None:
        return None if self.config.task == "binary" else self.config.labels.flat_band_bps

    # ------------------------------------------------------------------ the run

    def run(
        self, start: pd.Timestamp | str, end: pd.Timestamp | str, max_seconds: float | None = None
    ) -> ReplayRunResult:
        """Train the first champion on what closed before ``start``, then replay predictions for windows
        ending at ``start`` or later, stepping ``config.step`` until ``end``.

        With ``max_seconds`` no step starts once that much wall time has passed since the call; the
        result's ``completed_until`` says how far the replay got.
        """
        started = time.monotonic()
        start, end = utc_timestamp(start, "start"), utc_timestamp(end, "end")
        if end <= start:
            raise ValueError(f"replay end {end} must be after start {start}")
        if self._started:
            raise RuntimeError(
                "a ReplayRunner runs once; make a new one (with a new name) for another replay"
            )
        self._started = True
        event, served = self._train_and_gate("full", start, self.config.initial_training_days)
        serving = bool(event["promoted"]) or self.config.serve_refused_first
        if serving:
            self.registry.promote(served.version, start)
            self.champion = self.frozen = served
        if not event["promoted"]:
            self.progress(
                f"the first candidate v{served.version} did not pass the gate: "
                + ("it serves anyway (serve_refused_first)" if serving else "nothing serves")
            )
        self._after = dict.fromkeys(self.symbols, start - self.candle)
        hooks = ReplayHooks(
            ingest=self._ingest,
            verify=self._verify,
            predict=self._predict,
            predict_frozen=self._predict_frozen,
            retrain=self._retrain,
            max_psi=self._max_psi if self.config.drift else None,
            validated=self._validated,
        )
        clock = ReplayClock(start + pd.Timedelta(self.config.step), end, self.config.step)
        self.progress(
            f"replay {self.config.name}: {len(clock)} steps of {self.config.step} from {start} to {end}"
        )
        steps = takewhile(lambda _: max_seconds is None or time.monotonic() - started < max_seconds, clock)
        replay = run_replay(
            steps,
            hooks,
            policy=self.config.policy,
            model_name=self.model_name,
            champion_version=served.version if serving else None,
            fee_bps=self.config.fee_bps,
            threshold=self.config.threshold,
            serving=serving,
            # a refused first candidate that does not serve starts the no-champion retry interval
            initial_state=None if serving else PolicyState(start, 1),
        )
        gates = pd.DataFrame(self._gates, columns=GATE_COLUMNS)
        completed = replay.decisions["now"].max() if len(replay.decisions) else start
        return ReplayRunResult(replay, gates, self.registry.directory, self.config.policy.horizon, completed)
