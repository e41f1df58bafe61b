"""Offline news: SIMULATED headlines whose tone loosely follows the simulated market (not real news).

Used when no news API is configured, so the whole pipeline runs offline. Every article is marked
``simulated=True``, has source ``antmeter-simulator``, a ``sim://`` URL and a summary that says it is
simulated.

Model
-----
For each symbol, arrivals are a Poisson process (``rate_per_hour`` per hour) over the UTC day. At an
arrival time ``t`` the trailing return over ``lookback`` is computed from candles whose *close* time
is ``<= t`` only (causal: later candles cannot change the article), squashed with ``tanh`` and
perturbed with Gaussian noise; the result picks a positive, negative or neutral headline template.
All random draws are made up front in fixed amounts, so the output is a deterministic function of
(seed, day, symbol) and of the candles closed before each article.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Mapping

import numpy as np
import pandas as pd

from antmeter.market.candles import DayWindow, interval_timedelta, validate_candles
from antmeter.news.articles import articles_frame, base_asset, empty_articles

SIM_SOURCE = "antmeter-simulator"
SIM_NAMES = {
    "BTCUSDT": "Bitcoin",
    "ETHUSDT": "Ether",
    "SOLUSDT": "Solana",
    "BNBUSDT": "BNB",
    "XRPUSDT": "XRP",
}

HEADLINE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "positive": (
        "{name} rallies as {reason}",
        "{name} surges as {reason}",
        "Traders turn bullish on {name} as {reason}",
        "{name} climbs as {reason}",
        "{name} rebounds as {reason}",
    ),
    "negative": (
        "{name} slides amid {reason}",
        "{name} tumbles as {reason}",
        "Traders turn bearish on {name} amid {reason}",
        "{name} plunges as {reason}",
        "{name} sinks amid {reason}",
    ),
    "neutral": (
        "{name} trades sideways ahead of {reason}",
        "{name} holds near recent levels ahead of {reason}",
        "{name} range-bound as traders look to {reason}",
    ),
}
HEADLINE_REASONS: dict[str, tuple[str, ...]] = {
    "positive": (
        "ETF inflows accelerate",
        "institutional adoption grows",
        "optimism spreads across crypto markets",
        "a short squeeze lifts derivatives desks",
    ),
    "negative": (
        "liquidations mount",
        "ETF outflows deepen",
        "regulatory fears weigh on crypto",
        "a wave of selling pressure",
    ),
    "neutral": ("US inflation data", "the weekly close", "options expiry", "Fed minutes"),
}
DEFAULT_LOOKBACK = pd.Timedelta(minutes=60)


def simulate_news(
    symbol_candles: Mapping[str, pd.DataFrame],
    day: dt.date | str,
    seed: int,
    rate_per_hour: float = 3.0,
    lookback: pd.Timedelta = DEFAULT_LOOKBACK,
    tone_scale: float = 0.005,
    tone_noise: float = 0.5,
    tone_threshold: float = 0.4,
    interval: str = "1m",
    now: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """SIMULATED articles for the UTC ``day``, one Poisson stream per symbol (article frame, unscored).

    ``now``: the pipeline's clock the candles are checked against (default: the wall clock).
    ``tone_scale`` is the trailing return that counts as a strong move (``tanh(return / tone_scale)``);
    ``tone_noise`` the standard deviation of the noise added to it; ``|signal| > tone_threshold``
    makes a headline positive/negative, anything else neutral.
    """
    if seed < 0:
        raise ValueError(f"simulate_news: seed must be a non-negative integer, got {seed}")
    if rate_per_hour < 0:
        raise ValueError(f"simulate_news: rate_per_hour must be >= 0, got {rate_per_hour}")
    if lookback <= pd.Timedelta(0):
        raise ValueError(f"simulate_news: lookback must be positive, got {lookback}")
    window = DayWindow.of(day)
    records: list[dict] = []
    for symbol in sorted(symbol_candles):
        candles = validate_candles(
            symbol_candles[symbol], source=f"simulate_news[{symbol}]", interval=interval, now=now
        )
        records.extend(
            _symbol_articles(
                symbol,
                candles,
                window,
                seed,
                rate_per_hour,
                lookback,
                tone_scale,
                tone_noise,
                tone_threshold,
                interval,
            )
        )
    if not records:
        return empty_articles()
    return articles_frame(records).sort_values(["first_seen_at", "url"], kind="stable").reset_index(drop=True)


def _symbol_rng(seed: int, window: DayWindow, symbol: str) -> np.random.Generator:
    """A generator that depends only on (seed, day, symbol) — stable across processes and symbol sets."""
    return np.random.default_rng([seed, window.start.toordinal(), zlib.crc32(symbol.encode("utf-8"))])


def _symbol_articles(
    symbol: str,
    candles: pd.DataFrame,
    window: DayWindow,
    seed: int,
    rate_per_hour: float,
    lookback: pd.Timedelta,
    tone_scale: float,
    tone_noise: float,
    tone_threshold: float,
    interval: str,
) -> list[dict]:
    rng = _symbol_rng(seed, window, symbol)
    counts = rng.poisson(rate_per_hour, size=24)
    n = int(counts.sum())
    offsets_s = np.floor(np.repeat(np.arange(24) * 3600.0, counts) + rng.uniform(0.0, 3600.0, size=n))
    noise = rng.normal(0.0, tone_noise, size=n)
    template_u, reason_u = rng.random(n), rng.random(n)
    delay_s = np.floor(rng.uniform(0.0, 600.0, size=n))

    seen = window.start + pd.to_timedelta(np.sort(offsets_s), unit="s")
    returns = trailing_returns(candles, seen, lookback, interval)
    signal = np.tanh(np.nan_to_num(returns / tone_scale, nan=0.0)) + noise
    tones = np.where(
        signal > tone_threshold, "positive", np.where(signal < -tone_threshold, "negative", "neutral")
    )
    tones = np.where(np.isnan(returns), "neutral", tones)  # no market information: no tone

    name = SIM_NAMES.get(symbol, base_asset(symbol))
    minutes = int(lookback / pd.Timedelta(minutes=1))
    records = []
    for i, (first_seen, tone, ret) in enumerate(zip(seen, tones, returns, strict=True)):
        templates, reasons = HEADLINE_TEMPLATES[tone], HEADLINE_REASONS[tone]
        title = templates[int(template_u[i] * len(templates))].format(
            name=name, reason=reasons[int(reason_u[i] * len(reasons))]
        )
        move = "unavailable" if np.isnan(ret) else f"{ret:+.2%}"
        records.append(
            {
                "url": f"sim://antmeter/{symbol}/{first_seen:%Y%m%dT%H%M%SZ}/{i}",
                "title": title,
                "summary": f"Simulated by Antmeter from the trailing {minutes}-minute return of {symbol} ({move}).",
                "source": SIM_SOURCE,
                "published_at": first_seen - pd.Timedelta(seconds=float(delay_s[i])),
                "first_seen_at": first_seen,
                "symbols": symbol,
                "simulated": True,
            }
        )
    return records


def trailing_returns(
    candles: pd.DataFrame, at: pd.DatetimeIndex, lookback: pd.Timedelta, interval: str = "1m"
) -> np.ndarray:
    """Close-to-close return over ``lookback`` as known at each time in ``at`` (NaN without data).

    Uses the last candle closed at or before ``t`` and the last closed at or before ``t - lookback``;
    candles closing after ``t`` are never read.
    """
    close_times = (candles["open_time"] + interval_timedelta(interval)).to_numpy(dtype="datetime64[ns]")
    closes = candles["close"].to_numpy(dtype="float64")
    times = pd.DatetimeIndex(at).tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ns]")
    now_idx = np.searchsorted(close_times, times, side="right") - 1
    then_idx = np.searchsorted(close_times, times - lookback.to_timedelta64(), side="right") - 1
    valid = (then_idx >= 0) & (now_idx > then_idx)
    out = np.full(len(times), np.nan)
    out[valid] = closes[now_idx[valid]] / closes[then_idx[valid]] - 1.0
    return out
