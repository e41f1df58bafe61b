"""Causal feature engineering over canonical candle frames (see :mod:`antmeter.market.candles`).

Every feature of the row keyed ``t`` is computed from candles keyed ``<= t`` (known once candle ``t``
has closed, at ``t + 1 min``) and from sentiment hours completed by then; appending later candles
never changes an earlier value (the unit tests check this for every column).

Columns (``{w}`` are the configured windows; :func:`feature_columns` gives the exact list):

* ``rsi_{w}``: RSI (``ta`` definition, 0..100).
* ``macd_{f}_{s}_{g}``, ``macd_signal_{f}_{s}_{g}``, ``macd_hist_{f}_{s}_{g}``: MACD in price units;
  each with a ``_rel`` twin divided by the close.
* ``bb_upper_{w}``, ``bb_lower_{w}``: Bollinger bands (price), ``_rel`` twins = band / close - 1;
  ``bb_pctb_{w}`` (%B, 0.5 for a flat window) and ``bb_width_{w}`` (in % of the middle band).
* ``ema_{w}``, ``sma_{w}``: moving averages (price), ``_rel`` twins = average / close - 1.
* ``atr_{w}``: average true range (price), ``atr_{w}_rel`` = ATR / close.
* ``adx_{w}``, ``plus_di_{w}``, ``minus_di_{w}``: directional movement (0..100).
* ``stoch_k_{w}``, ``stoch_d_{w}_{s}``: stochastic oscillator (0..100; 50 for a flat window).
* ``mfi_{w}``: money flow index (0..100); ``cci_{w}``: commodity channel index (off by default).
* ``vwap_{w}``: VWAP over the last ``w`` candles (rolling, not session-anchored; price),
  ``vwap_{w}_rel`` = VWAP / close - 1.
* ``obv_{w}``: on-balance volume over the last ``w`` candles divided by their volume (-1..1).
* Candle shape, scale-free: ``body_size``, ``upper_wick``, ``lower_wick``, ``range`` as fractions
  of the open; ``body_direction`` = sign(close - open); ``wick_ratio`` = upper / (upper + lower
  wick), 0.5 without wicks; ``body_to_range`` = |close - open| / (high - low), 0 for a zero range;
  ``gap`` = open / previous close - 1.
* ``log_return_{k}`` = log(close[t] / close[t - k]) (by position); ``volatility_{w}``: sample std
  of the last ``w`` one-candle log returns.
* ``volume_change_1`` = (v[t] - v[t-1]) / (v[t] + v[t-1]) (-1..1, 0 when both are 0);
  ``volume_to_avg_{w}`` = volume / mean volume of the last ``w`` candles (1 when that mean is 0).
* ``tod_sin``, ``tod_cos``, ``dow_sin``, ``dow_cos``: time of day and position in the week
  (Monday 00:00 = angle 0, continuous) of the open time, UTC.
* ``sentiment_mean_1h``, ``sentiment_count_1h``, ``sentiment_pos_share_1h``,
  ``sentiment_neg_share_1h``: the last completed sentiment hour (see below).

**Model inputs.** Raw price levels differ by symbol (and drift), so :func:`model_feature_columns`
leaves out ``macd_*``, ``bb_upper_*``, ``bb_lower_*``, ``ema_*``, ``sma_*``, ``atr_*`` and
``vwap_*`` in price units and keeps their scale-free ``_rel`` forms; every model input is unchanged
when all prices of a symbol are multiplied by a constant. Custom columns are model inputs too (their
authors keep them scale-free).

**Sentiment as-of.** ``sentiment_hourly`` rows are hours ``H`` (UTC hour starts, articles bucketed
by when the harvester first saw them). A candle keyed ``t`` is known at ``t + 1 min`` and sees the
last hour completed by then: the ``H`` with ``H + 1h <= t + 1 min < H + 2h``. An hour without a row
(no articles) gives ``sentiment_count_1h = 0`` and mean and shares 0.

**Warm-up.** Rows before a feature's lookback is filled are NaN. Windowed features are complete
after their window; recursive ones (EMA, MACD, RSI, ATR, ADX/DI, all seeded like ``ta``) carry the
whole history with geometrically decaying weight, so :func:`required_warmup_candles` adds enough
candles that the weight of anything before the warm-up is at most ``RECURSIVE_TOLERANCE``
(``1e-8``). :func:`compute_partition_features` computes a day from that many earlier candles;
windowed columns then equal the full-history ones (bit for bit when the warm-up is longer than one
rolling-std anchor block plus the window, as with the default config; otherwise to rounding) and
recursive ones to about ``1e-8`` of their state's spread (the unit tests assert ``rtol=1e-6`` with
``atol=1e-6`` times the column's scale). Features are computed by position; :func:`gap_mask` flags
rows whose lookback spans a missing minute so callers can count and exclude them.

Custom features: ``FeatureConfig.custom`` holds dotted paths (``"pkg.mod:func"`` or
``"pkg.mod.func"``) of functions ``f(candles) -> DataFrame`` returning new columns, one row per
candle (same index). A function may declare ``f.lookback_minutes`` (default 0, added to the warm-up)
and ``f.feature_columns`` (else its columns are found by calling it on an empty candle frame).
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from antmeter.features import indicators as ind
from antmeter.market.candles import CANDLE_COLUMNS, CandleValidationError, empty_candles, interval_timedelta

logger = logging.getLogger(__name__)

RECURSIVE_TOLERANCE = 1e-8
"""Largest weight that history before the warm-up may have in a complete recursive feature."""

SENTIMENT_COLUMNS = [
    "sentiment_mean_1h",
    "sentiment_count_1h",
    "sentiment_pos_share_1h",
    "sentiment_neg_share_1h",
]
SENTIMENT_INPUT_COLUMNS = ["hour", "mean_sentiment", "article_count", "positive_share", "negative_share"]
TIME_COLUMNS = ["tod_sin", "tod_cos", "dow_sin", "dow_cos"]
SHAPE_COLUMNS = [
    "body_size",
    "body_direction",
    "upper_wick",
    "lower_wick",
    "wick_ratio",
    "body_to_range",
    "gap",
    "range",
]

_MINUTE_NS = 60_000_000_000
_HOUR = pd.Timedelta(hours=1)


@dataclass(frozen=True)
class FeatureConfig:
    """Which features to compute and their windows (in candles). ``None`` or ``()`` switches one off.

    Defaults: RSI 14; MACD 12/26/9; Bollinger 20 candles, 2 std; EMA 9/21/50; SMA 10/30; ATR 14;
    ADX 14; stochastic 14 with 3-candle %D; MFI 14; CCI off; rolling VWAP and OBV over 60 candles;
    log returns over 1/5/15/30/60 candles; volatility over 15/60 returns; volume vs its 60-candle
    mean; sentiment on; no custom features.
    """

    rsi_windows: tuple[int, ...] = (14,)
    macd: tuple[int, int, int] | None = (12, 26, 9)
    bollinger: tuple[int, float] | None = (20, 2.0)
    ema_windows: tuple[int, ...] = (9, 21, 50)
    sma_windows: tuple[int, ...] = (10, 30)
    atr_window: int | None = 14
    adx_window: int | None = 14
    stoch: tuple[int, int] | None = (14, 3)
    mfi_window: int | None = 14
    cci_window: int | None = None
    vwap_window: int | None = 60
    obv_window: int | None = 60
    return_lags: tuple[int, ...] = (1, 5, 15, 30, 60)
    volatility_windows: tuple[int, ...] = (15, 60)
    volume_avg_window: int | None = 60
    include_sentiment: bool = True
    custom: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("rsi_windows", "ema_windows", "sma_windows", "return_lags", "custom"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise ValueError(f"FeatureConfig.{name} must be a tuple, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        for name in ("rsi_windows", "ema_windows", "sma_windows", "return_lags"):
            for w in getattr(self, name):
                _require_window(name, w, minimum=1)
        for w in self.volatility_windows:
            _require_window("volatility_windows", w, minimum=2)
        object.__setattr__(self, "volatility_windows", tuple(self.volatility_windows))
        for name in (
            "atr_window",
            "adx_window",
            "mfi_window",
            "cci_window",
            "vwap_window",
            "obv_window",
            "volume_avg_window",
        ):
            if getattr(self, name) is not None:
                _require_window(name, getattr(self, name), minimum=1)
        if self.macd is not None:
            if len(self.macd) != 3:
                raise ValueError(f"FeatureConfig.macd must be (fast, slow, signal), got {self.macd!r}")
            for w in self.macd:
                _require_window("macd", w, minimum=1)
            if self.macd[0] >= self.macd[1]:
                raise ValueError(
                    f"FeatureConfig.macd: fast window must be below slow window, got {self.macd!r}"
                )
            object.__setattr__(self, "macd", tuple(self.macd))
        if self.bollinger is not None:
            if len(self.bollinger) != 2 or not self.bollinger[1] > 0:
                raise ValueError(
                    f"FeatureConfig.bollinger must be (window, n_std > 0), got {self.bollinger!r}"
                )
            _require_window("bollinger", self.bollinger[0], minimum=1)
            object.__setattr__(self, "bollinger", (int(self.bollinger[0]), float(self.bollinger[1])))
        if self.stoch is not None:
            if len(self.stoch) != 2:
                raise ValueError(f"FeatureConfig.stoch must be (window, smooth), got {self.stoch!r}")
            for w in self.stoch:
                _require_window("stoch", w, minimum=1)
            object.__setattr__(self, "stoch", tuple(self.stoch))
        for path in self.custom:
            if not isinstance(path, str) or not path:
                raise ValueError(f"FeatureConfig.custom entries must be dotted paths, got {path!r}")


def _require_window(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"FeatureConfig.{name}: windows must be integers >= {minimum}, got {value!r}")


# --------------------------------------------------------------------------- feature registry


def _recursive_warmup(*decays: float) -> int:
    """Candles after which each cascaded first-order stage's initial state weighs <= the tolerance."""
    return sum(math.ceil(math.log(RECURSIVE_TOLERANCE) / math.log(d)) for d in decays if d > 0)


