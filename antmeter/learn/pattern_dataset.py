"""Training encodings of pattern spans: merge strategies, BIO tags, span-centred windows, statistics.

Inputs are span frames (``start_time``, ``end_time`` inclusive open times, ``label``) over one symbol's
candle grid ``open_times``; human annotations (antmeter.market.annotations) and programmatic TA-Lib
spans (antmeter.features.patterns) are merged by a strategy:

* ``human_priority``: every human span, plus the programmatic spans that overlap no human span
  (a human ``O`` span also vetoes programmatic labels under it);
* ``programmatic_priority``: every programmatic span, plus the human spans that overlap none;
* ``both``: both sets, kept apart (``human_tag_*`` and ``programmatic_tag_*`` columns).

``O`` spans are negative annotations: they label their candles ``O`` and are not training spans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from antmeter.learn.spans import NO_PATTERN

MERGE_STRATEGIES = ("human_priority", "programmatic_priority", "both")
BOUNDARY_MODES = ("drop", "shift", "pad")
_ONE_MINUTE = pd.Timedelta(minutes=1)


def _overlaps_any(spans: pd.DataFrame, others: pd.DataFrame) -> np.ndarray:
    """Whether each span overlaps at least one of ``others`` (same symbol when both have one)."""
    out = np.zeros(len(spans), dtype=bool)
    if others.empty:
        return out
    same_symbol = "symbol" in spans and "symbol" in others
    for i, span in enumerate(spans.itertuples(index=False)):
        candidates = others[others["symbol"] == span.symbol] if same_symbol else others
        out[i] = bool(
            ((candidates["start_time"] <= span.end_time) & (candidates["end_time"] >= span.start_time)).any()
        )
    return out


def merge_spans(human: pd.DataFrame, programmatic: pd.DataFrame, strategy: str) -> dict[str, pd.DataFrame]:
    """The span sets to encode, keyed by tag-column prefix: ``{"tag": merged}`` or, for ``both``,
    ``{"human_tag": human, "programmatic_tag": programmatic}``. Merged spans carry ``origin``."""
    if strategy not in MERGE_STRATEGIES:
        raise ValueError(f"merge strategy must be one of {list(MERGE_STRATEGIES)}, got {strategy!r}")
    human = human.assign(origin="human")
    programmatic = programmatic.assign(origin="programmatic")
    if strategy == "both":
        return {
            "human_tag": human.reset_index(drop=True),
            "programmatic_tag": programmatic.reset_index(drop=True),
        }
    first, second = (human, programmatic) if strategy == "human_priority" else (programmatic, human)
    kept = second[~_overlaps_any(second, first)]
    merged = pd.concat([first, kept], ignore_index=True)
    return {"tag": merged.sort_values(["start_time", "end_time"], ignore_index=True)}


def assign_tag_columns(spans: pd.DataFrame) -> np.ndarray:
    """A tag column per span such that spans in one column never overlap (greedy by start time; the
    first column is filled first, so it holds the highest-priority span where possible)."""
    order = np.lexsort((spans["end_time"].to_numpy(), spans["start_time"].to_numpy()))
    column_end: list[pd.Timestamp] = []
    out = np.zeros(len(spans), dtype=np.int64)
    for i in order:
        start, end = spans["start_time"].iloc[i], spans["end_time"].iloc[i]
        for c, last in enumerate(column_end):
            if last < start:
                column_end[c] = end
                out[i] = c
                break
        else:
            column_end.append(end)
            out[i] = len(column_end) - 1
    return out


def bio_tags(open_times: pd.Series, spans: pd.DataFrame, prefix: str = "tag") -> pd.DataFrame:
    """BIO tags per candle: ``B-<label>`` on a span's first candle, ``I-<label>`` on the rest, ``O``
    elsewhere; overlapping spans go to further columns ``<prefix>_1``, ``<prefix>_2``, ... (always at
    least ``<prefix>_0``). ``O`` spans leave their candles ``O``. Spans off the grid are ignored."""
    times = pd.Series(open_times).reset_index(drop=True)
    position = pd.Index(times)
    spans = spans[spans["label"] != NO_PATTERN].reset_index(drop=True)
    columns = assign_tag_columns(spans) if len(spans) else np.zeros(0, dtype=np.int64)
    n_columns = int(columns.max()) + 1 if len(spans) else 1
    tags = np.full((n_columns, len(times)), NO_PATTERN, dtype=object)
    for span, column in zip(spans.itertuples(index=False), columns, strict=True):
        inside = np.flatnonzero(((times >= span.start_time) & (times <= span.end_time)).to_numpy())
        if not len(inside):
            continue
        first = position.get_indexer([span.start_time])[0]
        tags[column, inside] = f"I-{span.label}"
        tags[column, first if first >= 0 else inside[0]] = f"B-{span.label}"
    out = pd.DataFrame({"open_time": times})
    for c in range(n_columns):
        out[f"{prefix}_{c}"] = tags[c]
    return out


def candle_targets(open_times: pd.Series, spans: pd.DataFrame) -> np.ndarray:
    """One class per candle (the label without its B/I prefix) from the first tag column: the classifier's
    target, ``O`` outside every span."""
    tags = bio_tags(open_times, spans)["tag_0"].to_numpy(dtype=object)
    return np.array([t if t == NO_PATTERN else t[2:] for t in tags], dtype=object)


@dataclass(frozen=True)
class WindowSpec:
    """Span-centred windows: ``window`` candles centred on each span, at least ``padding`` candles of
    context before and after it (longer spans are dropped), and what to do at the data's edges:
    ``drop`` the window, ``shift`` it inside the data, or ``pad`` (indices outside the data are kept;
    :func:`window_matrix` repeats the edge candle)."""

    window: int = 48
    padding: int = 4
    boundary: str = "shift"

    def __post_init__(self) -> None:
        if self.window < 1 or self.padding < 0 or 2 * self.padding >= self.window:
            raise ValueError(
                f"WindowSpec: need window >= 1 and 0 <= 2 * padding < window, got window={self.window}, "
                f"padding={self.padding}"
            )
        if self.boundary not in BOUNDARY_MODES:
            raise ValueError(
                f"WindowSpec.boundary must be one of {list(BOUNDARY_MODES)}, got {self.boundary!r}"
            )


def span_windows(
    open_times: pd.Series, spans: pd.DataFrame, spec: WindowSpec
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One window per span (``label``, ``first``, ``last`` candle indices, inclusive, and the span's own
    ``span_first``/``span_last``), plus counts of dropped spans by reason."""
    times = pd.Series(open_times).reset_index(drop=True)
    index = pd.Index(times)
    n = len(times)
    dropped = {"too_long": 0, "off_grid": 0, "boundary": 0}
    rows = []
    for span in spans[spans["label"] != NO_PATTERN].itertuples(index=False):
        s, e = index.get_indexer([span.start_time, span.end_time])
        if s < 0 or e < 0:
            dropped["off_grid"] += 1
            continue
        length = e - s + 1
        if length + 2 * spec.padding > spec.window:
            dropped["too_long"] += 1
            continue
        first = s - (spec.window - length) // 2
        last = first + spec.window - 1
        if first < 0 or last >= n:
            if spec.boundary == "drop" or (spec.boundary == "shift" and n < spec.window):
                dropped["boundary"] += 1
                continue
            if spec.boundary == "shift":
                first = min(max(first, 0), n - spec.window)
                last = first + spec.window - 1
        rows.append((span.label, first, last, s, e))
    frame = pd.DataFrame(rows, columns=["label", "first", "last", "span_first", "span_last"])
    return frame, dropped


