"""Encodings, merges, statistics, span grouping and disagreements on hand-made cases."""

import numpy as np
import pandas as pd
import pytest

from antmeter.learn.pattern_dataset import (
    WindowSpec,
    bio_tags,
    candle_targets,
    dataset_statistics,
    merge_spans,
    span_windows,
    window_matrix,
)
from antmeter.learn.spans import disagreements, group_predicted_spans, span_f1, span_iou

T0 = pd.Timestamp("2024-01-02 00:00", tz="UTC")


def t(minute: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=minute)


def spans(*rows, symbol=None) -> pd.DataFrame:
    frame = pd.DataFrame(
        [(t(a), t(b), label) for a, b, label in rows], columns=["start_time", "end_time", "label"]
    )
    if symbol is not None:
        frame.insert(0, "symbol", symbol)
    return frame


TIMES = pd.Series(pd.date_range(T0, periods=12, freq="1min"))


def test_bio_tags_put_overlapping_spans_in_further_columns():
    tags = bio_tags(TIMES, spans((1, 3, "flag"), (3, 4, "hammer"), (6, 6, "doji"), (8, 9, "O")))
    assert list(tags.columns) == ["open_time", "tag_0", "tag_1"]
    assert tags["tag_0"].tolist() == [
        "O",
        "B-flag",
        "I-flag",
        "I-flag",
        "O",
        "O",
        "B-doji",
        "O",
        "O",
        "O",
        "O",
        "O",
    ]
    assert tags["tag_1"].tolist() == ["O", "O", "O", "B-hammer", "I-hammer"] + ["O"] * 7
    assert candle_targets(TIMES, spans((1, 3, "flag")))[:5].tolist() == ["O", "flag", "flag", "flag", "O"]


def test_bio_tags_without_spans_has_one_all_o_column():
    tags = bio_tags(TIMES, spans())
    assert list(tags.columns) == ["open_time", "tag_0"] and set(tags["tag_0"]) == {"O"}


def test_merge_strategies():
    human = spans((0, 5, "double_top"), (8, 9, "O"))
    programmatic = spans((4, 5, "bullish_engulfing"), (9, 9, "bearish_hammer"), (11, 11, "bullish_hammer"))
    merged = merge_spans(human, programmatic, "human_priority")["tag"]
    assert merged["label"].tolist() == ["double_top", "O", "bullish_hammer"]
    prog_first = merge_spans(human, programmatic, "programmatic_priority")["tag"]
    assert prog_first["label"].tolist() == ["bullish_engulfing", "bearish_hammer", "bullish_hammer"]
    both = merge_spans(human, programmatic, "both")
    assert set(both) == {"human_tag", "programmatic_tag"} and len(both["programmatic_tag"]) == 3
    with pytest.raises(ValueError, match="merge strategy"):
        merge_spans(human, programmatic, "newest")


def test_span_windows_centre_pad_and_boundaries():
    windows, dropped = span_windows(
        TIMES, spans((4, 5, "a"), (0, 1, "b"), (2, 10, "long")), WindowSpec(6, 1, "shift")
    )
    assert windows[["label", "first", "last"]].values.tolist() == [["a", 2, 7], ["b", 0, 5]]
    assert dropped == {"too_long": 1, "off_grid": 0, "boundary": 0}
    kept, dropped = span_windows(TIMES, spans((0, 1, "b")), WindowSpec(6, 1, "drop"))
    assert kept.empty and dropped["boundary"] == 1
    padded, _ = span_windows(TIMES, spans((0, 1, "b")), WindowSpec(6, 1, "pad"))
    assert padded[["first", "last"]].values.tolist() == [[-2, 3]]
    values = np.arange(12, dtype=float)[:, None]
    assert window_matrix(values, padded)[0, :, 0].tolist() == [0, 0, 0, 1, 2, 3]
    with pytest.raises(ValueError, match="padding"):
        WindowSpec(4, 2)


def test_dataset_statistics_counts_lengths_and_agreement():
    human = spans((0, 3, "x"), (6, 7, "O"))
    programmatic = spans((2, 3, "x"), (6, 6, "y"))
    merged = merge_spans(human, programmatic, "human_priority")["tag"]
    stats = dataset_statistics(TIMES, human, programmatic, candle_targets(TIMES, merged))
    assert stats["spans_per_label"] == {"O": 1, "x": 2, "y": 1}
    assert stats["mean_span_length"] == {"O": 2.0, "x": 3.0, "y": 1.0}
    # labelled candles 0-3 (h x), 6-7 (h O; p y at 6): agree at 2, 3 (x = x) and 7 (O = no label)
    assert stats["agreement_rate"] == pytest.approx(3 / 6)
    assert stats["class_distribution"] == {"O": pytest.approx(8 / 12), "x": pytest.approx(4 / 12)}


def test_group_predicted_spans_breaks_on_label_change_and_gaps():
    times = pd.Series([t(i) for i in (0, 1, 2, 3, 4, 6, 7)])
    labels = np.array(["O", "a", "a", "b", "b", "b", "O"])
    conf = np.array([0.9, 0.6, 0.8, 0.5, 0.7, 0.9, 0.9])
    grouped = group_predicted_spans(times, labels, conf, symbol="BTCUSDT")
    assert grouped[["label", "candles"]].values.tolist() == [["a", 2], ["b", 2], ["b", 1]]
    assert grouped["confidence"].tolist() == pytest.approx([0.7, 0.6, 0.9])
    assert grouped["start_time"].tolist() == [t(1), t(3), t(6)] and (grouped["symbol"] == "BTCUSDT").all()


def test_iou_span_f1_and_disagreements():
    assert span_iou(t(0), t(3), t(2), t(5)) == pytest.approx(2 / 6)
    assert span_iou(t(0), t(1), t(5), t(6)) == 0.0
    human = spans((0, 9, "top"), (20, 29, "bottom"), (40, 45, "O"), (60, 69, "top"), symbol="S")
    predicted = spans((1, 9, "top"), (21, 28, "top"), (40, 44, "bottom"), (80, 85, "top"), symbol="S")
    scores = span_f1(human, predicted)
    assert scores["span_precision"] == pytest.approx(1 / 4) and scores["span_recall"] == pytest.approx(1 / 3)
    kinds = disagreements(human, predicted)
    assert kinds[["kind", "human_label", "predicted_label"]].values.tolist() == [
        ["label_mismatch", "bottom", "top"],
        ["label_mismatch", "O", "bottom"],
        ["missed_by_model", "top", None],
        ["missed_by_human", None, "top"],
    ]