def _ema_decay(window: int) -> float:
    return 1.0 - 2.0 / (window + 1.0)


def _wilder_decay(window: int) -> float:
    return 1.0 - 1.0 / window


@dataclass(frozen=True)
class _Feature:
    """One output column: the candles before ``t`` it reads (``window``), the extra warm-up its
    recursive smoothing needs (``recursive_warmup``) and whether it is a raw price level."""

    name: str
    window: int
    recursive_warmup: int = 0
    price_level: bool = False

    @property
    def lookback(self) -> int:
        return self.window + self.recursive_warmup


@dataclass(frozen=True)
class _Inputs:
    """The candle columns as float64 arrays and the open times as int64 nanoseconds."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    times_ns: np.ndarray
    step_ns: int = _MINUTE_NS  # the candle interval

    @property
    def phase(self) -> int:
        """The first candle's number on the interval grid (its minute for 1m candles): aligns anchor
        blocks to absolute time across partitions."""
        return int(self.times_ns[0] // self.step_ns) if self.times_ns.shape[0] else 0


def _features(config: FeatureConfig) -> list[_Feature]:
    """Every built-in column of ``config`` in output order, with its window and recursive warm-up."""
    out: list[_Feature] = []

    def add(
        name: str, window: int, warmup: int = 0, price_level: bool = False, relative: bool = False
    ) -> None:
        """Add a column; with ``relative`` also its scale-free ``_rel`` twin (the column is a price level)."""
        out.append(_Feature(name, window, warmup, price_level or relative))
        if relative:
            out.append(_Feature(f"{name}_rel", window, warmup))

    for w in config.rsi_windows:
        add(f"rsi_{w}", w - 1, _recursive_warmup(_wilder_decay(w)))
    if config.macd is not None:
        f, s, g = config.macd
        suffix = f"{f}_{s}_{g}"
        line_warmup = _recursive_warmup(_ema_decay(s))
        signal_warmup = _recursive_warmup(_ema_decay(s), _ema_decay(g))
        add(f"macd_{suffix}", s - 1, line_warmup, relative=True)
        add(f"macd_signal_{suffix}", s + g - 2, signal_warmup, relative=True)
        add(f"macd_hist_{suffix}", s + g - 2, signal_warmup, relative=True)
    if config.bollinger is not None:
        w = config.bollinger[0]
        add(f"bb_upper_{w}", w - 1, relative=True)
        add(f"bb_lower_{w}", w - 1, relative=True)
        add(f"bb_pctb_{w}", w - 1)
        add(f"bb_width_{w}", w - 1)
    for w in config.ema_windows:
        add(f"ema_{w}", w - 1, _recursive_warmup(_ema_decay(w)), relative=True)
    for w in config.sma_windows:
        add(f"sma_{w}", w - 1, relative=True)
    if config.atr_window is not None:
        w = config.atr_window
        add(f"atr_{w}", w - 1, _recursive_warmup(_wilder_decay(w)), relative=True)
    if config.adx_window is not None:
        w = config.adx_window
        add(f"adx_{w}", 2 * w - 1, _recursive_warmup(_wilder_decay(w), _wilder_decay(w)))
        add(f"plus_di_{w}", w, _recursive_warmup(_wilder_decay(w)))
        add(f"minus_di_{w}", w, _recursive_warmup(_wilder_decay(w)))
    if config.stoch is not None:
        w, s = config.stoch
        add(f"stoch_k_{w}", w - 1)
        add(f"stoch_d_{w}_{s}", w + s - 2)
    if config.mfi_window is not None:
        add(f"mfi_{config.mfi_window}", config.mfi_window)
    if config.cci_window is not None:
        add(f"cci_{config.cci_window}", config.cci_window - 1)
    if config.vwap_window is not None:
        add(f"vwap_{config.vwap_window}", config.vwap_window - 1, relative=True)
    if config.obv_window is not None:
        add(f"obv_{config.obv_window}", config.obv_window)
    for name in SHAPE_COLUMNS:
        add(name, 1 if name == "gap" else 0)
    for k in config.return_lags:
        add(f"log_return_{k}", k)
    for w in config.volatility_windows:
        add(f"volatility_{w}", w)
    add("volume_change_1", 1)
    if config.volume_avg_window is not None:
        add(f"volume_to_avg_{config.volume_avg_window}", config.volume_avg_window - 1)
    for name in TIME_COLUMNS + (SENTIMENT_COLUMNS if config.include_sentiment else []):
        add(name, 0)
    names = [f.name for f in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"FeatureConfig produces duplicate columns {duplicates}; remove repeated windows")
    return out


def _relative(level: np.ndarray, close: np.ndarray) -> np.ndarray:
    rel = level / close
    rel -= 1.0
    return rel


def _compute_builtin(x: _Inputs, config: FeatureConfig) -> dict[str, np.ndarray]:
    """All built-in columns except sentiment, as float64 arrays."""
    o, h, lo, c, v = x.open, x.high, x.low, x.close, x.volume
    cols: dict[str, np.ndarray] = {}
    for w in config.rsi_windows:
        cols[f"rsi_{w}"] = ind.rsi(c, w)
    if config.macd is not None:
        suffix = "_".join(map(str, config.macd))
        line, signal, hist = ind.macd(c, *config.macd)
        for name, values in (("macd", line), ("macd_signal", signal), ("macd_hist", hist)):
            cols[f"{name}_{suffix}"] = values
            cols[f"{name}_{suffix}_rel"] = values / c
    if config.bollinger is not None:
        w, n_std = config.bollinger
        bands = ind.bollinger(c, w, n_std, phase=x.phase)
        cols[f"bb_upper_{w}"], cols[f"bb_lower_{w}"] = bands["upper"], bands["lower"]
        cols[f"bb_upper_{w}_rel"], cols[f"bb_lower_{w}_rel"] = (
            _relative(bands["upper"], c),
            _relative(bands["lower"], c),
        )
        cols[f"bb_pctb_{w}"], cols[f"bb_width_{w}"] = bands["pctb"], bands["width"]
    for w in config.ema_windows:
        cols[f"ema_{w}"] = ind.ema(c, w)
        cols[f"ema_{w}_rel"] = _relative(cols[f"ema_{w}"], c)
    for w in config.sma_windows:
        cols[f"sma_{w}"] = ind.sma(c, w)
        cols[f"sma_{w}_rel"] = _relative(cols[f"sma_{w}"], c)
    if config.atr_window is not None:
        w = config.atr_window
        cols[f"atr_{w}"] = ind.atr(h, lo, c, w)
        cols[f"atr_{w}_rel"] = cols[f"atr_{w}"] / c
    if config.adx_window is not None:
        w = config.adx_window
        cols[f"adx_{w}"], cols[f"plus_di_{w}"], cols[f"minus_di_{w}"] = ind.adx(h, lo, c, w)
    if config.stoch is not None:
        w, s = config.stoch
        cols[f"stoch_k_{w}"], cols[f"stoch_d_{w}_{s}"] = ind.stochastic(h, lo, c, w, s)
    if config.mfi_window is not None:
        cols[f"mfi_{config.mfi_window}"] = ind.mfi(h, lo, c, v, config.mfi_window)
    if config.cci_window is not None:
        cols[f"cci_{config.cci_window}"] = ind.cci(h, lo, c, config.cci_window)
    if config.vwap_window is not None:
        w = config.vwap_window
        cols[f"vwap_{w}"] = ind.rolling_vwap(h, lo, c, v, w)
        cols[f"vwap_{w}_rel"] = _relative(cols[f"vwap_{w}"], c)
    if config.obv_window is not None:
        cols[f"obv_{config.obv_window}"] = ind.rolling_obv(c, v, config.obv_window)
    cols.update(_candle_shape(o, h, lo, c))
    log_close = np.log(c)
    for k in config.return_lags:
        cols[f"log_return_{k}"] = _lagged_difference(log_close, k)
    for w in config.volatility_windows:
        cols[f"volatility_{w}"] = ind.rolling_mean_std(
            _lagged_difference(log_close, 1), w, ddof=1, phase=x.phase
        )[1]
    previous = np.empty_like(v)
    previous[:1] = np.nan
    previous[1:] = v[:-1]
    cols["volume_change_1"] = ind.safe_divide(v - previous, v + previous)
    if config.volume_avg_window is not None:
        cols[f"volume_to_avg_{config.volume_avg_window}"] = ind.safe_divide(
            v, ind.rolling_mean(v, config.volume_avg_window), 1.0
        )
    cols.update(_time_features(x.times_ns))
    return cols


def _lagged_difference(values: np.ndarray, lag: int) -> np.ndarray:
    out = np.empty_like(values)
    out[:lag] = np.nan
    np.subtract(values[lag:], values[:-lag], out=out[lag:])
    return out


def _candle_shape(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    """Scale-free candle anatomy (fractions of the open price); no inf, 0/0 handled as documented."""
    body = c - o
    top, bottom = np.maximum(o, c), np.minimum(o, c)
    upper, lower, span = h - top, bottom - lo, h - lo
    gap = np.empty_like(o)
    gap[:1] = np.nan
    np.divide(o[1:], c[:-1], out=gap[1:])
    gap[1:] -= 1.0
    return {
        "body_size": np.abs(body) / o,
        "body_direction": np.sign(body),
        "upper_wick": upper / o,
        "lower_wick": lower / o,
        "wick_ratio": ind.safe_divide(upper, upper + lower, 0.5),
        "body_to_range": ind.safe_divide(np.abs(body), span, 0.0),
        "gap": gap,
        "range": span / o,
    }


def _time_features(times_ns: np.ndarray) -> dict[str, np.ndarray]:
    """Time of day and position in the week of the open time on the unit circle (UTC)."""
    day_ns, week_ns = 1440 * _MINUTE_NS, 7 * 1440 * _MINUTE_NS
    day_angle = (times_ns % day_ns) * (2.0 * np.pi / day_ns)
    # 1970-01-01 was a Thursday: shift by 3 days so that Monday 00:00 is angle 0.
    week_angle = ((times_ns + 3 * day_ns) % week_ns) * (2.0 * np.pi / week_ns)
    return {
        "tod_sin": np.sin(day_angle),
        "tod_cos": np.cos(day_angle),
        "dow_sin": np.sin(week_angle),
        "dow_cos": np.cos(week_angle),
    }


# --------------------------------------------------------------------------- sentiment


def _prepare_sentiment(sentiment_hourly: pd.DataFrame, symbol: str | None) -> pd.DataFrame:
    """Validated hourly sentiment of one symbol, sorted by hour, with ns-resolution UTC hours."""
    missing = [c for c in SENTIMENT_INPUT_COLUMNS if c not in sentiment_hourly.columns]
    if missing:
        raise ValueError(f"sentiment_hourly: missing column(s) {missing}")
    frame = sentiment_hourly
    if "symbol" in frame.columns:
        if symbol is not None:
            frame = frame[frame["symbol"] == symbol]
        elif frame["symbol"].nunique() > 1:
            raise ValueError(
                f"sentiment_hourly holds several symbols {sorted(frame['symbol'].unique())[:5]}; pass symbol="
            )
    frame = frame.reset_index(drop=True)
    hours = frame["hour"]
    if not isinstance(hours.dtype, pd.DatetimeTZDtype):
        raise ValueError(f"sentiment_hourly: field 'hour' must be timezone-aware UTC, got {hours.dtype}")
    hours_ns = pd.DatetimeIndex(hours).tz_convert("UTC").as_unit("ns")
    unaligned = np.flatnonzero(hours_ns.asi8 % (60 * _MINUTE_NS) != 0)
    if unaligned.size:
        i = int(unaligned[0])
        raise ValueError(
            f"sentiment_hourly: row {i}, field 'hour': {hours.iloc[i]} is not the start of an hour"
        )
    duplicated = np.flatnonzero(hours_ns.duplicated())
    if duplicated.size:
        i = int(duplicated[0])
        raise ValueError(f"sentiment_hourly: row {i}, field 'hour': duplicate hour {hours.iloc[i]}")
    count = pd.to_numeric(frame["article_count"], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(count) | (count < 0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"sentiment_hourly: row {i}, field 'article_count': "
            f"not a count: {frame['article_count'].iloc[i]!r}"
        )
    values = {"sentiment_count_1h": count}
    for source, target in (
        ("mean_sentiment", "sentiment_mean_1h"),
        ("positive_share", "sentiment_pos_share_1h"),
        ("negative_share", "sentiment_neg_share_1h"),
    ):
        column = pd.to_numeric(frame[source], errors="coerce").to_numpy(dtype=np.float64)
        column = np.where(count == 0, 0.0, column)  # an hour without articles carries no sentiment
        bad = np.flatnonzero(~np.isfinite(column))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"sentiment_hourly: row {i}, field {source!r}: not a finite number: {frame[source].iloc[i]!r}"
            )
        values[target] = column
    out = pd.DataFrame({"hour": pd.Series(hours_ns, dtype="datetime64[ns, UTC]"), **values})
    return out.sort_values("hour", kind="stable").reset_index(drop=True)


def _sentiment_asof(
    times_ns: np.ndarray, sentiment: pd.DataFrame, step_ns: int = _MINUTE_NS
) -> dict[str, np.ndarray]:
    """The last hour completed when each candle closes; zeros where that hour had no articles."""
    # Hour H is complete at H + 1h; candle t closes at t + step. H is visible iff H <= t + step - 1h,
    # and the last completed hour is the one with t + step - 1h - H in [0, 1h).
    cutoff = pd.DataFrame(
        {"cutoff": pd.to_datetime(times_ns + step_ns - 60 * _MINUTE_NS, unit="ns", utc=True)}
    )
    merged = pd.merge_asof(
        cutoff,
        sentiment,
        left_on="cutoff",
        right_on="hour",
        direction="backward",
        allow_exact_matches=True,
        tolerance=_HOUR - pd.Timedelta(1, "ns"),
    )
    return {name: merged[name].fillna(0.0).to_numpy(dtype=np.float64) for name in SENTIMENT_COLUMNS}


# --------------------------------------------------------------------------- custom features


def load_custom_feature(path: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Import the function at ``"pkg.mod:func"`` or ``"pkg.mod.func"``; ValueError naming the path."""
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"custom feature path must be a non-empty string, got {path!r}")
    if ":" in path:
        module_name, _, attribute = path.partition(":")
    else:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(
            f"custom feature {path!r}: expected 'package.module:function' or 'package.module.function'"
        )
    try:
        target = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"custom feature {path!r}: cannot import module {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(
                f"custom feature {path!r}: {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not callable(target):
        raise ValueError(f"custom feature {path!r}: {type(target).__name__} object is not callable")
    return target


