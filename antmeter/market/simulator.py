"""Embedded market simulator: realistic-looking minute candles with a planted, documented signal.

The default candle source of Antmeter. Everything is a deterministic function of
``(config, symbol, day)``: days are chained from ``anchor_date`` (a day's first open is the previous
day's last close; volatility, regimes and the signal state carry over) and each day draws its
randomness from its own generators, seeded by a stable hash (``hashlib.blake2b``) of
``(seed, symbol, day)``. End-of-day states are memoised, so days can be asked for in any order.

Model (one step per minute ``t``; all returns are log returns)
------------------------------------------------------------
* **Return**: ``r_t = sigma_t * (a_t + eps_t) + J_t``. ``a_t`` is the predictable drift in units of
  volatility; ``eps_t`` is unit-variance Student-t noise (``tail_dof``), a mix of a market-wide draw
  shared by every symbol of the same seed and day (weight ``market_correlation``) and a
  symbol-specific draw, so symbols are correlated.
* **Volatility**: ``sigma_t = base_vol(symbol) * season(minute of day) * weekend(day)
  * regime_mult(V_t) * exp(hs_t + hf_t - c)``. ``season`` is an intraday curve (Asia open ~01:00,
  quiet ~05:00, Europe open ~08:30, US-open peak ~14:30 UTC); ``weekend`` damps Saturday and Sunday;
  ``V_t`` is a two-state Markov volatility regime (calm / turbulent, geometric durations);
  ``hs``, ``hf`` are slow and fast Gaussian AR(1) log-volatility components (stochastic volatility:
  fat tails, volatility clustering); ``c`` centres ``E[exp(2h)]`` at one. The minute after a jump,
  ``hf`` is kicked up by ``jump_vol_kick`` (aftershocks).
* **Jumps**: with probability ``jump_rate_per_day / 1440`` per minute, ``J_t = jump_scale * sigma_t
  * N(0, 1)``, else 0 (symmetric).
* **Predictable drift**: ``a_t = delta * D_t + g_t * (mf_{t-1} - ms_{t-1})`` where
  - ``z_t = a_t + eps_t + clip(J_t / sigma_t, -3, 3)`` is the standardised return (jumps capped at
    3 sigma) and ``mf``, ``ms`` are its fast and slow exponentially weighted averages,
    ``mf_t = lf * mf_{t-1} + (1 - lf) * z_t`` (half-life ``signal_fast_halflife_min``) and likewise
    ``ms`` with ``ls`` (``signal_slow_halflife_min``): a MACD-like oscillator of past returns divided
    by their volatility, i.e. an observable that a model can estimate from past candles;
  - ``g_t = signal_strength``: a move continues for a few minutes (fast average) and is given back
    later (slow average). Because the two averages' weights both sum to one, a shock's long-run
    price impact is unchanged, so multi-hour returns stay close to a random walk, while minutes
    ahead are partly predictable. From ``signal_flip_at`` on, ``g_t = -signal_strength``
    (the relation to the observable flips: a regime change for drift monitoring);
  - ``D_t`` in {-1 bear, 0 neutral, +1 bull} is a persistent drift regime: each minute, with
    probability ``q = 1 / drift_regime_mean_duration_min``, it is redrawn from {-1: 1/4, 0: 1/2,
    +1: 1/4}, so ``E[D_{t+j} | D_t] = (1 - q)^j D_t``; ``delta = drift_regime_strength``;
  - ``predictable=False`` sets ``delta = g = 0``: returns are a martingale (negative control), with
    exactly the same noise, volatility, regimes and jumps as the predictable run of that seed.
  Given the exogenous input ``u_t = delta D_t + eps_t + capped jump``, ``(mf, ms)`` is a linear
  state-space system (a stable 2nd-order filter; the config rejects unstable settings).
* **Prices**: ``log p_t = log p_{t-1} + r_t``; close = ``p_t`` rounded to the symbol's tick grid (so
  exact zero moves occur now and then); open = previous close; high/low = the maximum/minimum of a
  Brownian bridge from ``log p_{t-1}`` to ``log p_t`` with volatility ``sigma_t`` (sampled exactly
  from the bridge-extreme distribution), on the same grid.
* **Volume**: ``base_volume * season^1.5 * weekend_volume * (stochastic vol factor)^0.8
  * (0.25 + 0.75 |z_t| / 0.8) * lognormal noise``: seasonal, higher when turbulent and on big moves.

Symbols: BTCUSDT starts at 42,000 and ETHUSDT at 2,300 on ``anchor_date`` (ticks 0.01); any other
symbol gets a base price (0.1 to 1,000, about five significant digits), volatility and volume
derived from a hash of its name.

Planted chart patterns (``plant_patterns``, off by default)
-----------------------------------------------------------
Templates (double top/bottom, head and shoulders and its inverse; :data:`PATTERN_TEMPLATES`) are
added to the log price over random, non-overlapping 20-40 minute spans, about one every
``pattern_mean_gap_min`` minutes, with amplitude ``pattern_strength`` x volatility x sqrt(length).
Each template is 0 at both ends, so prices rejoin the unplanted path after a span; the draws come
from their own generator, so everything else is identical with and without planting.
``SimulatedDay.patterns`` lists the spans (the ground truth of the pattern classifiers).

Hidden state and the oracle
---------------------------
``SimulatedDay.hidden`` has one row per candle with the state *at the candle's close* (when the
candle becomes known): ``momentum_fast`` ``mf_t``, ``momentum_slow`` ``ms_t``, ``momentum``
``mf_t - ms_t``, ``drift_regime`` ``D_t``, ``vol_regime``, ``regime`` (e.g. ``"calm/bull"``),
``volatility`` ``sigma_t``, ``jump``, the parameters in effect (``signal_gain`` ``g_t``,
``fast_decay`` ``lf``, ``slow_decay`` ``ls``, ``drift_strength`` ``delta``, ``drift_persistence``
``1 - q``, ``jump_variance``), and ``expected_return = sigma_t * (delta (1 - q) D_t + g_t (mf_t -
ms_t))``: the expected log return of the *next* minute (volatility held at ``sigma_t``).

``oracle_probability_up`` propagates the conditional mean of the drift exactly through the linear
system (``E[D]`` decays by ``1 - q`` a minute; ``E[(mf, ms)]`` follows the filter with zero-mean
input) and takes the conditional variance of the ``h``-minute standardised return from the exact
impulse response (each innovation moves the price now and, through the averages, later) plus the
jump variance; it returns ``Phi(mean / sd)``. Approximations: volatility is held constant over the
horizon (it matters for the direction only when the drift changes sign within the horizon), the
sum of Student-t innovations is treated as normal and the capped jump feedback, drift-regime
uncertainty and the tick grid are left out of the variance (they affect the probability, not the
direction call), and ``g`` is the one in effect at the row (wrong only for rows within ``h``
minutes before ``signal_flip_at``). The call ``p > 0.5`` is thus (very nearly) Bayes-optimal and
``bayes_ceiling`` measures its accuracy against the realised labels.

What the defaults give (BTCUSDT, seed 7, 2024-01-01..20, measured by the unit tests' statistics)
---------------------------------------------------------------------------------------------
Excess kurtosis of 1-minute log returns ~38 (10 to 110 across seeds); autocorrelation of ``|r|``
0.24 / 0.21 / 0.19 / 0.16 at lags 1 / 5 / 10 / 30 minutes, of ``r`` at most ~0.1; hourly mean
``|r|`` max/min ~2.3 (peak 15:00 UTC), hourly volume ~3.1; corr(volume, ``|r|``) ~0.75; about one
jump a day. Oracle direction accuracy ~0.555 / 0.575 / 0.58 / 0.56-0.57 at 1 / 5 / 10 / 30 minutes
(0.567 to 0.588 at 5 minutes across seeds); ~0.50 with ``predictable=False``. The price of the
planted signal: returns are mildly positively autocorrelated, so the variance ratio
(h-minute variance over h times 1-minute variance) is ~1.3 at 5 minutes, ~1.8 at 30, ~1.3 at 4
hours and a day (the drift regimes); daily log-return std ~3.4%.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.signal import lfilter
from scipy.special import ndtr

from antmeter.market.candles import CANDLE_COLUMNS, interval_timedelta

MINUTES_PER_DAY = 1440
_NS_PER_MINUTE = 60_000_000_000
_JUMP_CAP = 3.0
_REGIME_DRAWS = 32  # uniforms reserved per day for volatility-regime switches
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_VOL_REGIME_NAMES = np.array(["calm", "turbulent"], dtype=object)
_DRIFT_REGIME_NAMES = np.array(["bear", "neutral", "bull"], dtype=object)
_ORACLE_COLUMNS = [
    "momentum_fast",
    "momentum_slow",
    "drift_regime",
    "signal_gain",
    "fast_decay",
    "slow_decay",
    "drift_strength",
    "drift_persistence",
    "jump_variance",
]
HIDDEN_COLUMNS = [
    "open_time",
    "expected_return",
    "volatility",
    "momentum",
    "vol_regime",
    "regime",
    "jump",
    *_ORACLE_COLUMNS,
]

# (symbol, base price at the anchor, base per-minute log-return volatility, base volume per minute, price decimals)
DEFAULT_SYMBOL_PROFILES: tuple[tuple[str, float, float, float, int], ...] = (
    ("BTCUSDT", 42_000.0, 6.0e-4, 25.0, 2),
    ("ETHUSDT", 2_300.0, 8.0e-4, 300.0, 2),
)


# --------------------------------------------------------------------------------------------------
# input checks


def _parse_day(value: object, setting: str) -> dt.date:
    """A UTC calendar day from a date, datetime, pandas Timestamp or ISO-8601 string."""
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(
                    f"{setting}: expected an ISO date such as '2024-01-01', got {value!r}"
                ) from None
    if isinstance(value, dt.datetime):  # includes pandas Timestamp
        stamp = pd.Timestamp(value)
        return (stamp.tz_convert("UTC") if stamp.tzinfo is not None else stamp).date()
    if isinstance(value, dt.date):
        return value
    raise ValueError(f"{setting}: expected an ISO date such as '2024-01-01', got {value!r}")


def _parse_utc_time(value: object, setting: str) -> pd.Timestamp:
    """A UTC timestamp from an ISO-8601 string (naive means UTC)."""
    try:
        stamp = pd.Timestamp(dt.datetime.fromisoformat(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(
            f"{setting}: expected an ISO UTC time such as '2024-01-10T12:00:00Z', got {value!r}"
        ) from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _check_symbol(symbol: object) -> None:
    if not isinstance(symbol, str) or not _SYMBOL_RE.match(symbol):
        raise ValueError(f"simulator: symbol must be 1-40 letters, digits or _.- characters, got {symbol!r}")


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _decay(halflife_min: float) -> float:
    """Per-minute decay factor of an average with this half-life."""
    return 0.5 ** (1.0 / halflife_min)


def _filter_polynomials(gain: float, fast: float, slow: float) -> tuple[np.ndarray, np.ndarray]:
    """Numerator and denominator (in the lag operator) of the filter from input ``u`` to ``z``.

    From ``z_t = g (mf_{t-1} - ms_{t-1}) + u_t``: ``(1 - lf L)(1 - ls L) z = (1 - lf L)(1 - ls L) u
    + g (ls - lf)(L - L^2) z``.
    """
    coupling = gain * (slow - fast)
    numerator = np.array([1.0, -(fast + slow), fast * slow])
    denominator = np.array([1.0, -(fast + slow) - coupling, fast * slow + coupling])
    return numerator, denominator


def _signal_is_stable(gain: float, fast: float, slow: float) -> bool:
    _, denominator = _filter_polynomials(gain, fast, slow)
    return bool(np.max(np.abs(np.roots(denominator))) < 0.999)


@dataclass(frozen=True)
class SimulatorConfig:
    """Settings of the market simulator (see the module docstring for the model).

    seed: base of every random draw. anchor_date: first simulated UTC day (ISO date); earlier days
    are an error. predictable: False removes the predictable drift entirely (negative control).
    signal_strength: gain ``g`` of the return oscillator (>= 0; the default gives a 5-minute oracle
    direction accuracy of about 0.58). signal_flip_at: ISO UTC time from which the gain is
    ``-signal_strength``. signal_fast_halflife_min < signal_slow_halflife_min: half-lives of the two
    averages of standardised returns. drift_regime_strength: bull/bear drift in volatility units
    per minute; drift_regime_mean_duration_min: mean time between drift-regime redraws.
    calm_mean_duration_min, turbulent_mean_duration_min: mean volatility-regime durations;
    turbulent_vol_multiplier: turbulent volatility relative to calm. slow_vol_std,
    slow_vol_halflife_min, fast_vol_std, fast_vol_halflife_min: stationary std and half-life of the
    two log-volatility components. tail_dof: Student-t degrees of freedom (> 2). jump_rate_per_day,
    jump_scale (sigmas), jump_vol_kick (added to the fast log-volatility after a jump).
    seasonality_strength: scale of the intraday curve (0 = flat). weekend_vol_factor,
    weekend_volume_factor: Saturday/Sunday damping. market_correlation: weight of the shared market
    noise, in ``[0, 1)``. symbol_profiles: ``(symbol, base_price, base_vol, base_volume,
    price_decimals)`` entries; other symbols get a profile derived from their name.
    """

    seed: int = 7
    anchor_date: str = "2024-01-01"
    predictable: bool = True
    signal_strength: float = 0.5
    signal_flip_at: str | None = None
    signal_fast_halflife_min: float = 4.0
    signal_slow_halflife_min: float = 30.0
    drift_regime_strength: float = 0.02
    drift_regime_mean_duration_min: float = 360.0
    calm_mean_duration_min: float = 2160.0
    turbulent_mean_duration_min: float = 360.0
    turbulent_vol_multiplier: float = 2.0
    slow_vol_std: float = 0.35
    slow_vol_halflife_min: float = 240.0
    fast_vol_std: float = 0.3
    fast_vol_halflife_min: float = 15.0
    tail_dof: float = 5.0
    jump_rate_per_day: float = 1.0
    jump_scale: float = 6.0
    jump_vol_kick: float = 0.7
    seasonality_strength: float = 1.0
    weekend_vol_factor: float = 0.8
    weekend_volume_factor: float = 0.6
    market_correlation: float = 0.5
    symbol_profiles: tuple[tuple[str, float, float, float, int], ...] = DEFAULT_SYMBOL_PROFILES
    plant_patterns: bool = False
    pattern_strength: float = 2.5
    pattern_mean_gap_min: float = 45.0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SimulatorConfig.seed must be a non-negative integer, got {self.seed!r}")
        _parse_day(self.anchor_date, "SimulatorConfig.anchor_date")
        if self.signal_flip_at is not None:
            _parse_utc_time(self.signal_flip_at, "SimulatorConfig.signal_flip_at")
        if not isinstance(self.predictable, bool):
            raise ValueError(f"SimulatorConfig.predictable must be True or False, got {self.predictable!r}")
        ranges = {  # name: (low, high, high included)
            "signal_strength": (0.0, 5.0, True),
            "drift_regime_strength": (0.0, 1.0, True),
            "market_correlation": (0.0, 1.0, False),
            "seasonality_strength": (0.0, 1.5, True),
            "weekend_vol_factor": (0.0, 10.0, True),
            "weekend_volume_factor": (0.0, 10.0, True),
            "jump_rate_per_day": (0.0, 1440.0, True),
            "jump_scale": (0.0, 100.0, True),
            "jump_vol_kick": (0.0, 5.0, True),
            "slow_vol_std": (0.0, 3.0, True),
            "fast_vol_std": (0.0, 3.0, True),
        }
        for name, (low, high, high_included) in ranges.items():
            value = getattr(self, name)
            if not (_is_real(value) and low <= value and (value <= high if high_included else value < high)):
                bracket = "]" if high_included else ")"
                raise ValueError(f"SimulatorConfig.{name} must be in [{low}, {high}{bracket}, got {value!r}")
        for name in (
            "signal_fast_halflife_min",
            "signal_slow_halflife_min",
            "drift_regime_mean_duration_min",
            "calm_mean_duration_min",
            "turbulent_mean_duration_min",
            "slow_vol_halflife_min",
            "fast_vol_halflife_min",
        ):
            value = getattr(self, name)
            if not (_is_real(value) and value >= 1.0):
                raise ValueError(f"SimulatorConfig.{name} must be a number >= 1 (minutes), got {value!r}")
        if self.signal_fast_halflife_min >= self.signal_slow_halflife_min:
            raise ValueError(
                "SimulatorConfig.signal_fast_halflife_min must be below signal_slow_halflife_min, got "
                f"{self.signal_fast_halflife_min} >= {self.signal_slow_halflife_min}"
            )
        fast, slow = _decay(self.signal_fast_halflife_min), _decay(self.signal_slow_halflife_min)
        if not (
            _signal_is_stable(self.signal_strength, fast, slow)
            and _signal_is_stable(-self.signal_strength, fast, slow)
        ):
            raise ValueError(
                f"SimulatorConfig.signal_strength {self.signal_strength} makes the signal filter unstable "
                "for these half-lives; use a smaller value"
            )
        if not (_is_real(self.turbulent_vol_multiplier) and self.turbulent_vol_multiplier > 0):
            raise ValueError(
                f"SimulatorConfig.turbulent_vol_multiplier must be > 0, got {self.turbulent_vol_multiplier!r}"
            )
        if not isinstance(self.plant_patterns, bool):
            raise ValueError(
                f"SimulatorConfig.plant_patterns must be True or False, got {self.plant_patterns!r}"
            )
        if not (_is_real(self.pattern_strength) and 0 < self.pattern_strength <= 20):
            raise ValueError(
                f"SimulatorConfig.pattern_strength must be in (0, 20], got {self.pattern_strength!r}"
            )
        if not (_is_real(self.pattern_mean_gap_min) and self.pattern_mean_gap_min >= 1):
            raise ValueError(
                f"SimulatorConfig.pattern_mean_gap_min must be a number >= 1 (minutes), got {self.pattern_mean_gap_min!r}"
            )
        if not (_is_real(self.tail_dof) and self.tail_dof > 2):
            raise ValueError(f"SimulatorConfig.tail_dof must be > 2 (finite variance), got {self.tail_dof!r}")
        for i, entry in enumerate(self.symbol_profiles):
            if not isinstance(entry, tuple) or len(entry) != 5:
                raise ValueError(f"SimulatorConfig.symbol_profiles[{i}] must be a 5-tuple, got {entry!r}")
            symbol, price, vol, volume, decimals = entry
            _check_symbol(symbol)
            if not all(_is_real(v) and v > 0 for v in (price, vol, volume)):
                raise ValueError(
                    f"SimulatorConfig.symbol_profiles[{i}] ({symbol}): base price, vol and volume must be > 0"
                )
            if isinstance(decimals, bool) or not isinstance(decimals, int) or not -6 <= decimals <= 12:
                raise ValueError(
                    f"SimulatorConfig.symbol_profiles[{i}] ({symbol}): price decimals must be an int in [-6, 12]"
                )


def empty_planted_patterns() -> pd.DataFrame:
    """The (empty) frame of planted pattern spans: ``start_time``, ``end_time`` (open times,
    inclusive) and ``label``."""
    return pd.DataFrame(
        {
            "start_time": pd.Series(dtype="datetime64[ns, UTC]"),
            "end_time": pd.Series(dtype="datetime64[ns, UTC]"),
            "label": pd.Series(dtype="str"),
        }
    )


@dataclass
class SimulatedDay:
    """Simulated candles (canonical frame) and the hidden state behind them, row-aligned; with
    ``plant_patterns`` also the planted pattern spans (the ground truth of the pattern models)."""

    candles: pd.DataFrame
    hidden: pd.DataFrame
    patterns: pd.DataFrame = field(default_factory=empty_planted_patterns)


class _State(NamedTuple):
    """Everything the next minute depends on (carried from day to day)."""

    log_price: float
    last_close: float
    slow_logvol: float
    fast_logvol: float
    jumped: bool
    vol_regime: int
    drift_regime: int
    momentum_fast: float
    momentum_slow: float


class _Profile(NamedTuple):
    base_price: float
    base_vol: float
    base_volume: float
    decimals: int


class _Params(NamedTuple):
    """The config turned into per-minute model constants."""

    gain: float
    delta: float
    fast: float
    slow: float
    q_drift: float
    p_exit: tuple[float, float]
    regime_mult: tuple[float, float]
    phi_slow: float
    omega_slow: float
    phi_fast: float
    omega_fast: float
    logvol_centre: float
    t_scale: float
    jump_prob: float
    jump_var: float
    flip_ns: int | None
    anchor: dt.date


# --------------------------------------------------------------------------------------------------
# public API


def simulate_day(
    symbol: str, day: dt.date | str, config: SimulatorConfig = SimulatorConfig(), interval: str = "1m"
) -> SimulatedDay:
    """The 1,440 minute candles of one UTC day of ``symbol`` and their hidden state (other
    intervals: the minutes aggregated, see :func:`aggregate_simulated`)."""
    return aggregate_simulated(simulate_range(symbol, day, day, config), interval)


def aggregate_simulated(minutes: SimulatedDay, interval: str) -> SimulatedDay:
    """Minute candles aggregated to ``interval`` candles (open first, high max, low min, close last,
    volume sum; keyed by the interval's open time). The hidden state of each candle is that of its last
    minute, the state at the candle's close: the oracle for a horizon of ``h`` candles is
    ``oracle_probability_up(hidden, h * minutes_per_candle)``. Only whole candles are kept."""
    step = interval_timedelta(interval)
    if step == pd.Timedelta(minutes=1):
        return minutes
    if step > pd.Timedelta(days=1) or pd.Timedelta(days=1) % step:
        raise ValueError(f"aggregate_simulated: interval {interval!r} must divide a day")
    candles = minutes.candles
    keys = candles["open_time"].dt.floor(step)
    groups = candles.groupby(keys, sort=True)
    whole = groups.size() == int(step / pd.Timedelta(minutes=1))
    aggregated = groups.agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
    )[whole]
    last_rows = groups.tail(1).index
    hidden = minutes.hidden.loc[last_rows].assign(open_time=keys.loc[last_rows].to_numpy())
    hidden = hidden[whole.loc[keys.loc[last_rows]].to_numpy()].reset_index(drop=True)
    out = aggregated.reset_index(names="open_time")[candles.columns]
    return SimulatedDay(candles=out.astype(candles.dtypes.to_dict()), hidden=hidden)


def simulate_range(
    symbol: str,
    first_day: dt.date | str,
    last_day_inclusive: dt.date | str,
    config: SimulatorConfig = SimulatorConfig(),
) -> SimulatedDay:
    """Candles and hidden state of the consecutive UTC days ``first_day..last_day_inclusive``."""
    _check_symbol(symbol)
    first = _parse_day(first_day, "first_day")
    last = _parse_day(last_day_inclusive, "last_day_inclusive")
    if last < first:
        raise ValueError(f"simulate_range: last_day_inclusive {last} is before first_day {first}")
    params = _params(config)
    first_index = _day_index(first, params.anchor, config)
    profile = _profile(symbol, config)
    state = _start_state(config, symbol, profile, params, first_index)
    parts, planted = [], []
    for offset in range((last - first).days + 1):
        day = first + dt.timedelta(days=offset)
        arrays, state = _simulate_one_day(config, symbol, profile, params, day, state, with_output=True)
        _remember(config, symbol, first_index + offset + 1, state)
        if config.plant_patterns:
            planted.append(_plant_patterns(config, symbol, profile, day, arrays))
        parts.append(arrays)
    merged = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    patterns = pd.concat(planted, ignore_index=True) if planted else empty_planted_patterns()
    return SimulatedDay(
        candles=_candle_frame(merged), hidden=_hidden_frame(merged, params), patterns=patterns
    )


def oracle_probability_up(hidden: pd.DataFrame, horizon_min: int) -> np.ndarray:
    """``P(log(close[t+h] / close[t]) > 0 | state at the close of t)`` for each hidden row.

    Exact conditional mean under the model; normal approximation of the noise (see the module
    docstring for the approximations).
    """
    if isinstance(horizon_min, bool) or not isinstance(horizon_min, int | np.integer) or horizon_min < 1:
        raise ValueError(
            f"oracle_probability_up: horizon_min must be a positive integer, got {horizon_min!r}"
        )
    missing = [c for c in _ORACLE_COLUMNS if c not in hidden.columns]
    if missing:
        raise ValueError(f"oracle_probability_up: hidden frame lacks column(s) {missing}")
    col = {c: hidden[c].to_numpy(dtype=float) for c in _ORACLE_COLUMNS}
    gain, fast, slow = col["signal_gain"], col["fast_decay"], col["slow_decay"]
    expected_fast, expected_slow = col["momentum_fast"].copy(), col["momentum_slow"].copy()
    expected_regime = col["drift_regime"].copy()
    mean = np.zeros(len(hidden))
    for _ in range(int(horizon_min)):
        expected_regime = col["drift_persistence"] * expected_regime
        drift = col["drift_strength"] * expected_regime + gain * (expected_fast - expected_slow)
        mean += drift
        expected_fast = fast * expected_fast + (1.0 - fast) * drift
        expected_slow = slow * expected_slow + (1.0 - slow) * drift
    variance = horizon_min * col["jump_variance"]
    filters = np.stack([gain, fast, slow], axis=1)
    unique, group = np.unique(filters, axis=0, return_inverse=True)
    impulse = np.zeros(int(horizon_min))
    impulse[0] = 1.0
    for k, (g, lf, ls) in enumerate(unique):
        response = lfilter(*_filter_polynomials(g, lf, ls), impulse)  # effect of u_t on z_t, z_{t+1}, ...
        variance[group.ravel() == k] += float(np.sum(np.cumsum(response) ** 2))
    return ndtr(mean / np.sqrt(variance))


def bayes_ceiling(hidden: pd.DataFrame, candles: pd.DataFrame, horizons: Sequence[int]) -> dict[int, float]:
    """Accuracy of the oracle's direction call against the realised label, per horizon.

    Label: up iff ``log(close[t+h] / close[t]) > 0`` (ties are not up), on the rows whose candle
    ``t+h`` is present. Call: up iff ``oracle_probability_up > 0.5``. ``hidden`` and ``candles`` are
    matched on ``open_time``.
    """
    for frame, name in ((hidden, "hidden"), (candles, "candles")):
        if "open_time" not in frame.columns:
            raise ValueError(f"bayes_ceiling: {name} frame lacks column 'open_time'")
    if "close" not in candles.columns:
        raise ValueError("bayes_ceiling: candles frame lacks column 'close'")
    close = pd.Series(candles["close"].to_numpy(dtype=float), index=pd.DatetimeIndex(candles["open_time"]))
    if close.index.has_duplicates:
        raise ValueError("bayes_ceiling: candles have duplicate open_time values")
    times = pd.DatetimeIndex(hidden["open_time"])
    now_close = close.reindex(times).to_numpy()
    result: dict[int, float] = {}
    for horizon in horizons:
        if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
            raise ValueError(f"bayes_ceiling: horizons must be positive integers, got {horizon!r}")
        future_close = close.reindex(times + pd.Timedelta(minutes=int(horizon))).to_numpy()
        observed = np.isfinite(now_close) & np.isfinite(future_close)
        if not observed.any():
            raise ValueError(f"bayes_ceiling: no row has its {horizon}-minute horizon observed in candles")
        label_up = np.log(future_close[observed] / now_close[observed]) > 0
        call_up = oracle_probability_up(hidden, int(horizon))[observed] > 0.5
        result[int(horizon)] = float(np.mean(call_up == label_up))
    return result


def clear_cache() -> None:
    """Forget the memoised end-of-day states (the next call chains again from the anchor)."""
    with _CACHE_LOCK:
        _CHAINS.clear()


# --------------------------------------------------------------------------------------------------
# chaining and memo cache

_CACHE_LOCK = threading.Lock()
_CHAINS: OrderedDict[tuple[SimulatorConfig, str], list[_State]] = OrderedDict()
_MAX_CHAINS = 64


def _remember(config: SimulatorConfig, symbol: str, index: int, state: _State) -> None:
    """Store the state at the start of day ``index`` if it extends the memoised chain."""
    with _CACHE_LOCK:
        chain = _CHAINS.get((config, symbol))
        if chain is not None and len(chain) == index:
            chain.append(state)


def _start_state(
    config: SimulatorConfig, symbol: str, profile: _Profile, params: _Params, index: int
) -> _State:
    """The state at the start of day ``index`` (days since the anchor), chaining and memoising."""
    key = (config, symbol)
    with _CACHE_LOCK:
        chain = _CHAINS.get(key)
        if chain is None:
            chain = [_initial_state(profile)]
            _CHAINS[key] = chain
            while len(_CHAINS) > _MAX_CHAINS:
                _CHAINS.popitem(last=False)
        _CHAINS.move_to_end(key)
        # Chained under the lock so the memo stays one consistent list; each day is a pure function of
        # (config, symbol, day, previous state), so any caller would compute the same values.
        while len(chain) <= index:
            known = len(chain) - 1
            day = params.anchor + dt.timedelta(days=known)
            _, end = _simulate_one_day(config, symbol, profile, params, day, chain[known], with_output=False)
            chain.append(end)
        return chain[index]


def _initial_state(profile: _Profile) -> _State:
    price = float(np.round(profile.base_price, profile.decimals))
    return _State(math.log(price), price, 0.0, 0.0, False, 0, 0, 0.0, 0.0)


# --------------------------------------------------------------------------------------------------
# one day


def _simulate_one_day(
    config: SimulatorConfig,
    symbol: str,
    profile: _Profile,
    params: _Params,
    day: dt.date,
    state: _State,
    *,
    with_output: bool,
) -> tuple[dict[str, np.ndarray], _State]:
    """Simulate the 1,440 minutes of ``day`` from ``state``; frame arrays only if ``with_output``."""
    n = MINUTES_PER_DAY
    rng = _generator(f"{config.seed}|{symbol}|{day.isoformat()}")  # draws below are in a fixed order
    weekend = day.weekday() >= 5
    season = _season(config.seasonality_strength)

    # noise: unit-variance Student-t, partly shared by all symbols
    shared = math.sqrt(config.market_correlation)
    own = math.sqrt(1.0 - config.market_correlation)
    market_noise = _generator(f"{config.seed}|__market__|{day.isoformat()}").standard_t(config.tail_dof, n)
    eps = params.t_scale * (shared * market_noise + own * rng.standard_t(config.tail_dof, n))
    # jumps (in sigmas) and their aftershock on the fast log-volatility the minute after
    jump = rng.random(n) < params.jump_prob
    jump_size = np.where(jump, config.jump_scale * rng.standard_normal(n), 0.0)
    after_jump = np.concatenate([[state.jumped], jump[:-1]])
    # volatility
    regime_uniforms = rng.random(_REGIME_DRAWS)
    vol_regime = _vol_regime_path(
        regime_uniforms, state.vol_regime, params.p_exit, n, f"{config.seed}|{symbol}|{day}"
    )
    eta = rng.standard_normal((2, n))
    slow_logvol = _ar1(params.phi_slow, params.omega_slow * eta[0], state.slow_logvol)
    fast_logvol = _ar1(
        params.phi_fast, params.omega_fast * eta[1] + config.jump_vol_kick * after_jump, state.fast_logvol
    )
    stochastic = np.where(vol_regime == 1, params.regime_mult[1], params.regime_mult[0]) * np.exp(
        slow_logvol + fast_logvol - params.logvol_centre
    )
    sigma = profile.base_vol * season * (config.weekend_vol_factor if weekend else 1.0) * stochastic
    # drift regime: redrawn at random minutes, forward-filled
    redraw_u, value_u = rng.random((2, n))
    redraw = redraw_u < params.q_drift
    values = np.where(value_u < 0.25, -1, np.where(value_u < 0.75, 0, 1))
    last_redraw = np.maximum.accumulate(np.where(redraw, np.arange(n), -1))
    drift_regime = np.where(last_redraw >= 0, values[np.maximum(last_redraw, 0)], state.drift_regime)
    # signal: z = drift + u, with u the exogenous part of the standardised return
    exogenous = params.delta * drift_regime + eps + np.clip(jump_size, -_JUMP_CAP, _JUMP_CAP)
    gain = _gain_path(params, day, n)
    z, momentum_fast, momentum_slow = _signal_path(
        gain, params.fast, params.slow, exogenous, state.momentum_fast, state.momentum_slow
    )
    drift = z - exogenous + params.delta * drift_regime
    returns = sigma * (drift + eps + jump_size)
    log_price = state.log_price + np.cumsum(returns)
    close = np.round(np.exp(log_price), profile.decimals)
    end = _State(
        log_price=float(log_price[-1]),
        last_close=float(close[-1]),
        slow_logvol=float(slow_logvol[-1]),
        fast_logvol=float(fast_logvol[-1]),
        jumped=bool(jump[-1]),
        vol_regime=int(vol_regime[-1]),
        drift_regime=int(drift_regime[-1]),
        momentum_fast=float(momentum_fast[-1]),
        momentum_slow=float(momentum_slow[-1]),
    )
    if not with_output:
        return {}, end

    open_ = np.concatenate([[state.last_close], close[:-1]])
    previous_log = np.concatenate([[state.log_price], log_price[:-1]])
    bridge = 1.0 - rng.random((2, n))  # uniforms in (0, 1]
    reach_up = np.sqrt(returns**2 - 2.0 * sigma**2 * np.log(bridge[0]))
    reach_down = np.sqrt(returns**2 - 2.0 * sigma**2 * np.log(bridge[1]))
    high = np.round(np.exp(previous_log + 0.5 * (returns + reach_up)), profile.decimals)
    low = np.round(np.exp(previous_log + 0.5 * (returns - reach_down)), profile.decimals)
    high = np.maximum(high, np.maximum(open_, close))
    low = np.maximum(np.minimum(low, np.minimum(open_, close)), 10.0 ** (-profile.decimals))
    volume = (
        profile.base_volume
        * season**1.5
        * (config.weekend_volume_factor if weekend else 1.0)
        * stochastic**0.8
        * (0.25 + 0.75 * np.abs(drift + eps + jump_size) / 0.8)
        * np.exp(0.5 * rng.standard_normal(n) - 0.125)
    )
    arrays = {
        "open_time_ns": _day_start_ns(day) + np.arange(n, dtype=np.int64) * _NS_PER_MINUTE,
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": np.round(volume, 6),
        "volatility": sigma,
        "momentum_fast": momentum_fast,
        "momentum_slow": momentum_slow,
        "drift_regime": drift_regime.astype(np.int8),
        "vol_regime": vol_regime.astype(np.int8),
        "jump": jump,
        "signal_gain": np.broadcast_to(gain, (n,)).astype(float),
    }
    return arrays, end


# Chart-pattern templates: log-price offsets over the span in units of amplitude, 0 at both ends, so
# the path rejoins the unplanted one after the span (the day-to-day chaining is unaffected).
def _bumps(n: int, centres: tuple[float, ...], heights: tuple[float, ...], width: float) -> np.ndarray:
    x = np.linspace(0.0, 1.0, n)
    shape = sum(h * np.exp(-0.5 * ((x - c) / width) ** 2) for c, h in zip(centres, heights, strict=True))
    return shape - (shape[0] + (shape[-1] - shape[0]) * x)  # pinned to 0 at both ends


PATTERN_TEMPLATES: dict[str, Callable[[int], np.ndarray]] = {
    "double_top": lambda n: _bumps(n, (0.28, 0.72), (1.0, 1.0), 0.11),
    "double_bottom": lambda n: _bumps(n, (0.28, 0.72), (-1.0, -1.0), 0.11),
    "head_and_shoulders": lambda n: _bumps(n, (0.2, 0.5, 0.8), (0.65, 1.1, 0.65), 0.08),
    "inverse_head_and_shoulders": lambda n: _bumps(n, (0.2, 0.5, 0.8), (-0.65, -1.1, -0.65), 0.08),
}
PATTERN_LENGTHS_MIN = (20, 40)  # a planted span lasts this many minutes (inclusive range)


def _plant_patterns(
    config: SimulatorConfig, symbol: str, profile: _Profile, day: dt.date, arrays: dict[str, np.ndarray]
) -> pd.DataFrame:
    """Insert pattern templates at random, non-overlapping spans of ``day`` (in place) and return the
    spans. Draws come from their own generator, so the unplanted path is the same as without planting.

    Amplitude: ``pattern_strength * mean volatility over the span * sqrt(length)``; the last close of
    the day is never touched, so the next day starts where it would have.
    """
    rng = _generator(f"{config.seed}|{symbol}|{day.isoformat()}|patterns")
    names = sorted(PATTERN_TEMPLATES)
    offset = np.zeros(MINUTES_PER_DAY)
    rows = []
    position = 1 + int(rng.geometric(1.0 / config.pattern_mean_gap_min))
    while True:
        length = int(rng.integers(PATTERN_LENGTHS_MIN[0], PATTERN_LENGTHS_MIN[1] + 1))
        name = names[int(rng.integers(len(names)))]
        end = position + length - 1
        if end >= MINUTES_PER_DAY - 1:
            break
        amplitude = (
            config.pattern_strength
            * float(arrays["volatility"][position : end + 1].mean())
            * math.sqrt(length)
        )
        offset[position : end + 1] = amplitude * PATTERN_TEMPLATES[name](length)
        rows.append((arrays["open_time_ns"][position], arrays["open_time_ns"][end], name))
        position = end + 1 + int(rng.geometric(1.0 / config.pattern_mean_gap_min))
    previous = np.concatenate([[0.0], offset[:-1]])
    scale, scale_open = np.exp(offset), np.exp(previous)
    open_ = np.round(arrays["open"] * scale_open, profile.decimals)
    close = np.round(arrays["close"] * scale, profile.decimals)
    arrays["open"], arrays["close"] = open_, close
    arrays["high"] = np.maximum(
        np.round(arrays["high"] * np.maximum(scale, scale_open), profile.decimals), np.maximum(open_, close)
    )
    arrays["low"] = np.minimum(
        np.round(arrays["low"] * np.minimum(scale, scale_open), profile.decimals), np.minimum(open_, close)
    )
    if not rows:
        return empty_planted_patterns()
    starts, ends, labels = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "start_time": pd.to_datetime(np.array(starts), unit="ns", utc=True),
            "end_time": pd.to_datetime(np.array(ends), unit="ns", utc=True),
            "label": pd.Series(labels, dtype="str"),
        }
    )


def _generator(key: str) -> np.random.Generator:
    """A generator seeded by a stable hash of ``key`` (never Python's salted ``hash``)."""
    digest = hashlib.blake2b(f"antmeter-sim|{key}".encode(), digest_size=16).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))


