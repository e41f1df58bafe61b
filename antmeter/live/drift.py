"""Feature drift by the population stability index (PSI), robust to intraday seasonality.

PSI
---
``PSI = sum_b (c_b - r_b) * ln(c_b / r_b)`` over bins ``b`` whose edges are quantiles of the
*reference* sample (so each reference bin holds ~1/bins of the mass); ``r_b`` / ``c_b`` are the
reference / current shares, floored at ``epsilon`` so that an empty bin gives a large but finite
term. PSI is symmetric in r and c and scale-free: it only depends on ranks relative to the reference.

Thresholds
----------
The conventional reading (Siddiqi, *Credit Risk Scorecards*, 2006; widely used in model monitoring)
is < 0.1 stable, 0.1-0.25 watch, >= 0.25 significant shift -- :data:`WATCH` and :data:`ALERT`. They
are meant for samples large enough that sampling noise is well below 0.1. Under no drift, with iid
rows, ``PSI ~= (1/n_ref + 1/n_cur) * chi2(bins - 1)`` (PSI is ~ the two-sample chi-square statistic
divided by the effective sample size). With 10 bins and a 240-row current window its 99th percentile
is ~0.09, so :data:`MIN_CURRENT_ROWS` = 240 (four hours of minutes) keeps pure noise below "watch".
Rolling features are autocorrelated, so the real noise is larger; the status therefore never fires
below the chi-square noise floor either (``threshold_used = max(threshold, noise_floor)``), and a
shorter window gives status ``insufficient``.

Seasonality
-----------
Many scale-free features still have a strong intraday pattern (volatility, volume ratios and spreads
are higher in the US/EU session overlap). Comparing a four-hour window against a whole-day reference
would flag that pattern as drift every day. :func:`feature_drift` therefore (by default) compares the
current window with the reference **restricted to the same UTC hours of day**, re-weighted so that each
hour has the share it has in the current window. The reference should span whole days (a week or
more is best), so that every hour is covered many times.

Significance (what makes an alert)
----------------------------------
Rolling features are autocorrelated and seasonal, so neither the chi-square floor nor the fixed 0.25
says how large PSI gets by chance. :func:`feature_drift` (``null_step`` set) therefore compares each
feature's PSI with **its own null distribution**: the PSI (hours not matched) of every same-length
sub-window of the reference (contiguous per symbol, start stepped by ``null_step`` rows) against the
rest of the reference, hour-matched to the sub-window's own hours exactly as the current window is. ``p = (1 + #{null >= observed})
/ (1 + K)``. Across features the p-values are corrected by Benjamini–Hochberg at ``fdr``; a feature is
``alert`` only when it is BH-significant **and** its hour-matched PSI is at least ``alert``. At least
``min_current`` current rows are needed (else ``insufficient``). :func:`persistent_drift` asks for an
alert in each of ``windows`` consecutive windows of the same feature. Persistent drift is a warning:
the retraining policy never retrains on drift alone (see :mod:`antmeter.live.policy`).

Which features
--------------
:func:`psi_eligibility` keeps scale-free features (returns, ratios, z-scores, oscillators, sentiment)
and drops raw price/volume levels (which trend, so any later window looks shifted) and cyclic
calendar features (hour/day encodings), whose distribution over a window is fixed by which hours the
window covers -- a seasonal fact, not drift.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

WATCH = 0.1
ALERT = 0.25
MIN_CURRENT_ROWS = 240
EPSILON = 1e-4
DRIFT_COLUMNS = ["feature", "psi", "status", "n_reference", "n_current", "noise_floor", "p_value", "null_q95"]
FDR = 0.05

_IDENTIFIERS = {
    "symbol",
    "open_time",
    "close_time",
    "prediction_time",
    "timestamp",
    "time",
    "date",
    "id",
    "index",
}
_CYCLIC_MARKERS = {"sin", "cos", "dow", "weekday", "tod", "hod", "moy", "dom", "doy", "weekend"}
_CALENDAR_WORDS = {"hour", "minute", "day", "week", "month", "of", "utc", "is", "weekend", "session", "time"}
_SCALE_FREE_MARKERS = {
    "ret", "rets", "return", "returns", "logret", "pct", "ratio", "rel", "z", "zscore", "rsi", "stoch",
    "willr", "williams", "mfi", "cci", "adx", "dist", "norm", "normalized", "natr", "sentiment", "compound",
    "imbalance", "skew", "kurt", "corr", "autocorr", "entropy", "rank", "pctile", "percentile", "frac",
    "share", "bps", "realized", "rv", "volatility", "parkinson", "garman", "pband", "wband", "pctb",
}  # fmt: skip
_LEVEL_MARKERS = {
    "open", "high", "low", "close", "price", "vwap", "volume", "sma", "ema", "wma", "ma", "bb", "bollinger",
    "upper", "lower", "mid", "atr", "macd", "obv", "adi", "vpt", "quote", "trades", "count", "turnover", "level",
}  # fmt: skip
# volatility-scaled features move with the volatility regime itself: drift is measured on scale-free ones
_VOLATILITY_MARKERS = {"volatility", "atr", "range", "body", "std", "realized", "rv", "parkinson", "garman"}


def psi_eligibility(columns: Iterable[str]) -> dict[str, str]:
    """For each column, ``"eligible: ..."`` or ``"excluded: ..."`` with the rule that decided it.

    Rules, first match wins: identifiers/time keys are excluded; cyclic calendar encodings (``*_sin``,
    ``*_cos``, ``hour``, ``day_of_week``...) are excluded; names with a scale-free marker (``ret``,
    ``ratio``, ``pct``, ``z``, ``rsi``, ``sentiment``...) are eligible; names with a raw-level marker
    (``close``, ``volume``, ``sma``, ``atr``, ``macd``...) are excluded; anything else is eligible.
    """
    out: dict[str, str] = {}
    for column in columns:
        name = str(column)
        tokens = re.findall(r"[a-z]+", name.lower())
        if name.lower() in _IDENTIFIERS or not tokens:
            out[name] = "excluded: identifier or time key"
        elif _CYCLIC_MARKERS & set(tokens) or set(tokens) <= _CALENDAR_WORDS:
            out[name] = "excluded: cyclic calendar feature (seasonal by construction)"
        elif _VOLATILITY_MARKERS & set(tokens):
            out[name] = "excluded: scales with volatility (a regime level, not scale-free)"
        elif _SCALE_FREE_MARKERS & set(tokens):
            out[name] = "eligible: scale-free marker " + ",".join(sorted(_SCALE_FREE_MARKERS & set(tokens)))
        elif _LEVEL_MARKERS & set(tokens):
            out[name] = "excluded: raw price/volume level (trends, not scale-free)"
        else:
            out[name] = "eligible: no level or calendar marker"
    return out


def psi_eligible(columns: Iterable[str]) -> list[str]:
    """The columns on which PSI is meaningful (see :func:`psi_eligibility`), in input order."""
    return [c for c, why in psi_eligibility(columns).items() if why.startswith("eligible")]


def _finite(values: np.ndarray | Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype="float64").ravel()
    return array[np.isfinite(array)]


def population_stability_index(
    reference: np.ndarray,
    current: np.ndarray,
    bins: int = 10,
    *,
    reference_weights: np.ndarray | None = None,
    epsilon: float = EPSILON,
    edges: np.ndarray | None = None,
) -> float:
    """PSI of ``current`` against ``reference`` with ``bins`` quantile bins of the reference.

    Non-finite values are ignored. Repeated quantiles (discrete data) merge bins. ``reference_weights``
    (one per reference value, >= 0) re-weight the reference shares, e.g. to match hours of day.
    Empty-bin shares are floored at ``epsilon``.
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    ref = np.asarray(reference, dtype="float64").ravel()
    weights = (
        np.ones_like(ref) if reference_weights is None else np.asarray(reference_weights, "float64").ravel()
    )
    if weights.shape != ref.shape or (weights < 0).any():
        raise ValueError("reference_weights must be non-negative, one per reference value")
    keep = np.isfinite(ref) & (weights > 0)
    ref, weights = ref[keep], weights[keep]
    cur = _finite(current)
    if ref.size < bins or cur.size == 0:
        raise ValueError(
            f"need >= {bins} finite reference values and >= 1 current value, got {ref.size} and {cur.size}"
        )
    if edges is None:  # callers comparing many windows with one reference pass its edges once
        edges = reference_edges(ref, bins)
    n_bins = edges.size + 1
    ref_share = np.bincount(np.searchsorted(edges, ref, side="right"), weights=weights, minlength=n_bins)
    ref_share = np.maximum(ref_share / weights.sum(), epsilon)
    cur_share = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=n_bins) / cur.size
    cur_share = np.maximum(cur_share, epsilon)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def reference_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """The inner quantile bin edges of the reference (repeated quantiles merged)."""
    ref = _finite(reference)
    return np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def _times(frame: pd.DataFrame, time_column: str, source: str) -> pd.DatetimeIndex:
    if time_column in frame.columns:
        values = frame[time_column]
    elif isinstance(frame.index, pd.DatetimeIndex):
        values = frame.index.to_series()
    else:
        raise ValueError(
            f"{source} has no {time_column!r} column or DatetimeIndex (needed for match_hours=True)"
        )
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        raise ValueError(f"{source}.{time_column} must be timezone-aware UTC, got {values.dtype}")
    return pd.DatetimeIndex(values.dt.tz_convert("UTC"))