def _run_custom(path: str, func: Callable, candles: pd.DataFrame, taken: set[str]) -> pd.DataFrame:
    """Call a custom feature function and check its output (new columns, one row per candle)."""
    try:
        result = func(candles)
    except Exception as exc:
        raise ValueError(f"custom feature {path!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(result, pd.DataFrame):
        raise ValueError(f"custom feature {path!r} must return a DataFrame, got {type(result).__name__}")
    if len(result) != len(candles):
        raise ValueError(f"custom feature {path!r} returned {len(result)} rows for {len(candles)} candles")
    if not result.index.equals(candles.index):
        raise ValueError(f"custom feature {path!r} returned an index that differs from the candle frame's")
    names = [str(c) for c in result.columns]
    collisions = sorted({n for n in names if n in taken or names.count(n) > 1})
    if collisions:
        raise ValueError(
            f"custom feature {path!r}: column(s) {collisions} collide with existing feature columns"
        )
    return result


@dataclass(frozen=True)
class _Custom:
    path: str
    func: Callable[[pd.DataFrame], pd.DataFrame]
    columns: tuple[str, ...]
    lookback: int


def _custom_features(config: FeatureConfig) -> list[_Custom]:
    """The configured custom functions with their columns (declared, or found on an empty frame)."""
    taken = {"open_time", *(f.name for f in _features(config))}
    out: list[_Custom] = []
    for path in config.custom:
        func = load_custom_feature(path)
        declared = getattr(func, "feature_columns", None)
        if declared is None:
            columns = [str(c) for c in _run_custom(path, func, empty_candles(), taken).columns]
        else:
            columns = [str(c) for c in declared]
        clash = sorted({c for c in columns if c in taken or columns.count(c) > 1})
        if clash:
            raise ValueError(
                f"custom feature {path!r}: column(s) {clash} collide with existing feature columns"
            )
        lookback = getattr(func, "lookback_minutes", 0)
        if isinstance(lookback, bool) or not isinstance(lookback, (int, np.integer)) or lookback < 0:
            raise ValueError(
                f"custom feature {path!r}: lookback_minutes must be a non-negative integer, got {lookback!r}"
            )
        taken.update(columns)
        out.append(_Custom(path, func, tuple(columns), int(lookback)))
    return out


# --------------------------------------------------------------------------- public API


def feature_columns(config: FeatureConfig = FeatureConfig()) -> list[str]:
    """The feature columns :func:`compute_features` returns after ``open_time``, in order."""
    return [f.name for f in _features(config)] + [
        c for custom in _custom_features(config) for c in custom.columns
    ]


def model_feature_columns(config: FeatureConfig = FeatureConfig()) -> list[str]:
    """The scale-free columns models may use: all feature columns except raw price levels."""
    builtin = [f.name for f in _features(config) if not f.price_level]
    return builtin + [c for custom in _custom_features(config) for c in custom.columns]


def feature_lookbacks(config: FeatureConfig = FeatureConfig()) -> dict[str, int]:
    """Candles before ``t`` each column needs to be complete (recursive warm-up included)."""
    out = {f.name: f.lookback for f in _features(config)}
    for custom in _custom_features(config):
        out.update(dict.fromkeys(custom.columns, custom.lookback))
    return out


def recursive_feature_columns(config: FeatureConfig = FeatureConfig()) -> list[str]:
    """Columns that carry recursive state (EMA, MACD, RSI, ATR, ADX/DI): partition results match the
    full history within the recursive tolerance rather than exactly."""
    return [f.name for f in _features(config) if f.recursive_warmup]


def feature_config_from_settings(
    values: Mapping[str, Any], prefix: str = "settings.features"
) -> FeatureConfig:
    """A validated :class:`FeatureConfig` from settings values (JSON / YAML: lists for tuples; missing
    keys keep their defaults). Errors name ``<prefix>.<key>``; custom plug-ins are imported and probed."""
    fields = FeatureConfig.__dataclass_fields__
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{prefix}.{unknown[0]}: unknown feature setting; known: {sorted(fields)}")
    config_values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    bollinger = config_values.get("bollinger")
    if bollinger is not None and len(bollinger) == 2:
        window, n_std = bollinger
        config_values["bollinger"] = (int(window) if float(window).is_integer() else window, n_std)
    try:
        config = FeatureConfig(**config_values)
        model_feature_columns(config)  # imports and probes the custom plug-ins
    except (TypeError, ValueError) as exc:
        key = next((n for n in config_values if f"FeatureConfig.{n}" in str(exc)), "custom")
        raise ValueError(f"{prefix}.{key}: {exc}") from exc
    return config


def required_warmup_candles(config: FeatureConfig = FeatureConfig()) -> int:
    """Candles of history (of any interval: features count rows) before a row that make every feature
    of the row complete.

    Windowed features need their window; recursive ones additionally need enough candles that the
    state before the warm-up weighs at most ``RECURSIVE_TOLERANCE`` (cascades such as MACD's signal
    line or ADX add their stages' warm-ups). 525 candles for the default config (ADX 14).
    """
    return max(feature_lookbacks(config).values(), default=0)


def _candle_arrays(candles: pd.DataFrame, source: str, interval: str = "1m") -> _Inputs:
    """Candle columns as float64 arrays (checked: present, finite, open times increasing, on the
    interval's grid)."""
    step_ns = int(interval_timedelta(interval).value)
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise CandleValidationError(source, "-", ",".join(missing), "missing column(s)")
    times = candles["open_time"]
    if not isinstance(times.dtype, pd.DatetimeTZDtype):
        raise CandleValidationError(
            source, "-", "open_time", f"must be timezone-aware UTC, got {times.dtype}"
        )
    times_ns = pd.DatetimeIndex(times).tz_convert("UTC").as_unit("ns").asi8
    not_increasing = np.flatnonzero(np.diff(times_ns) <= 0)
    if not_increasing.size:
        i = int(not_increasing[0]) + 1
        raise CandleValidationError(
            source, i, "open_time", f"{times.iloc[i]} does not follow {times.iloc[i - 1]}"
        )
    unaligned = np.flatnonzero(times_ns % step_ns != 0)
    if unaligned.size:
        i = int(unaligned[0])
        what = "a whole minute" if interval == "1m" else f"on the {interval} grid"
        raise CandleValidationError(source, i, "open_time", f"{times.iloc[i]} is not {what}")
    arrays = {}
    for name in ("open", "high", "low", "close", "volume"):
        values = candles[name].to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            raise CandleValidationError(source, i, name, f"not a finite number: {values[i]!r}")
        arrays[name] = values
    return _Inputs(times_ns=times_ns, step_ns=step_ns, **arrays)


def compute_features(
    candles: pd.DataFrame,
    config: FeatureConfig = FeatureConfig(),
    sentiment_hourly: pd.DataFrame | None = None,
    symbol: str | None = None,
    interval: str = "1m",
) -> pd.DataFrame:
    """One row per candle: ``open_time`` and :func:`feature_columns` (float64; NaN during warm-up).

    Windows count candles of ``interval`` (``rsi_windows=(14,)`` on ``1h`` candles is a 14-hour RSI);
    a candle is known at its close, ``open_time + interval`` (the sentiment as-of uses that).

    ``candles`` is a canonical candle frame of one symbol with increasing, minute-aligned open
    times. With ``config.include_sentiment`` a ``sentiment_hourly`` frame is required (pass an
    empty one for "no articles"); ``symbol`` selects its rows when it holds several symbols.
    """
    x = _candle_arrays(candles, "compute_features", interval)
    columns = _compute_builtin(x, config)
    if config.include_sentiment:
        if sentiment_hourly is None:
            raise ValueError(
                "compute_features: include_sentiment=True needs sentiment_hourly (an empty frame means no "
                "articles); set FeatureConfig(include_sentiment=False) to leave sentiment out"
            )
        columns.update(_sentiment_asof(x.times_ns, _prepare_sentiment(sentiment_hourly, symbol), x.step_ns))
    ordered = {"open_time": candles["open_time"].reset_index(drop=True)}
    ordered.update((f.name, columns[f.name]) for f in _features(config))
    frame = pd.DataFrame(ordered, copy=False)
    customs = _custom_features(config)
    if customs:
        base = candles[CANDLE_COLUMNS].reset_index(drop=True)
        taken = set(frame.columns)
        for custom in customs:
            result = _run_custom(custom.path, custom.func, base, taken)
            if [str(c) for c in result.columns] != list(custom.columns):
                raise ValueError(
                    f"custom feature {custom.path!r} returned columns {list(result.columns)}, "
                    f"expected {list(custom.columns)}"
                )
            taken.update(custom.columns)
            for name in result.columns:
                frame[str(name)] = result[name].to_numpy(dtype=np.float64)
    return frame


def compute_partition_features(
    candles_with_lookback: pd.DataFrame,
    day_start: pd.Timestamp,
    day_end: pd.Timestamp,
    config: FeatureConfig = FeatureConfig(),
    sentiment_hourly: pd.DataFrame | None = None,
    symbol: str | None = None,
    interval: str = "1m",
) -> pd.DataFrame:
    """Features of the candles in ``[day_start, day_end)``, computed with the warm-up before them.

    Uses the ``required_warmup_candles(config)`` candles preceding ``day_start`` (that is
    ``[day_start - warmup, day_start)`` when no minute is missing) plus the day, and returns only
    the day's rows. Rows whose warm-up reaches before the first candle given (start of history)
    are dropped and the count is logged; the result then matches full-history features as
    described in the module docstring.
    """
    day_start, day_end = _utc(day_start, "day_start"), _utc(day_end, "day_end")
    if day_end <= day_start:
        raise ValueError(f"day_end {day_end} must be after day_start {day_start}")
    warmup = required_warmup_candles(config)
    times = pd.DatetimeIndex(candles_with_lookback["open_time"]).tz_convert("UTC")
    first, stop = int(times.searchsorted(day_start)), int(times.searchsorted(day_end))
    begin = max(0, first - warmup)
    window = candles_with_lookback.iloc[begin:stop].reset_index(drop=True)
    features = compute_features(
        window, config, sentiment_hourly=sentiment_hourly, symbol=symbol, interval=interval
    )
    keep_from = max(first - begin, warmup)  # rows before `warmup` lack their full warm-up
    dropped = max(0, min(keep_from, len(window)) - (first - begin))
    if dropped:
        logger.warning(
            "features %s..%s: dropped %d of %d rows whose %d-candle warm-up reaches before the first candle",
            day_start,
            day_end,
            dropped,
            stop - first,
            warmup,
        )
    return features.iloc[keep_from:].reset_index(drop=True)


def _utc(value, name: str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got {value!r}")
    return stamp.tz_convert("UTC")


def gap_mask(open_times, lookback_minutes: int, interval: str = "1m") -> np.ndarray:
    """True for rows whose span ``[t - lookback_minutes, t]`` misses a minute among ``open_times``.

    ``open_times`` must be increasing and minute-aligned. Rows near the start of the given times
    whose lookback reaches before the first candle count as incomplete too. For other intervals
    read "minute" as "candle of ``interval``" (the lookback counts candles).
    """
    step_ns = int(interval_timedelta(interval).value)
    if (
        isinstance(lookback_minutes, bool)
        or int(lookback_minutes) != lookback_minutes
        or lookback_minutes < 0
    ):
        raise ValueError(f"lookback_minutes must be a non-negative integer, got {lookback_minutes!r}")
    index = pd.DatetimeIndex(open_times)
    if index.tz is None:
        raise ValueError("gap_mask: open_times must be timezone-aware (UTC)")
    ns = index.as_unit("ns").asi8
    if np.any(ns % step_ns != 0):
        raise ValueError(
            "gap_mask: open_times must be whole minutes"
            if interval == "1m"
            else f"gap_mask: open_times must lie on the {interval} grid"
        )
    minutes = ns // step_ns
    if np.any(np.diff(minutes) <= 0):
        raise ValueError("gap_mask: open_times must be strictly increasing")
    first_needed = np.searchsorted(minutes, minutes - int(lookback_minutes), side="left")
    present = np.arange(minutes.shape[0]) - first_needed + 1
    return present != int(lookback_minutes) + 1