def _ar1(phi: float, innovations: np.ndarray, previous: float) -> np.ndarray:
    """``x_t = phi * x_{t-1} + innovations_t`` starting from ``x_{-1} = previous``."""
    out, _ = lfilter([1.0], [1.0, -phi], innovations, zi=[phi * previous])
    return out


def _ewma(decay: float, values: np.ndarray, previous: float) -> np.ndarray:
    """``m_t = decay * m_{t-1} + (1 - decay) * values_t`` starting from ``m_{-1} = previous``."""
    return _ar1(decay, (1.0 - decay) * values, previous)


def _signal_path(
    gain: float | np.ndarray,
    fast: float,
    slow: float,
    exogenous: np.ndarray,
    fast_start: float,
    slow_start: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised returns ``z`` and the averages ``(mf, ms)`` of the feedback system, vectorised.

    ``z_t = g_t (mf_{t-1} - ms_{t-1}) + u_t``. On each stretch of constant gain, ``z`` is the
    response of the 2nd-order filter to ``u`` plus the free response from the starting averages,
    set through the filter's initial conditions.
    """
    gains = np.broadcast_to(np.asarray(gain, dtype=float), exogenous.shape)
    starts = np.flatnonzero(np.diff(gains, prepend=np.nan) != 0)
    z = np.empty_like(exogenous)
    mf = np.empty_like(exogenous)
    ms = np.empty_like(exogenous)
    for start, stop in zip(starts, [*starts[1:], len(gains)], strict=True):
        g = float(gains[start])
        numerator, denominator = _filter_polynomials(g, fast, slow)
        # free response from the starting averages: two explicit steps, then the filter's recursion,
        # which the initial conditions below reproduce on top of the zero-state response to u
        first = g * (fast_start - slow_start)
        second = g * (fast * fast_start + (1.0 - fast) * first - slow * slow_start - (1.0 - slow) * first)
        zi = [first, second + denominator[1] * first]
        z[start:stop], _ = lfilter(numerator, denominator, exogenous[start:stop], zi=zi)
        mf[start:stop] = _ewma(fast, z[start:stop], fast_start)
        ms[start:stop] = _ewma(slow, z[start:stop], slow_start)
        fast_start, slow_start = float(mf[stop - 1]), float(ms[stop - 1])
    return z, mf, ms


def _gain_path(params: _Params, day: dt.date, n: int) -> float | np.ndarray:
    """``g_t`` for the minutes of ``day``: a scalar unless the flip falls inside the day."""
    if params.flip_ns is None:
        return params.gain
    flipped_from = -(
        -(params.flip_ns - _day_start_ns(day)) // _NS_PER_MINUTE
    )  # first minute opening at/after
    if flipped_from <= 0:
        return -params.gain
    if flipped_from >= n:
        return params.gain
    return np.where(np.arange(n) < flipped_from, params.gain, -params.gain)


def _vol_regime_path(
    uniforms: np.ndarray, state: int, p_exit: tuple[float, float], n: int, overflow_key: str
) -> np.ndarray:
    """A two-state Markov chain over ``n`` minutes via geometric sojourns (memoryless).

    Uses the day's fixed block of uniforms; the rare day that switches more often continues with a
    generator of its own (``overflow_key``), so the day's other draws never shift.
    """
    path = np.empty(n, dtype=np.int8)
    position = 0
    draws = iter(uniforms.tolist())
    overflow: np.random.Generator | None = None
    while position < n:
        p = p_exit[state]
        u = next(draws, None)
        if u is None:
            overflow = overflow or _generator(f"regime-overflow|{overflow_key}")
            u = float(overflow.random())
        stay = max(1, math.ceil(math.log(1.0 - u) / math.log1p(-p))) if p < 1 else 1
        stop = min(n, position + stay)
        path[position:stop] = state
        if stop < n:
            state = 1 - state
        position = stop
    return path


# --------------------------------------------------------------------------------------------------
# config helpers


@lru_cache(maxsize=64)
def _params(config: SimulatorConfig) -> _Params:
    phi_slow = _decay(config.slow_vol_halflife_min)
    phi_fast = _decay(config.fast_vol_halflife_min)
    flip = None
    if config.signal_flip_at is not None:
        flip = _parse_utc_time(config.signal_flip_at, "SimulatorConfig.signal_flip_at").as_unit("ns").value
    return _Params(
        gain=config.signal_strength if config.predictable else 0.0,
        delta=config.drift_regime_strength if config.predictable else 0.0,
        fast=_decay(config.signal_fast_halflife_min),
        slow=_decay(config.signal_slow_halflife_min),
        q_drift=1.0 / config.drift_regime_mean_duration_min,
        p_exit=(1.0 / config.calm_mean_duration_min, 1.0 / config.turbulent_mean_duration_min),
        regime_mult=(1.0, config.turbulent_vol_multiplier),
        phi_slow=phi_slow,
        omega_slow=config.slow_vol_std * math.sqrt(1.0 - phi_slow**2),
        phi_fast=phi_fast,
        omega_fast=config.fast_vol_std * math.sqrt(1.0 - phi_fast**2),
        logvol_centre=config.slow_vol_std**2 + config.fast_vol_std**2,
        t_scale=math.sqrt((config.tail_dof - 2.0) / config.tail_dof),
        jump_prob=config.jump_rate_per_day / MINUTES_PER_DAY,
        jump_var=config.jump_rate_per_day / MINUTES_PER_DAY * config.jump_scale**2,
        flip_ns=flip,
        anchor=_parse_day(config.anchor_date, "SimulatorConfig.anchor_date"),
    )


def _profile(symbol: str, config: SimulatorConfig) -> _Profile:
    """Base price, volatility, volume and price decimals of ``symbol`` (configured or name-derived)."""
    for name, price, vol, volume, decimals in config.symbol_profiles:
        if name == symbol:
            return _Profile(float(price), float(vol), float(volume), int(decimals))
    digest = hashlib.blake2b(f"antmeter-sim-symbol|{symbol}".encode(), digest_size=12).digest()
    u1, u2, u3 = (int.from_bytes(digest[i : i + 4], "little") / 2**32 for i in (0, 4, 8))
    price = float(f"{10.0 ** (-1.0 + 4.0 * u1):.4g}")
    decimals = 4 - math.floor(math.log10(price))  # about five significant digits
    return _Profile(price, 8.0e-4 * (1.0 + u2), 2.0e5 / price * (0.5 + u3), decimals)


@lru_cache(maxsize=16)
def _season(strength: float) -> np.ndarray:
    """Intraday volatility multiplier per minute of the UTC day, RMS-normalised to one."""
    hours = np.arange(MINUTES_PER_DAY) / 60.0

    def bump(centre: float, width: float) -> np.ndarray:
        distance = (hours - centre + 12.0) % 24.0 - 12.0  # circular
        return np.exp(-0.5 * (distance / width) ** 2)

    curve = 1.0 + strength * (
        0.2 * bump(1.0, 1.5) - 0.3 * bump(5.0, 2.0) + 0.25 * bump(8.5, 1.0) + 0.6 * bump(14.5, 1.25)
    )
    curve = curve / np.sqrt(np.mean(curve**2))
    curve.setflags(write=False)
    return curve


def _day_index(day: dt.date, anchor: dt.date, config: SimulatorConfig) -> int:
    index = (day - anchor).days
    if index < 0:
        raise ValueError(
            f"simulator: day {day} is before SimulatorConfig.anchor_date {config.anchor_date}; "
            "the simulated history starts at the anchor date"
        )
    return index


def _day_start_ns(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * MINUTES_PER_DAY * _NS_PER_MINUTE


# --------------------------------------------------------------------------------------------------
# frames


def _times(arrays: dict[str, np.ndarray]) -> pd.Series:
    return pd.Series(pd.to_datetime(arrays["open_time_ns"], unit="ns", utc=True)).astype(
        "datetime64[ns, UTC]"
    )


def _candle_frame(arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    frame = pd.DataFrame({c: arrays[c].astype("float64") for c in CANDLE_COLUMNS if c != "open_time"})
    frame.insert(0, "open_time", _times(arrays))
    return frame[CANDLE_COLUMNS]


def _hidden_frame(arrays: dict[str, np.ndarray], params: _Params) -> pd.DataFrame:
    n = len(arrays["open_time_ns"])
    persistence = 1.0 - params.q_drift
    momentum = arrays["momentum_fast"] - arrays["momentum_slow"]
    gain = arrays["signal_gain"]
    drift_regime = arrays["drift_regime"]
    expected = arrays["volatility"] * (params.delta * persistence * drift_regime + gain * momentum)
    regime = _VOL_REGIME_NAMES[arrays["vol_regime"]] + "/" + _DRIFT_REGIME_NAMES[drift_regime + 1]
    frame = pd.DataFrame(
        {
            "open_time": _times(arrays),
            "expected_return": expected,
            "volatility": arrays["volatility"],
            "momentum": momentum,
            "vol_regime": arrays["vol_regime"],
            "regime": pd.Series(regime, dtype="string"),
            "jump": arrays["jump"],
            "momentum_fast": arrays["momentum_fast"],
            "momentum_slow": arrays["momentum_slow"],
            "drift_regime": drift_regime,
            "signal_gain": gain,
            "fast_decay": np.full(n, params.fast),
            "slow_decay": np.full(n, params.slow),
            "drift_strength": np.full(n, params.delta),
            "drift_persistence": np.full(n, persistence),
            "jump_variance": np.full(n, params.jump_var),
        }
    )
    return frame[HIDDEN_COLUMNS]


__all__ = [
    "DEFAULT_SYMBOL_PROFILES",
    "HIDDEN_COLUMNS",
    "PATTERN_TEMPLATES",
    "MINUTES_PER_DAY",
    "SimulatedDay",
    "SimulatorConfig",
    "bayes_ceiling",
    "clear_cache",
    "empty_planted_patterns",
    "oracle_probability_up",
    "simulate_day",
    "simulate_range",
]