def window_matrix(values: np.ndarray, windows: pd.DataFrame) -> np.ndarray:
    """``(n_windows, window, n_features)`` rows of ``values`` for each window, edge candles repeated
    where a padded window reaches outside the data."""
    if windows.empty:
        return np.zeros((0, 0, values.shape[1]))
    width = int(windows["last"].iloc[0] - windows["first"].iloc[0] + 1)
    idx = windows["first"].to_numpy()[:, None] + np.arange(width)[None, :]
    return values[np.clip(idx, 0, len(values) - 1)]


def dataset_statistics(
    open_times: pd.Series, human: pd.DataFrame, programmatic: pd.DataFrame, targets: np.ndarray
) -> dict:
    """Counts per label (spans), the class distribution of the candle targets, mean span length per
    label (candles) and the human/programmatic agreement rate: over candles that either source labels
    (a human ``O`` counts as a label), the share where both give the same label."""
    times = pd.Series(open_times).reset_index(drop=True)
    spans = pd.concat(
        [human.assign(origin="human"), programmatic.assign(origin="programmatic")], ignore_index=True
    )
    lengths = ((spans["end_time"] - spans["start_time"]) / _ONE_MINUTE + 1).astype(float)
    counts = spans.groupby("label").size()
    classes, class_counts = np.unique(np.asarray(targets, dtype=str), return_counts=True)

    def per_candle(frame: pd.DataFrame) -> np.ndarray:
        out = np.full(len(times), None, dtype=object)
        for span in frame.itertuples(index=False):
            out[((times >= span.start_time) & (times <= span.end_time)).to_numpy()] = span.label
        return out

    h, p = per_candle(human), per_candle(programmatic)
    either = (h != None) | (p != None)  # noqa: E711 (elementwise on object arrays)
    h_filled, p_filled = np.where(h == None, NO_PATTERN, h), np.where(p == None, NO_PATTERN, p)  # noqa: E711
    agree = (h_filled == p_filled) & either
    return {
        "spans_per_label": {k: int(v) for k, v in counts.items()},
        "spans_by_origin": {k: int(v) for k, v in spans.groupby("origin").size().items()},
        "class_distribution": {
            c: round(int(n) / len(targets), 6) for c, n in zip(classes, class_counts, strict=True)
        }
        if len(targets)
        else {},
        "mean_span_length": {
            k: round(float(v), 3) for k, v in lengths.groupby(spans["label"]).mean().items()
        },
        "mean_span_length_all": round(float(lengths.mean()), 3) if len(lengths) else 0.0,
        "agreement_rate": round(float(agree.sum() / either.sum()), 6) if either.any() else None,
        "candles_labelled_by_both": int(((h != None) & (p != None)).sum()),  # noqa: E711
        "candles": len(times),
    }
