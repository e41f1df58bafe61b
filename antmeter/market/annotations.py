"""Span annotations of candles: the JSON format, its validation, and storage in the market store.

A file (or an export) is a JSON object::

    {"format": "antmeter-annotations", "version": 1,
     "annotations": [
       {"symbol": "BTCUSDT", "interval": "1m",
        "start_time": "2024-01-02T03:17:00Z", "end_time": "2024-01-02T03:44:00Z",
        "label": "double_top", "confidence": 0.9, "source": "human"},
       {"symbol": "BTCUSDT", "interval": "1m",
        "start_time": "2024-01-02T05:00:00Z", "end_time": "2024-01-02T05:20:00Z",
        "label": "O", "confidence": 1.0, "source": "human_correction", "model_prediction": "double_bottom"}]}

``start_time`` / ``end_time`` are the open times of the span's first and last candle (inclusive, on the
interval's grid, UTC). ``source`` is ``human`` (a person marked it), ``human_correction`` (a person
corrected or dismissed a model prediction, which ``model_prediction`` names) or ``model`` (a stored
prediction). The label ``O`` is a negative annotation: "no pattern here".

Validation collects every problem, each naming the record (``annotations[3]``) and field: unknown
symbol, unknown interval, times that are not timezone-aware ISO times or are off the interval's grid,
an end before its start, a confidence outside [0, 1], an unknown source, and overlapping duplicates
(two records of the same symbol, interval, source and label whose spans overlap).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from antmeter.market.candles import interval_timedelta

FORMAT = "antmeter-annotations"
FORMAT_VERSION = 1
SOURCES = ("human", "human_correction", "model")
NO_PATTERN = "O"
TABLE = "annotations"
COLUMNS = [
    "symbol",
    "interval",
    "start_time",
    "end_time",
    "source",
    "label",
    "confidence",
    "model_prediction",
]
_REQUIRED = ("symbol", "interval", "start_time", "end_time", "label", "confidence", "source")
_OPTIONAL = ("model_prediction",)


class AnnotationError(ValueError):
    """Invalid annotations; ``problems`` lists each one, naming the record and field."""

    def __init__(self, where: str, problems: list[str]):
        self.problems = problems
        shown = "; ".join(problems[:20]) + (f"; ... {len(problems) - 20} more" if len(problems) > 20 else "")
        super().__init__(f"{where}: {len(problems)} invalid annotation(s): {shown}")


def empty_annotations() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": pd.Series(dtype="str"),
            "interval": pd.Series(dtype="str"),
            "start_time": pd.Series(dtype="datetime64[ns, UTC]"),
            "end_time": pd.Series(dtype="datetime64[ns, UTC]"),
            "source": pd.Series(dtype="str"),
            "label": pd.Series(dtype="str"),
            "confidence": pd.Series(dtype="float64"),
            "model_prediction": pd.Series(dtype="object"),
        }
    )


def _time(value: Any, name: str, problems: list[str], grid: pd.Timedelta | None) -> pd.Timestamp | None:
    if not isinstance(value, str):
        problems.append(f"{name}: expected an ISO time string, got {value!r}")
        return None
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        problems.append(f"{name}: not an ISO time: {value!r}")
        return None
    if stamp.tzinfo is None:
        problems.append(f"{name}: {value!r} must carry a time zone (e.g. a trailing Z for UTC)")
        return None
    stamp = stamp.tz_convert("UTC")
    if grid is not None and (stamp - pd.Timestamp(0, tz="UTC")) % grid != pd.Timedelta(0):
        problems.append(f"{name}: {value!r} is not on the interval's grid (an open time every {grid})")
        return None
    return stamp


def parse_annotations(
    payload: Mapping[str, Any] | list,
    known_symbols: Iterable[str],
    where: str = "annotations",
) -> pd.DataFrame:
    """Validate a parsed annotation document (the object above, or just its list) into a frame with
    :data:`COLUMNS`; raises :class:`AnnotationError` listing every problem (nothing is returned then)."""
    if isinstance(payload, Mapping):
        if (
            payload.get("format", FORMAT) != FORMAT
            or payload.get("version", FORMAT_VERSION) != FORMAT_VERSION
        ):
            raise AnnotationError(
                where,
                [
                    f"expected format {FORMAT!r} version {FORMAT_VERSION}, got {payload.get('format')!r} "
                    f"version {payload.get('version')!r}"
                ],
            )
        records = payload.get("annotations")
    else:
        records = payload
    if not isinstance(records, list):
        raise AnnotationError(where, ["'annotations' must be a list of records"])
    symbols = set(known_symbols)
    problems: list[str] = []
    rows = []
    for i, record in enumerate(records):
        name = f"annotations[{i}]"
        if not isinstance(record, Mapping):
            problems.append(f"{name}: expected an object, got {type(record).__name__}")
            continue
        before = len(problems)
        missing = [f for f in _REQUIRED if f not in record]
        extra = sorted(set(record) - set(_REQUIRED) - set(_OPTIONAL))
        if missing:
            problems.append(f"{name}: missing field(s) {missing}")
        if extra:
            problems.append(f"{name}: unknown field(s) {extra}")
        if missing:
            continue
        symbol, interval, label = record["symbol"], record["interval"], record["label"]
        if not isinstance(symbol, str) or symbol not in symbols:
            problems.append(f"{name}.symbol: unknown symbol {symbol!r} (known: {sorted(symbols)})")
        grid = None
        try:
            grid = interval_timedelta(interval)
        except (ValueError, TypeError):
            problems.append(f"{name}.interval: unknown interval {interval!r}")
        start = _time(record["start_time"], f"{name}.start_time", problems, grid)
        end = _time(record["end_time"], f"{name}.end_time", problems, grid)
        if start is not None and end is not None and end < start:
            problems.append(
                f"{name}: end_time {record['end_time']!r} is before start_time {record['start_time']!r}"
            )
        if not isinstance(label, str) or not label.strip():
            problems.append(f"{name}.label: expected a non-empty string, got {label!r}")
        confidence = record["confidence"]
        if (
            isinstance(confidence, bool)
            or not isinstance(confidence, int | float)
            or not 0 <= confidence <= 1
        ):
            problems.append(f"{name}.confidence: expected a number in [0, 1], got {confidence!r}")
        if record["source"] not in SOURCES:
            problems.append(f"{name}.source: expected one of {list(SOURCES)}, got {record['source']!r}")
        prediction = record.get("model_prediction")
        if prediction is not None and not isinstance(prediction, str):
            problems.append(f"{name}.model_prediction: expected a string or null, got {prediction!r}")
        if len(problems) == before:
            rows.append(
                (i, symbol, interval, start, end, record["source"], label, float(confidence), prediction)
            )
    problems.extend(_overlapping_duplicates(rows))
    if problems:
        raise AnnotationError(where, problems)
    if not rows:
        return empty_annotations()
    frame = pd.DataFrame([r[1:] for r in rows], columns=COLUMNS)
    frame["model_prediction"] = (
        frame["model_prediction"].astype(object).where(frame["model_prediction"].notna(), None)
    )
    return frame.astype({"start_time": "datetime64[ns, UTC]", "end_time": "datetime64[ns, UTC]"})


def _overlapping_duplicates(rows: list[tuple]) -> list[str]:
    """Records of the same symbol, interval, source and label whose spans overlap."""
    problems = []
    groups: dict[tuple, list[tuple]] = {}
    for row in rows:
        groups.setdefault((row[1], row[2], row[5], row[6]), []).append(row)
    for (symbol, interval, source, label), members in groups.items():
        members.sort(key=lambda r: (r[3], r[4]))
        latest = members[0]
        for row in members[1:]:
            if row[3] <= latest[4]:
                problems.append(
                    f"annotations[{row[0]}]: overlaps annotations[{latest[0]}] with the same symbol, interval, "
                    f"source and label ({symbol} {interval} {source} {label!r})"
                )
            if row[4] > latest[4]:
                latest = row
    return problems


def read_annotation_file(path: str | Path, known_symbols: Iterable[str]) -> pd.DataFrame:
    """Parse and validate one annotation JSON file (errors name the file and the record)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AnnotationError(str(path), [f"not valid JSON: {exc}"]) from None
    return parse_annotations(payload, known_symbols, where=str(path))