def hour_matched_weights(reference_times: pd.DatetimeIndex, current_times: pd.DatetimeIndex) -> np.ndarray:
    """Reference weights giving each UTC hour of day the share it has in the current window (0 elsewhere)."""
    return hour_matched_weights_from_hours(np.asarray(reference_times.hour), np.asarray(current_times.hour))


def hour_matched_weights_from_hours(ref_hours: np.ndarray, cur_hours: np.ndarray) -> np.ndarray:
    """:func:`hour_matched_weights` on hour-of-day arrays."""
    cur_share = np.bincount(cur_hours, minlength=24) / max(cur_hours.size, 1)
    ref_count = np.bincount(ref_hours, minlength=24)
    per_hour = np.divide(cur_share, ref_count, out=np.zeros(24), where=ref_count > 0)
    return per_hour[ref_hours]


def noise_floor(n_reference: float, n_current: float, bins: int, quantile: float = 0.99) -> float:
    """The ``quantile`` of PSI under no drift for iid samples: ``(1/n_ref + 1/n_cur) * chi2_q(bins - 1)``."""
    return float((1.0 / n_reference + 1.0 / n_current) * stats.chi2.ppf(quantile, bins - 1))


def drift_status(psi: float, floor: float, watch: float = WATCH, alert: float = ALERT) -> str:
    """``alert`` / ``watch`` / ``ok`` with each threshold raised to at least the noise floor."""
    if psi >= max(alert, floor):
        return "alert"
    if psi >= max(watch, floor):
        return "watch"
    return "ok"


