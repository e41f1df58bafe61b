"""What the API answers about chart patterns: the champion pattern classifiers' predicted spans and
labels, the stored annotations (export in the pipeline's JSON format) and people's verdicts on
predicted spans (accepted: a ``human`` annotation; dismissed: a ``human_correction`` labelled ``O``
with the model's prediction attached), which the next ``pattern_dataset`` trains on.

Pattern classifiers are registered as ``<prefix>-pattern-<kind>`` (kinds: ``rf``, ``hgb``) and served
from the registry by their ``champion`` alias, like the direction models.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from antmeter.learn.patterns import PATTERN_KINDS, PatternBundle, pattern_label_catalog, predict_spans
from antmeter.learn.spans import disagreements
from antmeter.live.service import BadInput, InferenceService, NoChampion, NotFound
from antmeter.market.annotations import (
    AnnotationError,
    annotations_document,
    feedback_annotation,
    read_annotations,
    record_feedback,
)
from antmeter.market.candles import validate_candles
from antmeter.registry.versions import CHAMPION, ChampionCache, ServedChampion

# the newest candles a span prediction looks at when the request names no range
DEFAULT_LOOKBACK_MINUTES = 720
MAX_RANGE_MINUTES = 7 * 1_440


class PatternService:
    """Predicted spans, labels, annotation export and feedback over the store and the MLflow registry."""

    def __init__(self, inference: InferenceService, champions: ChampionCache) -> None:
        self.inference, self.champions = inference, champions
        self.store, self.settings = inference.store, inference.settings

    def registered_name(self, kind: str) -> str:
        return self.settings.registered_name(f"pattern-{kind}")

    def champion(self, kind: str | None) -> tuple[str, ServedChampion]:
        """``(kind, champion)`` of the named kind, or of the first kind that has one; else :class:`NoChampion`."""
        if kind is not None and kind not in PATTERN_KINDS:
            raise NotFound(
                f"unknown pattern classifier {kind!r}; choose from {list(PATTERN_KINDS)}", field="kind"
            )
        for candidate in (kind,) if kind is not None else PATTERN_KINDS:
            served = self.champions.get(self.registered_name(candidate))
            if served is not None:
                return candidate, served
        names = [self.registered_name(k) for k in ((kind,) if kind else PATTERN_KINDS)]
        raise NoChampion(
            f"no pattern classifier is serving: {names} have no {CHAMPION!r} alias yet (materialize the "
            "pattern group and let its gate promote a version)",
            field="kind",
        )

    def models(self) -> list[dict[str, Any]]:
        """Each pattern classifier kind: its registered name and champion (None before one is promoted)."""
        out = []
        for kind in PATTERN_KINDS:
            served = self.champions.get(self.registered_name(kind))
            out.append(
                {
                    "kind": kind,
                    "name": self.registered_name(kind),
                    "champion": None if served is None else self.model_info(kind, served),
                }
            )
        return out

    @staticmethod
    def model_info(kind: str, served: ServedChampion) -> dict[str, Any]:
        bundle: PatternBundle = served.model
        return {
            "name": served.name,
            "version": served.version,
            "kind": kind,
            "uri": served.uri,
            "gate": served.tags.get("gate"),
            "classes": list(bundle.config["classes"]),
        }

    def labels(self, kind: str | None = None) -> dict[str, Any]:
        """The champion's label names and chart colours (``O``, no pattern, excluded)."""
        kind, served = self.champion(kind)
        return {
            "model_info": self.model_info(kind, served),
            "labels": pattern_label_catalog(list(served.model.config["classes"])),
        }

    def predict(
        self,
        symbol: str,
        candles: pd.DataFrame | None = None,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
        kind: str | None = None,
        min_confidence: float = 0.0,
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Predicted spans of ``symbol``: over request ``candles`` (the candle contract checks them), else
        over the stored candles in ``[start, end)`` (default: the newest 720). Spans whose mean confidence
        is below ``min_confidence`` are dropped. Returns (spans, model_info)."""
        if not 0 <= min_confidence <= 1:
            raise BadInput(f"min_confidence must be in [0, 1], got {min_confidence}", field="min_confidence")
        kind, served = self.champion(kind)
        if candles is not None:
            candles = validate_candles(candles, source="request candles", interval=self.settings.interval)
            features = self.inference.features_for(symbol, candles)
        else:
            self.inference.check_symbol(symbol)
            if start is not None and end is not None and end <= start:
                raise BadInput(f"end {end} is not after start {start}", field="end")
            if start is None:
                newest = (end or self.inference.clock()) - self.inference.step
                start = newest - pd.Timedelta(minutes=DEFAULT_LOOKBACK_MINUTES)
            if (end or self.inference.clock()) - start > pd.Timedelta(minutes=MAX_RANGE_MINUTES):
                raise BadInput(f"at most {MAX_RANGE_MINUTES} minutes per request", field="start")
            # a candle's window is centred on it: candles on both sides of the range are read too
            reach = served.model.spec.max_offset() * self.inference.step
            stored = self.store.read_candles(
                symbol,
                self.settings.interval,
                start - self.inference.warmup - reach,
                None if end is None else end + reach,
            )
            if stored.empty:
                raise BadInput(f"no stored {symbol} candles in the requested range", field="start")
            features = self.inference.features_for(symbol, stored)
            features = features[features["open_time"] >= start - reach].reset_index(drop=True)
        spans = predict_spans(served.model, features, symbol, min_confidence)
        if candles is None:
            keep = spans["end_time"] >= start
            if end is not None:
                keep &= spans["start_time"] < end
            spans = spans[keep].reset_index(drop=True)
        return spans, self.model_info(kind, served)

    def disagreements(self, symbol: str, spans: pd.DataFrame) -> pd.DataFrame:
        """Where the stored human annotations of ``symbol`` and ``spans`` disagree (IoU > 0.5 corresponds)."""
        if spans.empty:
            return disagreements(spans, spans)
        first, last = spans["start_time"].min(), spans["end_time"].max()
        human = read_annotations(self.store, [symbol])
        human = human[human["source"] != "model"]
        human = human[(human["end_time"] >= first) & (human["start_time"] <= last)]
        return disagreements(human[["symbol", "start_time", "end_time", "label"]], spans)

    def export(self, symbol: str | None = None, min_confidence: float = 0.0) -> dict[str, Any]:
        """The stored annotations as the pipeline's annotation JSON document."""
        if not 0 <= min_confidence <= 1:
            raise BadInput(f"min_confidence must be in [0, 1], got {min_confidence}", field="min_confidence")
        if symbol is not None:
            self.inference.check_symbol(symbol)
        return annotations_document(
            read_annotations(self.store, None if symbol is None else [symbol], min_confidence)
        )

    def feedback(
        self,
        symbol: str,
        start_time: pd.Timestamp,
        end_time: pd.Timestamp,
        predicted_label: str,
        accepted: bool,
        confidence: float = 1.0,
    ) -> dict[str, Any]:
        """Store a verdict on a predicted span as an annotation (validated like a file's); returns the record."""
        self.inference.check_symbol(symbol)
        record = feedback_annotation(
            symbol, self.settings.interval, start_time, end_time, predicted_label, accepted, confidence
        )
        try:
            record_feedback(self.store, [record], self.store.symbols())
        except AnnotationError as exc:
            raise BadInput(str(exc), field="feedback") from None
        return record
