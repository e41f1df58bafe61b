"""The data-quality rules behind the OHLCV asset checks: each passes on clean candles and fails on bad ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from antmeter.market import quality
from antmeter_tests.factories import random_walk_candles

START = pd.Timestamp("2024-01-01 00:00", tz="UTC")


@pytest.fixture
def clean() -> pd.DataFrame:
    return random_walk_candles(n=180, start="2024-01-01 00:00", seed=3)


def test_duplicate_open_times(clean):
    assert quality.duplicate_open_times(clean).passed
    doubled = pd.concat([clean, clean.iloc[[10, 11]]], ignore_index=True)
    result = quality.duplicate_open_times(doubled)
    assert not result.passed
    assert result.summary == "2 duplicated open times"
    assert result.details["examples"] == [str(clean["open_time"].iloc[10]), str(clean["open_time"].iloc[11])]


def test_gaps(clean):
    end = START + pd.Timedelta(minutes=180)
    assert quality.gaps(clean, START, end).passed
    holed = clean.drop(index=[5, 6, 7, 100]).reset_index(drop=True)
    result = quality.gaps(holed, START, end)
    assert not result.passed
    assert result.details["missing"] == 4
    assert result.details["gaps"] == [
        f"{START + pd.Timedelta(minutes=5)} .. {START + pd.Timedelta(minutes=7)}",
        f"{START + pd.Timedelta(minutes=100)} .. {START + pd.Timedelta(minutes=100)}",
    ]
    # the minutes after the covered range are missing too when the window reaches past it
    assert quality.gaps(clean, START, end + pd.Timedelta(minutes=3)).details["missing"] == 3


OHLC_BREAKS = {
    "low above open/close": lambda c: c.assign(low=c[["open", "close"]].max(axis=1) * 1.01),
    "high below open/close": lambda c: c.assign(high=c[["open", "close"]].min(axis=1) * 0.99),
    "open above high": lambda c: c.assign(open=c["high"] * 1.05),
}


@pytest.mark.parametrize("break_row", OHLC_BREAKS.values(), ids=OHLC_BREAKS.keys())
def test_ohlc_violations(clean, break_row):
    assert quality.ohlc_violations(clean).passed
    row = 40
    bad = pd.concat([clean.iloc[:row], break_row(clean.iloc[[row]]), clean.iloc[row + 1 :]])
    result = quality.ohlc_violations(bad)
    assert not result.passed
    assert result.summary == "1 candles with inconsistent OHLC"
    assert result.details["examples"] == [str(clean["open_time"].iloc[row])]


def test_negative_volume(clean):
    assert quality.negative_volume(clean).passed
    bad = clean.copy()
    bad.loc[[3, 9], "volume"] = -1.0
    result = quality.negative_volume(bad)
    assert not result.passed and result.summary == "2 candles with negative volume"
    # zero volume is fine (a quiet minute)
    quiet = clean.copy()
    quiet["volume"] = 0.0
    assert quality.negative_volume(quiet).passed


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_missing_values(clean, bad_value):
    assert quality.missing_values(clean).passed
    bad = clean.copy()
    bad.loc[50, "close"] = bad_value
    result = quality.missing_values(bad)
    assert not result.passed
    assert result.details["examples"] == [str(clean["open_time"].iloc[50])]


def test_staleness(clean):
    newest_close = clean["open_time"].iloc[-1] + pd.Timedelta(minutes=1)
    fresh = quality.staleness(clean, newest_close + pd.Timedelta(minutes=10), max_age_minutes=10)
    assert fresh.passed and fresh.details["age_minutes"] == 10.0
    stale = quality.staleness(clean, newest_close + pd.Timedelta(minutes=10, seconds=30), max_age_minutes=10)
    assert not stale.passed and stale.details["age_minutes"] == 10.5
    empty = quality.staleness(clean.iloc[:0], newest_close, max_age_minutes=10)
    assert not empty.passed and empty.summary == "no candles at all"