def feature_drift(
    reference_frame: pd.DataFrame,
    current_frame: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    bins: int = 10,
    watch: float = WATCH,
    alert: float = ALERT,
    match_hours: bool = True,
    time_column: str = "open_time",
    min_current: int = MIN_CURRENT_ROWS,
    noise_quantile: float = 0.99,
    null_step: int | None = 60,
    fdr: float = FDR,
) -> pd.DataFrame:
    """PSI and status per feature (:data:`DRIFT_COLUMNS`) of ``current_frame`` against ``reference_frame``.

    ``columns`` defaults to the :func:`psi_eligible` numeric columns present in both frames. With
    ``match_hours`` the reference is restricted to the current window's UTC hours of day and
    re-weighted to the current hour mix (times from ``time_column`` or a DatetimeIndex); current rows
    at hours the reference never covers are ignored. Status is ``alert`` / ``watch`` / ``ok``
    (thresholds never below the no-drift noise floor) or ``insufficient`` when fewer than
    ``min_current`` current rows (or fewer than ``bins`` reference rows) are usable. With ``null_step``
    (see the module docstring) ``alert`` also needs a BH-significant p-value against the reference's own
    sub-window null (``p_value``, ``null_q95``); ``None`` skips the null (p-values NaN).
    """
    if not 0 < watch <= alert:
        raise ValueError(f"need 0 < watch <= alert, got watch={watch}, alert={alert}")
    if columns is None:
        shared = [c for c in reference_frame.columns if c in current_frame.columns]
        numeric = [c for c in shared if pd.api.types.is_numeric_dtype(reference_frame[c])]
        columns = psi_eligible(numeric)
    missing = [c for c in columns if c not in reference_frame.columns or c not in current_frame.columns]
    if missing:
        raise ValueError(f"feature column(s) {missing} missing from the reference or current frame")
    weights = np.ones(len(reference_frame))
    current_used = np.ones(len(current_frame), dtype=bool)
    ref_hours = current_hours = None
    if match_hours:
        ref_times = _times(reference_frame, time_column, "reference_frame")
        cur_times = _times(current_frame, time_column, "current_frame")
        current_used = np.isin(np.asarray(cur_times.hour), np.unique(np.asarray(ref_times.hour)))
        weights = hour_matched_weights(ref_times, cur_times[current_used])
        ref_hours, current_hours = np.asarray(ref_times.hour), np.asarray(cur_times.hour)[current_used]
    groups = (
        list(reference_frame.groupby("symbol", sort=False).indices.values())
        if "symbol" in reference_frame.columns
        else [np.arange(len(reference_frame))]
    )
    rows = []
    for column in columns:
        ref = reference_frame[column].to_numpy(dtype="float64", na_value=np.nan)
        cur = current_frame[column].to_numpy(dtype="float64", na_value=np.nan)[current_used]
        usable = np.isfinite(ref) & (weights > 0)
        w = weights[usable]
        n_ref = float(w.sum() ** 2 / (w**2).sum()) if w.size else 0.0
        n_cur = int(np.isfinite(cur).sum())
        if n_cur < max(min_current, 1) or usable.sum() < bins:
            rows.append((column, np.nan, "insufficient", n_ref, n_cur, np.nan, np.nan, np.nan))
            continue
        # bins: quantiles of the whole reference, the same edges its sub-window null uses
        psi = population_stability_index(
            ref[usable], cur, bins, reference_weights=w, edges=reference_edges(ref, bins)
        )
        floor = noise_floor(n_ref, n_cur, bins, noise_quantile)
        p_value, q95 = (np.nan, np.nan)
        if null_step is not None:
            p_value, q95 = _null_p_value(ref, ref_hours, groups, psi, n_cur, current_hours, bins, null_step)
        rows.append((column, psi, drift_status(psi, floor, watch, alert), n_ref, n_cur, floor, p_value, q95))
    frame = pd.DataFrame(rows, columns=DRIFT_COLUMNS)
    if null_step is not None:
        significant = benjamini_hochberg(frame["p_value"].to_numpy(dtype="float64"), fdr)
        demote = (frame["status"] == "alert") & ~significant
        frame.loc[demote, "status"] = "watch"
    return frame.astype(
        {
            "feature": "str",
            "psi": "float64",
            "n_reference": "float64",
            "n_current": "int64",
            "noise_floor": "float64",
        }
    )


