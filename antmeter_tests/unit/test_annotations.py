"""Annotation format: validation errors naming the record, idempotent storage, confidence filter,
export round trip, feedback records; the shipped example is the planted ground truth, degraded."""

import json
from pathlib import Path

import pandas as pd
import pytest

from antmeter.market.annotations import (
    AnnotationError,
    annotations_document,
    example_annotations,
    feedback_annotation,
    parse_annotations,
    read_annotation_file,
    read_annotations,
    record_feedback,
    store_annotations,
)
from antmeter.market.simulator import SimulatorConfig, simulate_range
from antmeter.market.store import MarketStore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "annotations" / "planted_patterns.json"


def record(**changes) -> dict:
    base = {
        "symbol": "BTCUSDT",
        "interval": "1m",
        "start_time": "2024-01-02T03:17:00Z",
        "end_time": "2024-01-02T03:40:00Z",
        "label": "double_top",
        "confidence": 0.9,
        "source": "human",
    }
    return base | changes


def test_valid_document_parses_to_utc_frame():
    frame = parse_annotations(
        {"annotations": [record(), record(source="model", label="double_bottom")]}, ["BTCUSDT"]
    )
    assert len(frame) == 2
    assert frame["start_time"].iloc[0] == pd.Timestamp("2024-01-02 03:17", tz="UTC")
    assert frame["model_prediction"].tolist() == [None, None]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (record(symbol="DOGEUSDT"), r"annotations\[1\]\.symbol: unknown symbol 'DOGEUSDT'"),
        (
            record(start_time="2024-01-02T04:00:00Z", end_time="2024-01-02T03:59:00Z"),
            r"annotations\[1\]: end_time .* before start_time",
        ),
        (
            record(start_time="2024-01-02T05:00:30Z", end_time="2024-01-02T05:10:00Z"),
            r"annotations\[1\]\.start_time: .* not on the interval's grid",
        ),
        (
            record(start_time="2024-01-02T03:30:00Z", end_time="2024-01-02T03:50:00Z"),
            r"annotations\[1\]: overlaps annotations\[0\]",
        ),
        (
            record(start_time="2024-01-02T05:00:00", end_time="2024-01-02T05:10:00Z"),
            r"annotations\[1\]\.start_time: .* time zone",
        ),
        (record(confidence=1.5), r"annotations\[1\]\.confidence"),
        (record(source="robot"), r"annotations\[1\]\.source"),
        ({"symbol": "BTCUSDT"}, r"annotations\[1\]: missing field"),
    ],
)
def test_invalid_records_are_named(bad, message):
    with pytest.raises(AnnotationError, match=message):
        parse_annotations({"annotations": [record(), bad]}, ["BTCUSDT"])


def test_same_span_with_another_label_or_source_is_not_a_duplicate():
    frame = parse_annotations(
        {
            "annotations": [
                record(),
                record(label="double_bottom"),
                record(source="human_correction", label="O"),
            ]
        },
        ["BTCUSDT"],
    )
    assert len(frame) == 3


def test_store_is_idempotent_filters_confidence_and_round_trips(store_url, tmp_path):
    store = MarketStore(store_url)
    store.migrate()
    frame = parse_annotations(
        {
            "annotations": [
                record(),
                record(start_time="2024-01-02T06:00:00Z", end_time="2024-01-02T06:20:00Z", confidence=0.3),
            ]
        },
        ["BTCUSDT"],
    )
    store_annotations(store, frame)
    store_annotations(store, frame)
    assert len(read_annotations(store)) == 2
    assert read_annotations(store, min_confidence=0.5)["start_time"].tolist() == [
        pd.Timestamp("2024-01-02 03:17", tz="UTC")
    ]
    # the newest label of a (span, source) wins
    store_annotations(store, parse_annotations([record(label="head_and_shoulders")], ["BTCUSDT"]))
    assert sorted(read_annotations(store)["label"]) == ["double_top", "head_and_shoulders"]
    exported = tmp_path / "export.json"
    exported.write_text(json.dumps(annotations_document(read_annotations(store))))
    again = read_annotation_file(exported, ["BTCUSDT"])
    pd.testing.assert_frame_equal(again, read_annotations(store))


def test_feedback_accept_and_dismiss(store_url):
    store = MarketStore(store_url)
    store.migrate()
    start, end = pd.Timestamp("2024-01-02 07:00", tz="UTC"), pd.Timestamp("2024-01-02 07:25", tz="UTC")
    accepted = feedback_annotation("BTCUSDT", "1m", start, end, "double_top", accepted=True)
    dismissed = feedback_annotation(
        "BTCUSDT",
        "1m",
        start + pd.Timedelta(hours=1),
        end + pd.Timedelta(hours=1),
        "double_bottom",
        accepted=False,
    )
    assert record_feedback(store, [accepted, dismissed], ["BTCUSDT"]) == 2
    stored = read_annotations(store)
    assert stored[["label", "source", "model_prediction"]].values.tolist() == [
        ["double_top", "human", "double_top"],
        ["O", "human_correction", "double_bottom"],
    ]
    with pytest.raises(AnnotationError, match="unknown symbol"):
        record_feedback(
            store, [feedback_annotation("XRPUSDT", "1m", start, end, "double_top", True)], ["BTCUSDT"]
        )
    assert len(read_annotations(store)) == 2


def test_shipped_example_is_the_planted_truth_with_drops_and_mislabels():
    shipped = json.loads(EXAMPLE.read_text())
    assert shipped == example_annotations(["BTCUSDT", "ETHUSDT"], "2024-01-01", "2024-01-03")
    frame = read_annotation_file(EXAMPLE, ["BTCUSDT", "ETHUSDT"])
    truth = pd.concat(
        [
            simulate_range(
                s, "2024-01-01", "2024-01-03", SimulatorConfig(plant_patterns=True)
            ).patterns.assign(symbol=s)
            for s in ("BTCUSDT", "ETHUSDT")
        ],
        ignore_index=True,
    )
    joined = frame.merge(truth, on=["symbol", "start_time", "end_time"], how="left", suffixes=("", "_true"))
    assert joined["label_true"].notna().all()  # every annotation is a planted span
    kept, correct = len(frame) / len(truth), float((joined["label"] == joined["label_true"]).mean())
    assert 0.75 < kept < 0.95 and 0.8 < correct < 0.97
