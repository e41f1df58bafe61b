"""Features and labels per symbol x day, materialized through Dagster from simulated candles and news.

A partition's features are computed from the previous day's candles as warm-up, so they must equal
features over the whole history; a day's last labels wait for the next day's candles.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from antmeter.features.labels import LabelConfig, compute_labels
from antmeter.features.pipeline import (
    FeatureConfig,
    compute_features,
    feature_columns,
    recursive_feature_columns,
)
from antmeter_assets import features, market, news
from antmeter_assets.features import partition_file
from antmeter_tests.dagster.conftest import SYMBOL, symbol_day

DAY1, DAY2 = "2024-01-02", "2024-01-03"
HORIZONS = (5, 10, 30)


def materialized(result, asset: str):
    assert result.success, result.get_step_failure_events()
    (event,) = result.asset_materializations_for_node(asset)
    return event.metadata


@pytest.fixture
def two_days(pipeline):
    """Day 1 candles + labels (before day 2 exists), then day 2 candles, news and sentiment of both days."""
    settings = pipeline.resources["settings"]
    materialized(pipeline.materialize([market.ohlcv], symbol_day(DAY1)), "ohlcv")
    early_labels = materialized(pipeline.materialize([features.labels], symbol_day(DAY1)), "labels")
    early = pd.read_parquet(partition_file(settings, "labels", SYMBOL, DAY1))
    materialized(pipeline.materialize([market.ohlcv], symbol_day(DAY2)), "ohlcv")
    for day in (DAY1, DAY2):
        materialized(
            pipeline.materialize([news.news_articles, news.sentiment_hourly], day), "sentiment_hourly"
        )
    return pipeline, early, early_labels


def test_features_of_day_two_equal_full_history_features(two_days):
    pipeline, _, _ = two_days
    settings = pipeline.resources["settings"]
    result = pipeline.materialize([features.features, features.labels], symbol_day(DAY2))
    meta = materialized(result, "features")
    assert meta["rows"].value == 1440 and meta["rows_incomplete"].value == 0
    assert meta["warmup_rows_read"].value == 525  # exactly the stated warm-up, from day 1
    path = partition_file(settings, "features", SYMBOL, DAY2)
    assert path.exists() and partition_file(settings, "labels", SYMBOL, DAY2).exists()
    part = pd.read_parquet(path)

    market_store = pipeline.market()
    candles = market_store.read_candles(SYMBOL, "1m")
    assert len(candles) == 2 * 1440
    sentiment = market_store.read_frame("sentiment_hourly", filters={"symbol": SYMBOL})
    full = compute_features(candles, FeatureConfig(), sentiment_hourly=sentiment, symbol=SYMBOL)
    reference = full[full["open_time"] >= pd.Timestamp(DAY2, tz="UTC")].reset_index(drop=True)
    assert part["open_time"].equals(reference["open_time"])
    assert list(part.columns) == ["open_time", *feature_columns(FeatureConfig())]
    assert part["sentiment_count_1h"].gt(0).any()  # the news of both days reached the features
    recursive = set(recursive_feature_columns(FeatureConfig()))
    for column in feature_columns(FeatureConfig()):
        if column in recursive:
            # the features module's stated tolerance for recursive columns (history before the
            # warm-up weighs <= 1e-8): rtol 1e-6 and atol 1e-6 times the column's scale
            scale = np.nanmax(np.abs(reference[column]))
            np.testing.assert_allclose(
                part[column], reference[column], rtol=1e-6, atol=1e-6 * scale, err_msg=column
            )
        else:
            np.testing.assert_array_equal(
                part[column].to_numpy(), reference[column].to_numpy(), err_msg=column
            )


def test_day_one_labels_wait_for_day_two(two_days):
    pipeline, early, early_meta = two_days
    settings = pipeline.resources["settings"]
    assert len(early) == 1440
    for h in HORIZONS:
        # only the rows whose horizon reaches into day 2 are unlabeled, and they all are
        assert early_meta[f"unlabeled_{h}m"].value == h
        assert early[f"up_{h}"].iloc[-h:].isna().all() and early[f"fwd_return_{h}"].iloc[-h:].isna().all()
        assert early[f"up_{h}"].iloc[:-h].notna().all()

    meta = materialized(pipeline.materialize([features.labels], symbol_day(DAY1)), "labels")
    assert all(meta[f"unlabeled_{h}m"].value == 0 for h in HORIZONS)
    late = pd.read_parquet(partition_file(settings, "labels", SYMBOL, DAY1))
    assert late.notna().all().all()
    # rows that were already labeled did not change; the new ones match labels over the full history
    pd.testing.assert_frame_equal(late.iloc[:-30], early.iloc[:-30])
    full = compute_labels(pipeline.market().read_candles(SYMBOL, "1m"), LabelConfig(horizons=HORIZONS))
    pd.testing.assert_frame_equal(late, full.iloc[:1440].reset_index(drop=True))