def _null_p_value(
    ref: np.ndarray,
    ref_hours: np.ndarray | None,
    groups: Sequence[np.ndarray],
    observed: float,
    length: int,
    current_hours: np.ndarray | None,
    bins: int,
    step: int,
) -> tuple[float, float]:
    """p-value of ``observed`` among the PSIs of same-length reference sub-windows, each against the rest
    of the reference (the sub-window left out), hour-matched like the current window when hours are given."""
    null = []
    edges = reference_edges(ref, bins)
    for positions in groups:
        positions = positions[np.isfinite(ref[positions])]
        for start in range(0, positions.size - length + 1, max(step, 1)):
            window = positions[start : start + length]
            if ref_hours is None or current_hours is None:
                weights = np.ones(ref.size)
            else:
                weights = hour_matched_weights_from_hours(ref_hours, ref_hours[window])
            weights[window] = 0.0
            if (weights > 0).sum() < bins:
                continue
            null.append(
                population_stability_index(ref, ref[window], bins, reference_weights=weights, edges=edges)
            )
    if not null:
        return np.nan, np.nan
    null_values = np.asarray(null)
    p_value = (1.0 + float((null_values >= observed).sum())) / (1.0 + null_values.size)
    return p_value, float(np.quantile(null_values, 0.95))


def benjamini_hochberg(p_values: np.ndarray, fdr: float = FDR) -> np.ndarray:
    """Which hypotheses the Benjamini–Hochberg step-up procedure rejects at ``fdr`` (NaN: not tested)."""
    p = np.asarray(p_values, dtype="float64")
    tested = np.flatnonzero(np.isfinite(p))
    rejected = np.zeros(p.size, dtype=bool)
    if tested.size == 0:
        return rejected
    order = tested[np.argsort(p[tested])]
    passes = p[order] <= fdr * np.arange(1, order.size + 1) / order.size
    if passes.any():
        rejected[order[: int(np.flatnonzero(passes).max()) + 1]] = True
    return rejected


def persistent_drift(
    reference_frame: pd.DataFrame,
    current_frame: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    windows: int = 2,
    time_column: str = "open_time",
    **options,
) -> tuple[bool, pd.DataFrame]:
    """Split ``current_frame`` into ``windows`` consecutive equal spans of time; returns (some feature is
    ``alert`` in every span, the newest span's :func:`feature_drift` frame)."""
    if windows < 1:
        raise ValueError(f"windows must be >= 1, got {windows}")
    times = _times(current_frame, time_column, "current_frame")
    edges = pd.date_range(times.min(), times.max() + pd.Timedelta(minutes=1), periods=windows + 1)
    alerted: set[str] | None = None
    frame = pd.DataFrame(columns=DRIFT_COLUMNS)
    for k in range(windows):
        chunk = current_frame[np.asarray((times >= edges[k]) & (times < edges[k + 1]))]
        frame = feature_drift(reference_frame, chunk, columns, time_column=time_column, **options)
        alerts = set(frame.loc[frame["status"] == "alert", "feature"])
        alerted = alerts if alerted is None else alerted & alerts
    return bool(alerted), frame


def max_psi(drift: pd.DataFrame) -> float | None:
    """The largest PSI of a :func:`feature_drift` frame, ignoring ``insufficient`` rows; None if none."""
    values = drift.loc[drift["status"] != "insufficient", "psi"].dropna()
    return float(values.max()) if len(values) else None