def annotations_document(frame: pd.DataFrame) -> dict[str, Any]:
    """Annotations as the JSON document :func:`parse_annotations` reads (the export format)."""
    records = []
    for row in frame.sort_values(["symbol", "interval", "start_time", "source"]).itertuples(index=False):
        record = {
            "symbol": row.symbol,
            "interval": row.interval,
            "start_time": row.start_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end_time": row.end_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "label": row.label,
            "confidence": float(row.confidence),
            "source": row.source,
        }
        if isinstance(row.model_prediction, str):
            record["model_prediction"] = row.model_prediction
        records.append(record)
    return {"format": FORMAT, "version": FORMAT_VERSION, "annotations": records}


def store_annotations(store, frame: pd.DataFrame) -> int:
    """Upsert validated annotations into the market store (one transaction, idempotent: the key is
    symbol, interval, start, end and source; the newest label and confidence win)."""
    if frame.empty:
        return 0
    return store.upsert_frame(TABLE, frame[COLUMNS].reset_index(drop=True))


def read_annotations(
    store,
    symbols: Iterable[str] | None = None,
    min_confidence: float = 0.0,
    time_range: tuple[pd.Timestamp | None, pd.Timestamp | None] | None = None,
) -> pd.DataFrame:
    """Stored annotations (optionally of ``symbols``, starting in ``time_range``) with confidence at
    least ``min_confidence``."""
    if not 0 <= min_confidence <= 1:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
    filters = {} if symbols is None else {"symbol": list(symbols)}
    frame = store.read_frame(TABLE, filters=filters, time_range=time_range)
    frame = frame[frame["confidence"] >= min_confidence].reset_index(drop=True)
    frame["model_prediction"] = (
        frame["model_prediction"].astype(object).where(frame["model_prediction"].notna(), None)
    )
    return frame[COLUMNS]


