"""The inference service behind the HTTP API: champions from the registry, predictions from the store's
newest closed candles or from candles a caller sends, stored predictions joined with their outcomes.

It uses exactly the pipeline's code: :func:`antmeter.features.pipeline.compute_features` for features,
:func:`antmeter.live.inference.predict_symbol` with the champion's ONNX bundle for predictions,
:mod:`antmeter.live.verification` for outcomes next to the baselines. No web framework, no Dagster.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from antmeter.features.pipeline import FeatureConfig, compute_features, required_warmup_candles
from antmeter.learn.oracle import ORACLE, oracle_correct_of_verified
from antmeter.live import verification
from antmeter.live.inference import inference_windows, predict_symbol
from antmeter.live.report import _class_rates as class_rates
from antmeter.market.candles import closed_before, interval_timedelta, stale_limit, validate_candles
from antmeter.market.simulator import SimulatorConfig
from antmeter.registry.versions import CHAMPION, ChampionCache, ServedChampion

CLASS_NAMES = {2: ("down", "up"), 3: ("down", "flat", "up")}


class ServiceError(ValueError):
    """A request the service cannot answer; ``status`` is the HTTP status that fits, ``field`` what is wrong."""

    status = 400

    def __init__(self, message: str, field: str | None = None, row: int | str | None = None, **extra: Any):
        super().__init__(message)
        self.message, self.field, self.row, self.extra = message, field, row, extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": type(self).__name__, "detail": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.row is not None:
            body["row"] = self.row
        return {**body, **self.extra}


class BadInput(ServiceError):
    status = 422


class NotFound(ServiceError):
    status = 404


class NoChampion(ServiceError):
    status = 503


class StaleInput(ServiceError):
    status = 503


@dataclass(frozen=True)
class ServiceSettings:
    """What the service serves: model types, the registered-name prefix, staleness and limits."""

    model_types: tuple[str, ...] = ("lstm", "transformer", "patchtst")
    model_prefix: str = "antmeter"
    default_model_type: str | None = None
    interval: str = "1m"
    task: str = "binary"
    # the next candle may come this late before the input is stale (see market.candles.stale_limit)
    stale_after_minutes: int = 10
    promotion_metric: str = "log_loss"
    primary_horizon: int = 5
    rolling_window: str = "6h"
    max_candles: int = 20_000
    # batch predictions: candles of the interval per chunk and per request
    batch_chunk_candles: int = 1_440
    max_batch_candles: int = 14 * 1_440
    feature_config: FeatureConfig = field(default_factory=FeatureConfig)
    # the simulator the candles come from (None: real candles): the oracle ceiling beside the baselines
    simulator: SimulatorConfig | None = None

    def registered_name(self, model_type: str) -> str:
        return f"{self.model_prefix}-{model_type}"


class InferenceService:
    """Answers the API's questions from the market store and the MLflow registry."""

    def __init__(
        self,
        store,
        client,
        champions: ChampionCache,
        settings: ServiceSettings,
        clock: Callable[[], pd.Timestamp] = lambda: pd.Timestamp.now(tz="UTC"),
    ) -> None:
        self.store, self.client, self.champions, self.settings, self.clock = (
            store,
            client,
            champions,
            settings,
            clock,
        )
        self.step = interval_timedelta(settings.interval)
        self.warmup_candles = required_warmup_candles(settings.feature_config)
        self.warmup = self.warmup_candles * self.step
        self._latest: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self._latest_lock = threading.Lock()

    # -- models ------------------------------------------------------------------------------------

    def model_type(self, model: str | None) -> str:
        """The model type a request means: a type (``lstm``), a registered name, or the default."""
        if model is None or model == "":
            return self.default_model_type()
        for model_type in self.settings.model_types:
            if model in (model_type, self.settings.registered_name(model_type)):
                return model_type
        raise NotFound(
            f"unknown model {model!r}; served models: {list(self.settings.model_types)}", field="model"
        )

    def default_model_type(self) -> str:
        """The configured default type, else the type whose champion has the best gate score."""
        if self.settings.default_model_type:
            return self.settings.default_model_type
        scored = [(self.gate_score(t), t) for t in self.settings.model_types]
        scored = [(s, t) for s, t in scored if s is not None]
        if scored:
            return min(scored)[1]
        return self.settings.model_types[0]

    def gate_metric_key(self, model_type: str) -> str:
        return f"holdout/{model_type}/{self.settings.promotion_metric}_{self.settings.primary_horizon}m"

    def gate_score(self, model_type: str) -> float | None:
        """The champion's holdout score on the gate metric (lower is better), None without a champion."""
        from antmeter.registry.versions import champion

        version = champion(self.client, self.settings.registered_name(model_type))
        if version is None or not version.run_id:
            return None
        return self.client.get_run(version.run_id).data.metrics.get(self.gate_metric_key(model_type))

    def champion(self, model_type: str) -> ServedChampion:
        """The serving champion of a type (loaded by alias, cached by version) or :class:`NoChampion`."""
        name = self.settings.registered_name(model_type)
        served = self.champions.get(name)
        if served is None:
            raise NoChampion(
                f"no champion is serving for model {model_type!r}: registered model {name!r} has no "
                f"{CHAMPION!r} alias yet (train it and let the promotion gate promote a version)",
                field="model",
            )
        return served

    def models(self) -> list[dict[str, Any]]:
        """Every registered model of the served types: versions, champion, gate results, holdout metrics."""
        from mlflow.exceptions import MlflowException

        out = []
        for model_type in self.settings.model_types:
            name = self.settings.registered_name(model_type)
            try:
                registered = self.client.get_registered_model(name)
            except MlflowException:
                continue
            champion_version = (registered.aliases or {}).get(CHAMPION)
            versions = self.client.search_model_versions(f"name='{name}'")
            out.append(
                {
                    "name": name,
                    "model_type": model_type,
                    "champion_version": None if champion_version is None else str(champion_version),
                    "versions": sorted(
                        (self._version_info(v, champion_version) for v in versions),
                        key=lambda v: int(v["version"]),
                    ),
                }
            )
        return out

    def model_version(self, name: str, version: str) -> dict[str, Any]:
        from mlflow.exceptions import MlflowException

        model_type = self.model_type(name)
        registered = self.settings.registered_name(model_type)
        try:
            found = self.client.get_model_version(registered, str(version))
            aliases = self.client.get_registered_model(registered).aliases or {}
        except MlflowException:
            raise NotFound(f"model {registered!r} has no version {version!r}", field="version") from None
        return self._version_info(found, aliases.get(CHAMPION), metrics=True)

    def _version_info(self, version, champion_version, metrics: bool = True) -> dict[str, Any]:
        tags = dict(version.tags or {})
        holdout = {}
        if metrics and version.run_id:
            run_metrics = self.client.get_run(version.run_id).data.metrics
            holdout = {  # MLflow groups them as holdout/<model>/<metric>_<h>m; answered as <model>.<metric>_<h>m
                k.removeprefix("holdout/").replace("/", "."): v
                for k, v in run_metrics.items()
                if k.startswith("holdout/")
            }
        return {
            "name": version.name,
            "version": str(version.version),
            "is_champion": champion_version is not None and str(champion_version) == str(version.version),
            "gate": tags.get("gate"),
            "gate_reason": tags.get("gate_reason"),
            "trained_until": tags.get("trained_until"),
            "mode": tags.get("mode"),
            "run_id": version.run_id,
            "created_at": pd.Timestamp(version.creation_timestamp, unit="ms", tz="UTC").isoformat(),
            "holdout_metrics": holdout,
        }

    def labels(self, model_type: str) -> dict[str, Any]:
        """The champion's output: horizons, class names in probability order, feature order, window."""
        served = self.champion(model_type)
        return {
            "model_name": served.name,
            "model_version": served.version,
            "task": served.model.config.get("task", self.settings.task),
            "horizons": served.model.horizons,
            "classes": list(self.class_names(served)),
            "window": served.model.window,
            "features": list(served.model.schema.names),
        }

    def class_names(self, served: ServedChampion) -> tuple[str, ...]:
        task = served.model.config.get("task", self.settings.task)
        return CLASS_NAMES[2 if task == "binary" else 3]

    # -- symbols and candles -----------------------------------------------------------------------

    def check_symbol(self, symbol: str) -> str:
        """``symbol`` if the store has candles for it, else :class:`NotFound` listing the known ones."""
        known = self.store.symbols()
        if symbol not in known:
            raise NotFound(f"unknown symbol {symbol!r}; the store has candles for {known}", field="symbol")
        return symbol

    def newest_candles(self, symbol: str, candles_needed: int, now: pd.Timestamp) -> pd.DataFrame:
        """The closed candles of the last ``candles_needed`` candles before the newest one; stale → error."""
        start = self.newest_open_time(symbol, now) - candles_needed * self.step
        return closed_before(
            self.store.read_candles(symbol, self.settings.interval, start, None), now, self.settings.interval
        )

    def newest_open_time(self, symbol: str, now: pd.Timestamp) -> pd.Timestamp:
        """The open time of the newest stored candle of ``symbol``; :class:`StaleInput` when too old."""
        stats = self.store.candle_stats(
            symbol, self.settings.interval, None, (now - self.step).floor("us") + pd.Timedelta(1, "us")
        )
        newest = stats["last_open_time"]
        if newest is None:
            raise NotFound(f"no candles stored for {symbol!r}", field="symbol")
        newest = pd.Timestamp(newest)
        newest_close = min(newest + self.step, now)
        age = now - newest_close
        if age > stale_limit(self.settings.interval, self.settings.stale_after_minutes):
            raise StaleInput(
                f"stale input: the newest {symbol} candle closed at {newest_close.isoformat()}, "
                f"{age.total_seconds() / 60:.1f} minutes ago (limit "
                f"{stale_limit(self.settings.interval, self.settings.stale_after_minutes)})",
                field="symbol",
                newest_close=newest_close.isoformat(),
                stale_minutes=round(age.total_seconds() / 60, 2),
            )
        return newest

    def features_for(self, symbol: str, candles: pd.DataFrame) -> pd.DataFrame:
        """The pipeline's features of ``candles`` (with the store's hourly sentiment of ``symbol``)."""
        sentiment = self.store.read_frame(
            "sentiment_hourly",
            filters={"symbol": symbol},
            time_range=(candles["open_time"].min() - pd.Timedelta(hours=2), None) if len(candles) else None,
        )
        return compute_features(
            candles,
            self.settings.feature_config,
            sentiment_hourly=sentiment,
            symbol=symbol,
            interval=self.settings.interval,
        )

    def features(self, symbol: str, lookback: int) -> pd.DataFrame:
        """The newest ``lookback`` feature rows of ``symbol`` (complete warm-up)."""
        self.check_symbol(symbol)
        if not 1 <= lookback <= self.settings.max_candles:
            raise BadInput(
                f"lookback must be 1..{self.settings.max_candles}, got {lookback}", field="lookback"
            )
        candles = self.newest_candles(symbol, lookback + self.warmup_candles, self.clock())
        return self.features_for(symbol, candles).tail(lookback).reset_index(drop=True)

    # -- predictions -------------------------------------------------------------------------------

    def predict_latest(self, symbol: str, model: str | None = None) -> dict[str, Any]:
        """The champion's prediction for the newest closed candle (cached per candle and version)."""
        self.check_symbol(symbol)
        model_type = self.model_type(model)
        served = self.champion(model_type)
        now = self.clock()
        key = (served.name, served.version, symbol, self.newest_open_time(symbol, now))
        with self._latest_lock:
            if key in self._latest:
                self._latest.move_to_end(key)
                return self._latest[key]
        candles = self.newest_candles(symbol, served.model.window + self.warmup_candles, now)
        features = self.features_for(symbol, candles)
        rows = predict_symbol(served.model, features, symbol, served.name, served.version, None, now)
        if rows.empty or rows["prediction_time"].max() != candles["open_time"].iloc[-1]:
            raise BadInput(
                f"the newest {served.model.window} candles of {symbol} are not a complete, gap-free "
                f"window with {self.warmup_candles} candles of warm-up",
                field="symbol",
            )
        newest = rows[rows["prediction_time"] == rows["prediction_time"].max()]
        names = list(served.model.schema.names)
        feature_row = features[features["open_time"] == newest["prediction_time"].iloc[0]][names].iloc[0]
        answer = {
            **self._describe(served, model_type, symbol, newest),
            "features": {k: float(v) for k, v in feature_row.items()},
        }
        with self._latest_lock:
            self._latest[key] = answer
            while len(self._latest) > 256:
                self._latest.popitem(last=False)
        return answer

    def _describe(self, served: ServedChampion, model_type: str, symbol: str, rows: pd.DataFrame) -> dict:
        classes = self.class_names(served)
        as_of = pd.Timestamp(rows["prediction_time"].iloc[0])
        return {
            "symbol": symbol,
            "model_type": model_type,
            "model_name": served.name,
            "model_version": served.version,
            "as_of": as_of.isoformat(),
            "as_of_close": (as_of + self.step).isoformat(),
            "horizons": [self._horizon_entry(r, classes) for r in rows.itertuples()],
        }

    @staticmethod
    def _horizon_entry(row, classes: tuple[str, ...]) -> dict[str, Any]:
        probs = {"down": row.prob_down, "up": row.prob_up}
        if len(classes) == 3:
            probs["flat"] = row.prob_flat
        return {
            "horizon_min": int(row.horizon_min),
            "probabilities": {k: float(v) for k, v in probs.items()},
            "predicted_class": int(row.predicted_class),
            "direction": classes[int(row.predicted_class)],
            "confidence": float(row.confidence),
            "predicted_return": float(row.predicted_return),
        }

    def predict_candles(self, candles: pd.DataFrame, symbol: str, model: str | None = None) -> pd.DataFrame:
        """Prediction rows (the store's ``predictions`` columns) for every complete window of ``candles``.

        ``candles`` is checked by the project's candle contract; too few for the warm-up → :class:`BadInput`.
        """
        self.check_symbol(symbol)
        model_type = self.model_type(model)
        served = self.champion(model_type)
        if len(candles) > self.settings.max_candles:
            raise BadInput(
                f"at most {self.settings.max_candles} candles per request, got {len(candles)}",
                field="candles",
            )
        canonical = validate_candles(candles, source="request candles", interval=self.settings.interval)
        needed = served.model.window + self.warmup_candles
        if len(canonical) < needed:
            raise BadInput(
                f"too few candles: {len(canonical)} given, the model needs at least {needed} consecutive "
                f"{self.settings.interval} candles ({self.warmup_candles} warm-up + a "
                f"{served.model.window}-candle window)",
                field="candles",
            )
        features = self.features_for(symbol, canonical)
        # like the predictions asset: every row of a window has the full warm-up before it
        after = canonical["open_time"].iloc[0] + self.warmup + (served.model.window - 2) * self.step
        rows = predict_symbol(
            served.model, features, symbol, served.name, served.version, after, self.clock()
        )
        if rows.empty:
            raise BadInput(
                f"no complete gap-free {served.model.window}-candle window after the "
                f"{self.warmup_candles}-candle warm-up",
                field="candles",
            )
        return rows

    def predict_range(
        self, symbol: str, start: pd.Timestamp, end: pd.Timestamp, model: str | None = None
    ) -> pd.DataFrame:
        """Predictions for every stored closed candle with open time in ``[start, end)``, in day chunks."""
        self.check_symbol(symbol)
        served = self.champion(self.model_type(model))
        if end <= start:
            raise BadInput(f"end {end} must be after start {start}", field="end")
        if end - start > self.settings.max_batch_candles * self.step:
            raise BadInput(
                f"at most {self.settings.max_batch_candles} {self.settings.interval} candles "
                f"({self.settings.max_batch_candles * self.step}) per batch request, got {end - start}",
                field="end",
            )
        now = self.clock()
        history = self.warmup + served.model.window * self.step
        chunk = self.settings.batch_chunk_candles * self.step
        parts = []
        for chunk_start in pd.date_range(start, end, freq=chunk, inclusive="left"):
            chunk_end = min(chunk_start + chunk, end)
            candles = closed_before(
                self.store.read_candles(symbol, self.settings.interval, chunk_start - history, chunk_end),
                now,
                self.settings.interval,
            )
            if candles.empty:
                continue
            rows = predict_symbol(
                served.model,
                self.features_for(symbol, candles),
                symbol,
                served.name,
                served.version,
                chunk_start - pd.Timedelta(1, "ns"),
                now,
            )
            parts.append(rows)
        parts = [p for p in parts if len(p)]
        return (
            pd.concat(parts, ignore_index=True)
            if parts
            else pd.DataFrame(columns=verification.PREDICTION_COLUMNS)
        )

    def score_windows(
        self, windows: np.ndarray, model: str | None = None
    ) -> tuple[ServedChampion, np.ndarray, np.ndarray]:
        """Class probabilities and return forecasts for unscaled windows ``[batch, window, features]``."""
        served = self.champion(self.model_type(model))
        expected = (served.model.window, len(served.model.schema))
        if windows.ndim != 3 or windows.shape[1:] != expected:
            raise BadInput(
                f"inputs must have shape [batch, {expected[0]}, {expected[1]}] (batch, window, features in "
                f"the model's feature order, see GET /model/labels), got {list(windows.shape)}",
                field="inputs",
            )
        bad = ~np.isfinite(windows).all(axis=(1, 2))
        if bad.any():
            raise BadInput(
                "inputs hold NaN or infinite values", field="inputs", row=int(np.flatnonzero(bad)[0])
            )
        proba, regression = served.model.predict_windows(windows.astype(np.float32))
        return served, proba, regression

    def windows_from_features(self, features: pd.DataFrame, model: str | None = None) -> np.ndarray:
        """Every complete window of a feature frame (``open_time`` + the model's features), for scoring."""
        served = self.champion(self.model_type(model))
        _, windows = inference_windows(features, list(served.model.schema.names), served.model.window, None)
        return windows

    # -- stored predictions and outcomes ------------------------------------------------------------

    def stored_predictions(
        self,
        symbol: str | None = None,
        model: str | None = None,
        horizon: int | None = None,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
        limit: int = 5_000,
    ) -> pd.DataFrame:
        filters: dict[str, Any] = {}
        if symbol:
            filters["symbol"] = self.check_symbol(symbol)
        if model:
            filters["model_name"] = self.settings.registered_name(self.model_type(model))
        if horizon is not None:
            filters["horizon_min"] = int(horizon)
        frame = self.store.read_frame("predictions", filters=filters, time_range=(start, end))
        return (
            frame.sort_values(["prediction_time", "horizon_min"], kind="stable")
            .tail(limit)
            .reset_index(drop=True)
        )

    def outcomes(
        self,
        symbol: str | None = None,
        model: str | None = None,
        horizon: int | None = None,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
        limit: int = 5_000,
    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """Stored predictions joined with their verified outcomes and the baselines on the same rows, the
        accuracy summary (model vs baselines) over the rows returned, and the rolling accuracy."""
        preds = self.stored_predictions(symbol, model, horizon, start, end, limit=10**9)
        ver = self.store.read_frame(
            "verification",
            filters={k: v for k, v in (("symbol", symbol), ("horizon_min", horizon)) if v is not None},
            time_range=(start, end),
        )
        if preds.empty or ver.empty:
            return pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
        joined = verification.join_verification(preds, ver)
        if joined.empty:
            return pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
        symbols = sorted(joined["symbol"].unique())
        first = joined["prediction_time"].min() - (int(joined["horizon_min"].max()) + 1) * self.step
        candles = {s: self.store.read_candles(s, self.settings.interval, first, None) for s in symbols}
        joined = verification.add_baselines(
            joined,
            candles=candles,
            class_rates=self._class_rates(joined),
            task=self.settings.task,
            interval=self.settings.interval,
        )
        joined = joined.sort_values(["prediction_time", "horizon_min"], kind="stable").tail(limit)
        joined = joined.reset_index(drop=True)
        if self.settings.simulator is not None and self.settings.task == "binary":
            joined["oracle_correct"] = oracle_correct_of_verified(
                joined, self.settings.simulator, self.settings.interval
            )
        rolling = verification.rolling_report(
            joined,
            self.settings.rolling_window,
            task=self.settings.task,
            every=max(1, len(joined) // 500),
            interval=self.settings.interval,
        )
        rolling = rolling[
            [
                "symbol",
                "horizon_min",
                "model_name",
                "model_version",
                "window_end",
                "predictor",
                "n",
                "accuracy",
            ]
        ]
        return joined, self.accuracy_summary(joined), rolling

    @staticmethod
    def accuracy_summary(joined: pd.DataFrame) -> pd.DataFrame:
        """Accuracy of the model and each baseline (and the oracle on the simulator) over exactly the
        same rows, per series."""
        predictors = [p for p in (*verification.BASELINES, ORACLE) if f"{p}_correct" in joined.columns]
        rows = []
        for key, group in joined.groupby(verification.GROUP_COLUMNS, sort=True):
            usable = (
                group[group[[f"{p}_correct" for p in predictors]].notna().all(axis=1)]
                if predictors
                else group
            )
            entry = dict(zip(verification.GROUP_COLUMNS, key, strict=True))
            entry["n"] = int(len(usable))
            entry["model_accuracy"] = float(usable["correct"].astype(bool).mean()) if len(usable) else None
            for p in predictors:
                entry[f"{p}_accuracy"] = (
                    float(usable[f"{p}_correct"].astype(bool).mean()) if len(usable) else None
                )
            entry["first"] = usable["prediction_time"].min() if len(usable) else None
            entry["last"] = usable["prediction_time"].max() if len(usable) else None
            rows.append(entry)
        return pd.DataFrame(rows)

    def _class_rates(self, joined: pd.DataFrame) -> dict:
        """The champions' training class rates keyed (symbol, horizon), for the majority baseline."""
        configs = {}
        for model_type in self.settings.model_types:
            served = self.champions.get(self.settings.registered_name(model_type))
            if served is not None:
                configs[served.name] = served.model.config
        return class_rates(configs, joined)
