"""Programmatic pattern labels: configured TA-Lib ``CDL*`` candlestick functions as labelled spans.

TA-Lib marks the *last* candle of a pattern with +100 (bullish) or -100 (bearish; some functions
also return +-200 for a confirmed variant, treated the same). Each hit becomes a span over the
pattern's candles, ``[t - (n - 1) minutes, t]`` with ``n`` from :data:`PATTERN_CANDLES`, labelled
``bullish_<pattern>`` / ``bearish_<pattern>`` (``pattern`` is the function name without ``CDL``,
lower case). TA-Lib's body/shadow averages look back at most ~10 candles, so a partition is
computed with a warm-up of :data:`WARMUP_MINUTES` and only hits whose last candle is in the
partition are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

WARMUP_MINUTES = 30
# How many candles each supported pattern spans (its last candle carries TA-Lib's signal).
PATTERN_CANDLES: dict[str, int] = {
    "CDLENGULFING": 2,
    "CDLHAMMER": 1,
    "CDLSHOOTINGSTAR": 1,
    "CDLHARAMI": 2,
    "CDLMORNINGSTAR": 3,
    "CDLEVENINGSTAR": 3,
    "CDL3WHITESOLDIERS": 3,
    "CDL3BLACKCROWS": 3,
    "CDLPIERCING": 2,
    "CDLDARKCLOUDCOVER": 2,
    "CDLDOJI": 1,
    "CDLMARUBOZU": 1,
}
DEFAULT_PATTERNS = ("CDLENGULFING", "CDLHAMMER", "CDLSHOOTINGSTAR", "CDLMORNINGSTAR", "CDLEVENINGSTAR")
SPAN_COLUMNS = ["start_time", "end_time", "label"]
_ONE_MINUTE = pd.Timedelta(minutes=1)


@dataclass(frozen=True)
class PatternConfig:
    """Which TA-Lib candlestick functions label the candles."""

    patterns: tuple[str, ...] = DEFAULT_PATTERNS

    def __post_init__(self) -> None:
        if not self.patterns:
            raise ValueError("PatternConfig.patterns: configure at least one TA-Lib CDL* function")
        unknown = [p for p in self.patterns if p not in PATTERN_CANDLES]
        if unknown:
            raise ValueError(
                f"PatternConfig.patterns: unsupported pattern(s) {unknown}; choose from {sorted(PATTERN_CANDLES)}"
            )
        if len(set(self.patterns)) != len(self.patterns):
            raise ValueError(f"PatternConfig.patterns: duplicates in {list(self.patterns)}")


def pattern_name(function: str) -> str:
    """``CDLENGULFING`` -> ``engulfing``."""
    return function.removeprefix("CDL").lower()


def programmatic_label_names(config: PatternConfig = PatternConfig()) -> list[str]:
    """Every label the configured functions can emit, sorted."""
    return sorted(f"{side}_{pattern_name(p)}" for p in config.patterns for side in ("bullish", "bearish"))


def empty_spans() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "start_time": pd.Series(dtype="datetime64[ns, UTC]"),
            "end_time": pd.Series(dtype="datetime64[ns, UTC]"),
            "label": pd.Series(dtype="str"),
        }
    )


def candlestick_signals(candles: pd.DataFrame, config: PatternConfig = PatternConfig()) -> pd.DataFrame:
    """``open_time`` and one int column per configured function (TA-Lib's raw output, 0 / +-100 / +-200)."""
    import talib

    arrays = {c: candles[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close")}
    out = pd.DataFrame({"open_time": candles["open_time"].reset_index(drop=True)})
    for function in config.patterns:
        values = getattr(talib, function)(arrays["open"], arrays["high"], arrays["low"], arrays["close"])
        out[function] = np.asarray(values, dtype=np.int64)
    return out


def programmatic_spans(
    candles: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    config: PatternConfig = PatternConfig(),
    interval: pd.Timedelta = _ONE_MINUTE,
) -> pd.DataFrame:
    """Spans (``start_time``, ``end_time`` inclusive open times, ``label``) of the configured patterns
    whose last candle opens in ``[start, end)``; ``candles`` should start ``WARMUP_MINUTES`` earlier.

    A span whose candles are not consecutive (a gap in the data) is dropped.
    """
    if candles.empty:
        return empty_spans()
    signals = candlestick_signals(candles, config)
    times = signals["open_time"]
    in_window = ((times >= start) & (times < end)).to_numpy()
    rows = []
    for function in config.patterns:
        n = PATTERN_CANDLES[function]
        values = signals[function].to_numpy()
        for i in np.flatnonzero((values != 0) & in_window):
            first = i - (n - 1)
            if first < 0 or times.iloc[i] - times.iloc[first] != (n - 1) * interval:
                continue
            side = "bullish" if values[i] > 0 else "bearish"
            rows.append((times.iloc[first], times.iloc[i], f"{side}_{pattern_name(function)}"))
    if not rows:
        return empty_spans()
    spans = pd.DataFrame(rows, columns=SPAN_COLUMNS)
    spans["label"] = spans["label"].astype("str")
    return spans.sort_values(["start_time", "label"], ignore_index=True)


def span_counts(spans: pd.DataFrame, config: PatternConfig = PatternConfig()) -> dict[str, int]:
    """Spans per label, every configured label present (0 where none)."""
    counts = spans["label"].value_counts()
    return {label: int(counts.get(label, 0)) for label in programmatic_label_names(config)}