def feedback_annotation(
    symbol: str,
    interval: str,
    start_time: pd.Timestamp,
    end_time: pd.Timestamp,
    predicted_label: str,
    accepted: bool,
    confidence: float = 1.0,
) -> dict[str, Any]:
    """The annotation record of a user's verdict on a predicted span: accepted -> a ``human`` annotation
    with the predicted label; dismissed -> a ``human_correction`` with label ``O`` (no pattern) and the
    model's prediction attached. Validate with :func:`parse_annotations` and store it like any other."""
    return {
        "symbol": symbol,
        "interval": interval,
        "start_time": pd.Timestamp(start_time).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end_time": pd.Timestamp(end_time).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "label": predicted_label if accepted else NO_PATTERN,
        "confidence": float(confidence),
        "source": "human" if accepted else "human_correction",
        "model_prediction": predicted_label,
    }


def record_feedback(store, records: list[Mapping[str, Any]], known_symbols: Iterable[str]) -> int:
    """Validate feedback records (e.g. from :func:`feedback_annotation`) and store them; returns rows written."""
    return store_annotations(store, parse_annotations(list(records), known_symbols, where="feedback"))


def example_annotations(
    symbols: Iterable[str],
    first_day: str,
    last_day: str,
    config=None,
    drop_share: float = 0.15,
    mislabel_share: float = 0.1,
    seed: int = 15,
) -> dict[str, Any]:
    """An annotation document over the simulator's planted patterns (``plant_patterns=True``) as people
    would make it: each planted span is dropped with probability ``drop_share`` or given another
    template's label with probability ``mislabel_share``; confidences are drawn in [0.4, 1] (those
    below a minimum confidence are filtered out at training time)."""
    import dataclasses

    import numpy as np

    from antmeter.market.simulator import PATTERN_TEMPLATES, SimulatorConfig, simulate_range

    config = dataclasses.replace(config or SimulatorConfig(), plant_patterns=True)
    rng = np.random.default_rng(seed)
    names = sorted(PATTERN_TEMPLATES)
    rows = []
    for symbol in sorted(symbols):
        planted = simulate_range(symbol, first_day, last_day, config).patterns
        for span in planted.itertuples(index=False):
            draw = rng.random()
            if draw < drop_share:
                continue
            label = span.label
            if draw < drop_share + mislabel_share:
                label = names[(names.index(label) + 1 + int(rng.integers(len(names) - 1))) % len(names)]
            rows.append(
                (
                    symbol,
                    "1m",
                    span.start_time,
                    span.end_time,
                    "human",
                    label,
                    round(float(rng.uniform(0.4, 1.0)), 2),
                    None,
                )
            )
    return annotations_document(pd.DataFrame(rows, columns=COLUMNS) if rows else empty_annotations())
