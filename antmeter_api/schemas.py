"""Typed request and response bodies of the API (they make the OpenAPI document at ``/docs``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SYMBOL_PATTERN = r"^[A-Z0-9]{2,20}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Candle(Strict):
    """One closed candle, keyed by its open time (ISO 8601 with a UTC offset)."""

    open_time: dt.datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


class PredictRequest(Strict):
    symbol: str = Field(pattern=SYMBOL_PATTERN, examples=["BTCUSDT"])
    model: str | None = Field(default=None, description="model type or registered name; default: see /models")
    candles: list[Candle] = Field(description="consecutive closed minute candles, oldest first")


class BatchRequest(Strict):
    symbol: str = Field(pattern=SYMBOL_PATTERN, examples=["BTCUSDT"])
    model: str | None = None
    start: dt.datetime
    end: dt.datetime


class HorizonPrediction(BaseModel):
    horizon_min: int
    probabilities: dict[str, float]
    predicted_class: int
    direction: str
    confidence: float
    predicted_return: float


class LatestPrediction(BaseModel):
    symbol: str
    model_type: str
    model_name: str
    model_version: str
    as_of: str = Field(description="open time of the newest closed candle the prediction uses")
    as_of_close: str
    horizons: list[HorizonPrediction]
    features: dict[str, float]


class PredictionRow(BaseModel):
    """A row of the store's ``predictions`` table (and of computed predictions)."""

    symbol: str
    prediction_time: str
    horizon_min: int
    model_name: str
    model_version: str
    prob_down: float | None
    prob_flat: float | None
    prob_up: float | None
    predicted_class: int
    confidence: float
    predicted_return: float


class PredictionRows(BaseModel):
    count: int
    predictions: list[PredictionRow]


class OutcomeRow(PredictionRow):
    realized_return: float
    realized_class: int
    correct: bool
    majority_correct: bool | None = None
    persistence_correct: bool | None = None
    oracle_correct: bool | None = None


class AccuracySummary(BaseModel):
    symbol: str
    horizon_min: int
    model_name: str
    model_version: str
    n: int
    model_accuracy: float | None
    majority_accuracy: float | None = None
    persistence_accuracy: float | None = None
    oracle_accuracy: float | None = Field(
        default=None, description="the simulator's Bayes oracle on the same rows (simulated candles only)"
    )
    first: str | None
    last: str | None


class RollingPoint(BaseModel):
    symbol: str
    horizon_min: int
    model_name: str
    model_version: str
    window_end: str
    predictor: str
    n: float
    accuracy: float | None


class Outcomes(BaseModel):
    count: int
    rolling_window: str
    summary: list[AccuracySummary]
    rolling: list[RollingPoint]
    outcomes: list[OutcomeRow]


class Invocation(BaseModel):
    """MLflow's scoring input: exactly one of ``dataframe_split``, ``dataframe_records``, ``instances``,
    ``inputs``. Tensors (``inputs``/``instances``) are unscaled feature windows ``[batch, window, features]``
    in the model's feature order (``GET /model/labels``); data frames are raw candles (``open_time``,
    ``open``, ``high``, ``low``, ``close``, ``volume``) of one symbol, named by a ``symbol`` column or
    ``params.symbol``. ``params.model`` picks the model (default: the documented default)."""

    model_config = ConfigDict(extra="forbid")
    dataframe_split: dict[str, Any] | None = None
    dataframe_records: list[dict[str, Any]] | None = None
    instances: list[Any] | None = None
    inputs: list[Any] | dict[str, Any] | None = None
    params: dict[str, Any] | None = None


class Invocations(BaseModel):
    predictions: list[dict[str, Any]]


class RetrainRequest(Strict):
    model_type: str = Field(examples=["lstm"])
    mode: Literal["full", "incremental"] = "full"


class RelabelRequest(Strict):
    symbol: str = Field(pattern=SYMBOL_PATTERN)
    start_date: dt.date
    end_date: dt.date


class Launch(BaseModel):
    kind: Literal["run", "backfill"]
    id: str
    url: str
    job: str


class ErrorBody(BaseModel):
    error: str
    detail: str
    field: str | None = None
    row: int | str | None = None


# -- chart patterns ---------------------------------------------------------------------------------


class PatternModelInfo(BaseModel):
    name: str
    version: str
    kind: str = Field(description="rf (random forest) or hgb (histogram gradient boosting)")
    uri: str
    gate: str | None
    classes: list[str]


class PatternModel(BaseModel):
    kind: str
    name: str
    champion: PatternModelInfo | None


class PatternModels(BaseModel):
    models: list[PatternModel]


class PatternLabel(BaseModel):
    name: str
    colour: str
    kind: Literal["candlestick", "chart"]


class PatternLabels(BaseModel):
    model_info: PatternModelInfo
    labels: list[PatternLabel]


class PatternPredictRequest(Strict):
    """Spans over raw ``candles`` (checked by the candle contract) or, without them, over the stored
    candles of ``symbol`` in ``[start, end)`` (default: the newest 720)."""

    symbol: str = Field(pattern=SYMBOL_PATTERN, examples=["BTCUSDT"])
    kind: Literal["rf", "hgb"] | None = Field(default=None, description="default: the first with a champion")
    min_confidence: float = Field(
        default=0.0, ge=0, le=1, description="drop spans below this mean confidence"
    )
    candles: list[Candle] | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None


class PredictedSpan(BaseModel):
    symbol: str
    start_time: str = Field(description="open time of the span's first candle")
    end_time: str = Field(description="open time of its last candle (inclusive)")
    label: str
    confidence: float = Field(description="mean of the per-candle top probability")
    candles: int


class SpanDisagreement(BaseModel):
    kind: Literal["missed_by_model", "missed_by_human", "label_mismatch"]
    start_time: str
    end_time: str
    human_label: str | None
    predicted_label: str | None
    iou: float


class PatternPrediction(BaseModel):
    symbol: str
    model_info: PatternModelInfo
    spans: list[PredictedSpan]
    disagreements: list[SpanDisagreement] = Field(
        description="against the stored human annotations of the same period (IoU > 0.5 corresponds)"
    )


class FeedbackRequest(Strict):
    """A verdict on a predicted span: accepted → a ``human`` annotation with its label; dismissed → a
    ``human_correction`` labelled ``O`` with the model's prediction attached."""

    symbol: str = Field(pattern=SYMBOL_PATTERN, examples=["BTCUSDT"])
    start_time: dt.datetime
    end_time: dt.datetime
    label: str = Field(min_length=1, max_length=64, description="the predicted label")
    accepted: bool
    confidence: float = Field(default=1.0, ge=0, le=1)


class AnnotationRecord(BaseModel):
    symbol: str
    interval: str
    start_time: str
    end_time: str
    label: str
    confidence: float
    source: Literal["human", "human_correction", "model"]
    model_prediction: str | None = None


class AnnotationExport(BaseModel):
    format: str
    version: int
    annotations: list[AnnotationRecord]
