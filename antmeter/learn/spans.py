"""Candle spans: grouping per-candle predictions into spans, IoU, span F1 and human/model disagreements.

A span is a row with ``start_time`` and ``end_time`` (open times of its first and last candle,
inclusive), ``label`` and, where it matters, ``symbol``. Lengths and overlaps are counted in candles
of ``interval``. Pure functions over frames.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NO_PATTERN = "O"
DISAGREEMENT_KINDS = ("missed_by_model", "missed_by_human", "label_mismatch")
_ONE_MINUTE = pd.Timedelta(minutes=1)


def span_iou(a_start, a_end, b_start, b_end, interval: pd.Timedelta = _ONE_MINUTE) -> float:
    """Intersection over union of two inclusive candle spans, in candles."""
    inter = (min(a_end, b_end) - max(a_start, b_start)) / interval + 1
    if inter <= 0:
        return 0.0
    union = (a_end - a_start) / interval + 1 + (b_end - b_start) / interval + 1 - inter
    return float(inter / union)


def group_predicted_spans(
    open_times: pd.Series,
    labels: np.ndarray,
    confidence: np.ndarray,
    interval: pd.Timedelta = _ONE_MINUTE,
    symbol: str | None = None,
) -> pd.DataFrame:
    """Consecutive candles with the same non-``O`` predicted label as spans, with the mean confidence.

    A gap in ``open_times`` (a missing candle) ends a span. Columns: ``symbol`` (when given),
    ``start_time``, ``end_time``, ``label``, ``confidence``, ``candles``.
    """
    times = pd.Series(open_times).reset_index(drop=True)
    labels = np.asarray(labels, dtype=object)
    confidence = np.asarray(confidence, dtype=float)
    if not len(times) == len(labels) == len(confidence):
        raise ValueError(
            f"open_times, labels and confidence differ in length: {len(times)}, {len(labels)}, {len(confidence)}"
        )
    rows = []
    start = None
    for i in range(len(times) + 1):
        ends = i == len(times) or (
            start is not None and (labels[i] != labels[start] or times[i] - times[i - 1] != interval)
        )
        if start is not None and ends:
            rows.append(
                (times[start], times[i - 1], labels[start], float(confidence[start:i].mean()), i - start)
            )
            start = None
        if i < len(times) and start is None and labels[i] != NO_PATTERN:
            start = i
    frame = pd.DataFrame(rows, columns=["start_time", "end_time", "label", "confidence", "candles"])
    frame = frame.astype(
        {"start_time": "datetime64[ns, UTC]", "end_time": "datetime64[ns, UTC]", "label": "str"}
    )
    if symbol is not None:
        frame.insert(0, "symbol", symbol)
    return frame


def _by_symbol(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    if "symbol" not in frame:
        return {"": frame.reset_index(drop=True)}
    return {s: g.reset_index(drop=True) for s, g in frame.groupby("symbol", sort=True)}


def _best_matches(
    left: pd.DataFrame, right: pd.DataFrame, interval: pd.Timedelta
) -> list[tuple[int, int, float]]:
    """(left row, right row, IoU) of every overlapping pair."""
    pairs = []
    for i, a in enumerate(left.itertuples(index=False)):
        for j, b in enumerate(right.itertuples(index=False)):
            if b.start_time > a.end_time or b.end_time < a.start_time:
                continue
            pairs.append((i, j, span_iou(a.start_time, a.end_time, b.start_time, b.end_time, interval)))
    return pairs


def span_f1(
    true_spans: pd.DataFrame,
    predicted_spans: pd.DataFrame,
    iou_threshold: float = 0.5,
    interval: pd.Timedelta = _ONE_MINUTE,
) -> dict[str, float]:
    """Precision, recall and F1 of predicted spans: a prediction is a hit when it matches a true span of
    the same label (and symbol) with IoU >= ``iou_threshold``, each true span matched at most once
    (greedy by IoU). ``O`` spans are ignored."""
    true_spans = true_spans[true_spans["label"] != NO_PATTERN]
    predicted_spans = predicted_spans[predicted_spans["label"] != NO_PATTERN]
    hits = 0
    truth_by, pred_by = _by_symbol(true_spans), _by_symbol(predicted_spans)
    for symbol, truth in truth_by.items():
        predicted = pred_by.get(symbol)
        if predicted is None or predicted.empty:
            continue
        pairs = sorted(_best_matches(truth, predicted, interval), key=lambda p: -p[2])
        used_t, used_p = set(), set()
        for i, j, iou in pairs:
            if iou < iou_threshold or i in used_t or j in used_p:
                continue
            if truth["label"].iloc[i] == predicted["label"].iloc[j]:
                used_t.add(i)
                used_p.add(j)
                hits += 1
    precision = hits / len(predicted_spans) if len(predicted_spans) else 0.0
    recall = hits / len(true_spans) if len(true_spans) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "span_precision": precision,
        "span_recall": recall,
        "span_f1": f1,
        "true_spans": float(len(true_spans)),
        "predicted_spans": float(len(predicted_spans)),
    }


def disagreements(
    human_spans: pd.DataFrame,
    predicted_spans: pd.DataFrame,
    iou_threshold: float = 0.5,
    interval: pd.Timedelta = _ONE_MINUTE,
) -> pd.DataFrame:
    """Where people and the model disagree. A human span and a predicted span *correspond* when their
    IoU exceeds ``iou_threshold``. Human pattern spans with no corresponding prediction:
    ``missed_by_model``; predictions with no corresponding human span: ``missed_by_human``;
    corresponding spans with different labels (a human ``O`` included): ``label_mismatch``.

    Columns: ``symbol`` (when present), ``kind``, ``start_time``, ``end_time``, ``human_label``,
    ``predicted_label``, ``iou``.
    """
    rows = []
    human_by, pred_by = _by_symbol(human_spans), _by_symbol(predicted_spans)
    for symbol in sorted(set(human_by) | set(pred_by)):
        human = human_by.get(symbol, human_spans.iloc[:0])
        predicted = pred_by.get(symbol, predicted_spans.iloc[:0])
        corresponding = [p for p in _best_matches(human, predicted, interval) if p[2] > iou_threshold]
        matched_h = {i for i, _, _ in corresponding}
        matched_p = {j for _, j, _ in corresponding}
        for i, j, iou in corresponding:
            h, p = human.iloc[i], predicted.iloc[j]
            if h["label"] != p["label"]:
                rows.append(
                    (symbol, "label_mismatch", h["start_time"], h["end_time"], h["label"], p["label"], iou)
                )
        for i, h in human.iterrows():
            if i not in matched_h and h["label"] != NO_PATTERN:
                rows.append(
                    (symbol, "missed_by_model", h["start_time"], h["end_time"], h["label"], None, 0.0)
                )
        for j, p in predicted.iterrows():
            if j not in matched_p:
                rows.append(
                    (symbol, "missed_by_human", p["start_time"], p["end_time"], None, p["label"], 0.0)
                )
    columns = ["symbol", "kind", "start_time", "end_time", "human_label", "predicted_label", "iou"]
    frame = pd.DataFrame(rows, columns=columns).astype(
        {"start_time": "datetime64[ns, UTC]", "end_time": "datetime64[ns, UTC]"}
    )
    frame = frame.sort_values(["symbol", "start_time", "kind"], ignore_index=True)
    for column in ("human_label", "predicted_label"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    if "symbol" not in human_spans and "symbol" not in predicted_spans:
        frame = frame.drop(columns="symbol")
    return frame
