"""Vectorized technical indicators (numpy, with numba loops for the recursive ones), defined to match ``ta`` 0.11.

``ta`` is the reference definition: every indicator here reproduces ``ta``'s formula and seeding so
that, on the same input, values agree to floating-point rounding (``antmeter_tests/unit/
test_indicators.py`` checks this). The differences are deliberate and limited to warm-up rows and
degenerate divisions:

* **Warm-up rows are NaN.** ``ta``'s ATR, ADX, +DI and -DI return ``0.0`` before they are defined;
  here they are NaN. +DI/-DI are defined one row earlier than in ``ta`` (``ta`` leaves row
  ``window`` at 0 although its inputs exist). MFI and rolling OBV need the previous candle for every
  candle in the window, so they start at row ``window`` (``ta``'s MFI starts at ``window - 1`` by
  treating the first candle's money flow as neutral).
* **Safe divisions instead of inf/NaN.** Stochastic %K with a zero high-low range is 50, Bollinger
  %B with zero band width is 0.5, MFI with no money flow is 50, RSI with neither gains nor losses is
  50 (``ta`` says 100), CCI with zero mean deviation is 0, rolling VWAP over a window without volume
  is the window's mean typical price. ``ta`` returns NaN or inf in those cases.

How it is fast without a Python loop over rows:

* Recursive indicators (EMA, MACD, RSI, ATR, ADX with Wilder smoothing) are one compiled loop each
  (numba, about 1-3 ns per row and series) that computes every intermediate series in the same pass,
  with ``ta``'s arithmetic in ``ta``'s order; no temporary arrays besides the outputs.
* Windowed reductions (sum, max, min) use doubling: ``log2(window)`` vectorized passes whose
  summation order depends only on the window, so a value is bit-for-bit the same wherever the series
  starts (partition results equal full-history results exactly). Rolling standard deviations shift
  each block of values by an anchor first (accuracy on large price levels); a ``phase`` argument
  aligns the blocks to absolute time so that this holds for them too.
* Indicators with several intermediate series work through the input in chunks of ``_CHUNK`` rows
  with preallocated scratch space, so the only
  full-length arrays they allocate are their outputs. The loop runs over chunks, not rows.

Inputs are 1-D arrays (anything ``np.asarray`` accepts) of finite values; outputs are float64
arrays of the same length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from numba import njit

FloatArray = np.ndarray

# Rows per chunk of the chunked computations (scratch space stays small and is reused).
_CHUNK = 16384
# A rolling variance whose centred sum of squares is below this fraction of its sum of squares about
# the block's anchor is rounding noise of a constant window and is reported as exactly 0.
_FLAT_VARIANCE_RELATIVE = 1e-14
# Rows per anchor block of a rolling standard deviation (see ``rolling_mean_std``).
_ANCHOR_BLOCK = 256


def _as_float(x) -> FloatArray:
    return np.ascontiguousarray(x, dtype=np.float64)


def _check_window(window: int, name: str = "window") -> int:
    if isinstance(window, bool) or int(window) != window or window < 1:
        raise ValueError(f"{name} must be a positive integer, got {window!r}")
    return int(window)


def _spans(begin: int, end: int) -> Iterator[tuple[int, int]]:
    """``[a, b)`` row ranges of at most ``_CHUNK`` rows covering ``[begin, end)``."""
    for a in range(begin, end, _CHUNK):
        yield a, min(a + _CHUNK, end)


def _nan_array(n: int) -> FloatArray:
    return np.full(n, np.nan)


def safe_divide(numerator, denominator, fill: float = 0.0) -> FloatArray:
    """``numerator / denominator`` with ``fill`` where the denominator is 0 (never inf); NaN stays NaN."""
    numerator, denominator = (
        np.asarray(numerator, dtype=np.float64),
        np.asarray(denominator, dtype=np.float64),
    )
    out = np.full(np.broadcast_shapes(numerator.shape, denominator.shape), fill)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _divide_into(out: FloatArray, numerator: FloatArray, denominator: FloatArray, fill: float) -> None:
    """``out[:] = numerator / denominator``, ``fill`` where the denominator is 0."""
    out.fill(fill)
    np.divide(numerator, denominator, out=out, where=denominator != 0)


def _divide_inplace(numerator: FloatArray, denominator: FloatArray, fill: float) -> None:
    """``numerator /= denominator``, ``fill`` where the denominator is 0."""
    zero = denominator == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(numerator, denominator, out=numerator)
    numerator[zero] = fill


# --------------------------------------------------------------------------- windowed reductions


def _reduce_into(x: FloatArray, window: int, op: Callable, out: FloatArray, buffers: FloatArray) -> None:
    """``out[..., j] = op(x[..., j : j + window])`` for every full window of ``x`` (last axis).

    Builds ``level_b[j] = op(x[j : j + 2**b])`` by doubling (ping-ponging between ``buffers[0]`` and
    ``buffers[1]``, each at least ``x``'s shape) and combines the levels of the set bits of
    ``window`` into ``out``. The combination order depends only on ``window``.
    """
    m = out.shape[-1]
    started, offset, level, size, bit = False, 0, x, 1, 0
    while True:
        if window >> bit & 1:
            chunk = level[..., offset : offset + m]
            if started:
                op(out, chunk, out=out)
            else:
                np.copyto(out, chunk)
                started = True
            offset += size
        if window >> (bit + 1) == 0:
            return
        length = level.shape[-1] - size
        target = buffers[bit % 2][..., :length]
        op(level[..., :length], level[..., size : size + length], out=target)
        level, size, bit = target, size * 2, bit + 1


def _scratch(rows: int, length: int) -> FloatArray:
    """Two ping-pong buffers for :func:`_reduce_into` over ``rows`` series of ``length`` values."""
    return np.empty((2, rows, length)) if rows > 1 else np.empty((2, length))


def _window_reduce(x: FloatArray, window: int, op: Callable) -> FloatArray:
    """``op`` over every trailing window of a 1-D ``x``; the first ``window - 1`` values are NaN."""
    n = x.shape[0]
    out = np.empty(n)
    if window > n:
        out.fill(np.nan)
        return out
    out[: window - 1] = np.nan
    buffers = _scratch(1, min(_CHUNK, n) + window - 1)
    for a, b in _spans(window - 1, n):
        _reduce_into(x[a - window + 1 : b], window, op, out[a:b], buffers)
    return out


def rolling_sum(x, window: int) -> FloatArray:
    """Sum over the trailing ``window`` values (NaN until the window is full)."""
    return _window_reduce(_as_float(x), _check_window(window), np.add)


def rolling_mean(x, window: int) -> FloatArray:
    """Simple moving average over the trailing ``window`` values (``ta``'s SMA)."""
    total = rolling_sum(x, window)
    total /= window
    return total


def sma(x, window: int) -> FloatArray:
    """Simple moving average, ``ta.trend.SMAIndicator``."""
    return rolling_mean(x, window)


def rolling_max(x, window: int) -> FloatArray:
    """Maximum over the trailing ``window`` values (exact)."""
    return _window_reduce(_as_float(x), _check_window(window), np.maximum)


def rolling_min(x, window: int) -> FloatArray:
    """Minimum over the trailing ``window`` values (exact)."""
    return _window_reduce(_as_float(x), _check_window(window), np.minimum)


def rolling_mean_std(x, window: int, ddof: int = 0, phase: int = 0) -> tuple[FloatArray, FloatArray]:
    """Rolling mean and standard deviation (``ddof`` as in pandas; Bollinger uses ``ddof=0``).

    Accurate for price series whose level is large compared with their local spread: the outputs
    are grouped in blocks of ``_ANCHOR_BLOCK`` rows, each block's values are shifted by the input at
    the block's first row, and the windowed sums of the shifted values and their squares give the
    variance without catastrophic cancellation (about 1e-13 relative on minute prices, against about
    1e-10 for pandas' online algorithm). A constant window has a standard deviation of exactly 0
    (see ``_FLAT_VARIANCE_RELATIVE``).

    Block boundaries sit at rows ``i`` with ``(i + phase) % _ANCHOR_BLOCK == 0``; passing the same
    absolute phase (e.g. the first candle's minute number) for two overlapping series gives them the
    same anchors and hence bit-identical values on their common rows past the first block.
    """
    x = _as_float(x)
    window = _check_window(window)
    if ddof >= window:
        raise ValueError(f"ddof={ddof} must be smaller than window={window}")
    n = x.shape[0]
    mean, std = np.empty(n), np.empty(n)
    mean[: window - 1] = std[: window - 1] = np.nan
    if n < window:
        return mean, std
    block = _ANCHOR_BLOCK
    per_chunk = max(1, _CHUNK // block)
    span = window - 1 + block  # input values behind one block of outputs
    first = window - 1
    segment = np.empty(per_chunk * block + window - 1)
    # Each block's shifted values are a row of `shifted`; the windowed sums run over the flattened
    # rows (contiguous, fast) and only windows that stay inside a row are read back.
    shifted, buffers = np.empty((2, per_chunk, span)), np.empty((2, 2, per_chunk * span))
    sums, stats = np.empty((2, per_chunk * span)), np.empty((2, per_chunk * span))
    with np.errstate(invalid="ignore", over="ignore"):
        for a in range(first - (first + phase) % block, n, per_chunk * block):
            b = min(a + per_chunk * block, n)
            k = -(-(b - a) // block)  # blocks in this chunk
            lo, hi = a - window + 1, a + k * block  # input rows behind the chunk (may run past the data)
            seg = segment[: hi - lo]
            seg[: max(0, -lo)] = x[0]
            seg[max(0, -lo) : min(hi, n) - lo] = x[max(0, lo) : min(hi, n)]
            seg[min(hi, n) - lo :] = x[-1]
            blocks = np.lib.stride_tricks.sliding_window_view(seg, span)[::block]
            anchors = blocks[:, window - 1 : window].copy()
            anchors[np.isnan(anchors)] = 0.0  # a NaN input only spoils the windows that contain it
            np.subtract(blocks, anchors, out=shifted[0, :k])
            flat = shifted[:, :k].reshape(2, k * span)
            np.multiply(flat[0], flat[0], out=flat[1])
            length = k * span - window + 1
            s = sums[:, :length]
            _reduce_into(flat, window, np.add, s, buffers[:, :, : k * span])
            m, v = stats[:, :length]
            np.divide(s[0], window, out=m)
            np.multiply(s[0], m, out=v)  # (sum y)^2 / window
            np.subtract(s[1], v, out=v)
            v[v <= _FLAT_VARIANCE_RELATIVE * s[1]] = 0.0
            v /= window - ddof
            np.sqrt(v, out=v)
            start = max(a, first)
            rows = stats[:, : k * span].reshape(2, k, span)[:, :, :block]
            rows[0] += anchors
            mean[start:b] = rows[0].reshape(-1)[start - a : b - a]
            std[start:b] = rows[1].reshape(-1)[start - a : b - a]
    return mean, std


# --------------------------------------------------------------------------- recursive smoothing
#
# The recursive indicators are sequential by nature (each value needs the previous one), so they run as
# one compiled loop each (numba, ``cache=True``: compiled once per machine, then loaded from
# ``__pycache__``). Every loop performs ``ta``'s arithmetic in ``ta``'s order (no fast-math
# reassociation), computing all of an indicator's intermediate series in the same pass.

_jit = njit(cache=True, nogil=True, error_model="numpy")


@_jit
def _ewm_loop(x: FloatArray, start: int, alpha: float, out: FloatArray) -> None:
    """``out[k] = (1 - alpha) * out[k-1] + alpha * x[k]`` from ``out[start] = x[start]`` on."""
    decay = 1.0 - alpha
    y = x[start]
    out[start] = y
    for k in range(start + 1, x.shape[0]):
        y = decay * y + alpha * x[k]
        out[k] = y


@_jit
def _rsi_loop(close: FloatArray, window: int, out: FloatArray) -> None:
    """Wilder averages (``alpha = 1 / window``, seeded at 0) of gains and losses and their RSI."""
    alpha = 1.0 / window
    decay = 1.0 - alpha
    gain = loss = 0.0
    out[0] = 50.0  # the first row has neither gains nor losses
    for k in range(1, close.shape[0]):
        change = close[k] - close[k - 1]
        gain = decay * gain + alpha * max(change, 0.0)
        loss = decay * loss + alpha * max(-change, 0.0)
        total = loss + gain
        out[k] = gain / total * 100.0 if total != 0.0 else 50.0


@_jit
def _macd_loop(
    close: FloatArray, fast: int, slow: int, signal: int, line: FloatArray, signal_line: FloatArray
) -> None:
    """EMA(fast) - EMA(slow) (both seeded at the first close, NaN before row ``max(fast, slow) - 1``) and
    the EMA of that line from its first value (NaN before ``signal - 1`` more rows)."""
    alpha_fast, alpha_slow, alpha_signal = 2.0 / (fast + 1.0), 2.0 / (slow + 1.0), 2.0 / (signal + 1.0)
    decay_fast, decay_slow, decay_signal = 1.0 - alpha_fast, 1.0 - alpha_slow, 1.0 - alpha_signal
    start = max(fast, slow) - 1
    ema_fast = ema_slow = close[0]
    smoothed = 0.0
    for k in range(close.shape[0]):
        if k:
            ema_fast = decay_fast * ema_fast + alpha_fast * close[k]
            ema_slow = decay_slow * ema_slow + alpha_slow * close[k]
        value = ema_fast - ema_slow
        if k < start:
            line[k] = signal_line[k] = np.nan
            continue
        smoothed = value if k == start else decay_signal * smoothed + alpha_signal * value
        line[k] = value
        signal_line[k] = smoothed if k >= start + signal - 1 else np.nan


@_jit
def _true_range_at(high: FloatArray, low: FloatArray, close: FloatArray, k: int) -> float:
    return max(high[k], close[k - 1]) - min(low[k], close[k - 1])


@_jit
def _atr_loop(high: FloatArray, low: FloatArray, close: FloatArray, window: int, out: FloatArray) -> None:
    """``ta``'s ATR: the mean of the first ``window`` true ranges at row ``window - 1``, then
    ``atr = (atr * (window - 1) + tr) / window`` (as ``atr * (1 - 1/window) + tr / window``: no division
    in the loop); NaN before."""
    decay, gain = (window - 1) / window, 1.0 / window
    total = high[0] - low[0]
    out[0] = np.nan
    for k in range(1, window):
        total += _true_range_at(high, low, close, k)
        out[k] = np.nan
    value = total / window
    out[window - 1] = value
    for k in range(window, close.shape[0]):
        value = decay * value + gain * _true_range_at(high, low, close, k)
        out[k] = value


@_jit
def _adx_loop(
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    window: int,
    adx_out: FloatArray,
    plus_di: FloatArray,
    minus_di: FloatArray,
) -> None:
    """Wilder running sums (``S = S * (1 - 1/window) + x``, seeded with rows ``1..window``) of the true
    range and the directional movements, +DI/-DI from them (from row ``window``), DX, and ADX (seeded
    with the mean DX of rows ``window..2*window-1``, then Wilder-averaged). Outputs are NaN-filled."""
    decay = 1.0 - 1.0 / window
    adx_decay, adx_gain = (window - 1) / window, 1.0 / window
    tr_sum = plus_sum = minus_sum = dx_sum = value = 0.0
    for k in range(1, close.shape[0]):
        tr = _true_range_at(high, low, close, k)
        up, down = high[k] - high[k - 1], low[k - 1] - low[k]
        plus = up if up > down and up > 0.0 else 0.0
        minus = down if down > up and down > 0.0 else 0.0
        if k <= window:
            tr_sum, plus_sum, minus_sum = tr_sum + tr, plus_sum + plus, minus_sum + minus
            if k < window:
                continue
        else:
            tr_sum = tr + decay * tr_sum
            plus_sum = plus + decay * plus_sum
            minus_sum = minus + decay * minus_sum
        p = plus_sum / tr_sum * 100.0 if tr_sum != 0.0 else 0.0
        m = minus_sum / tr_sum * 100.0 if tr_sum != 0.0 else 0.0
        plus_di[k], minus_di[k] = p, m
        total = p + m
        dx = abs(p - m) / total * 100.0 if total != 0.0 else 0.0
        if k < 2 * window:
            dx_sum += dx
            if k == 2 * window - 1:
                value = dx_sum / window
                adx_out[k] = value
        else:
            value = adx_decay * value + adx_gain * dx
            adx_out[k] = value


def ewm(x, alpha: float, min_periods: int = 1) -> FloatArray:
    """``pandas.Series.ewm(alpha=alpha, adjust=False, min_periods=...).mean()`` for leading-NaN input.

    The average starts at the first non-NaN value (``y = x`` there) and NaN is returned until
    ``min_periods`` values have been seen. Values after the first non-NaN must be finite.
    """
    x = _as_float(x)
    n = x.shape[0]
    start = 0
    if n and np.isnan(x[0]):
        finite = np.flatnonzero(~np.isnan(x))
        if finite.size == 0:
            return _nan_array(n)
        start = int(finite[0])
    out = np.empty(n)
    if n:
        _ewm_loop(x, start, float(alpha), out)
    out[: start + max(min_periods, 1) - 1] = np.nan
    return out


def ema(x, window: int) -> FloatArray:
    """Exponential moving average, ``ta.trend.EMAIndicator`` (span ``window``, seeded at the first value)."""
    window = _check_window(window)
    return ewm(x, 2.0 / (window + 1.0), min_periods=window)


def true_range(high, low, close) -> FloatArray:
    """True range; the first row (no previous close) is ``high - low`` as in ``ta``."""
    high, low, close = _as_float(high), _as_float(low), _as_float(close)
    n = close.shape[0]
    tr = np.empty(n)
    if n == 0:
        return tr
    tr[0] = high[0] - low[0]
    scratch = np.empty(min(_CHUNK, n))
    for a, b in _spans(1, n):
        np.maximum(high[a:b], close[a - 1 : b - 1], out=tr[a:b])
        np.minimum(low[a:b], close[a - 1 : b - 1], out=scratch[: b - a])
        tr[a:b] -= scratch[: b - a]
    return tr


def atr(high, low, close, window: int = 14) -> FloatArray:
    """Average true range, ``ta.volatility.AverageTrueRange`` (Wilder; seeded with the mean of the
    first ``window`` true ranges). NaN before row ``window - 1`` where ``ta`` returns 0.0."""
    window = _check_window(window)
    high, low, close = _as_float(high), _as_float(low), _as_float(close)
    n = close.shape[0]
    if n < window:
        return _nan_array(n)
    out = np.empty(n)
    _atr_loop(high, low, close, window, out)
    return out


def rsi(close, window: int = 14) -> FloatArray:
    """Relative strength index, ``ta.momentum.RSIIndicator`` (Wilder averages of gains and losses
    seeded at 0 on the first row). 100 with losses 0, 50 with neither gains nor losses."""
    window = _check_window(window)
    close = _as_float(close)
    n = close.shape[0]
    if n < window:
        return _nan_array(n)
    out = np.empty(n)
    _rsi_loop(close, window, out)
    out[: window - 1] = np.nan
    return out


def macd(close, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[FloatArray, FloatArray, FloatArray]:
    """MACD line, signal line and histogram, ``ta.trend.MACD``: EMA(fast) - EMA(slow), both seeded at
    the first close, and the EMA of the line from its first value (one pass for all three EMAs)."""
    fast, slow, signal = (
        _check_window(fast, "fast"),
        _check_window(slow, "slow"),
        _check_window(signal, "signal"),
    )
    close = _as_float(close)
    n = close.shape[0]
    if n <= max(fast, slow) - 1:
        return _nan_array(n), _nan_array(n), _nan_array(n)
    line, signal_line = np.empty(n), np.empty(n)
    _macd_loop(close, fast, slow, signal, line, signal_line)
    return line, signal_line, line - signal_line


def bollinger(close, window: int = 20, n_std: float = 2.0, phase: int = 0) -> dict[str, FloatArray]:
    """Bollinger bands, ``ta.volatility.BollingerBands`` (population std).

    Returns ``middle``, ``upper``, ``lower``, ``pctb`` ((close - lower) / (upper - lower); 0.5 when
    the bands coincide) and ``width`` ((upper - lower) / middle * 100, as ``ta``'s ``wband``).
    ``phase`` aligns the standard deviation's anchor blocks (see :func:`rolling_mean_std`).
    """
    close = _as_float(close)
    middle, band = rolling_mean_std(close, window, ddof=0, phase=phase)
    band *= n_std
    upper, lower = middle + band, middle - band
    band *= 2.0
    pctb = close - lower
    _divide_inplace(pctb, band, 0.5)
    width = band  # (upper - lower) / middle * 100, computed in place
    _divide_inplace(width, middle, 0.0)
    width *= 100.0
    return {"middle": middle, "upper": upper, "lower": lower, "pctb": pctb, "width": width}


def adx(high, low, close, window: int = 14) -> tuple[FloatArray, FloatArray, FloatArray]:
    """ADX, +DI and -DI, ``ta.trend.ADXIndicator``.

    True range and directional movements from row 1 on are smoothed with Wilder's running sum
    (``S = S - S / window + x``) seeded with the sum of rows ``1..window``; +DI/-DI are defined from
    row ``window``, ADX (seeded with the mean DX of rows ``window..2*window-1``) from row
    ``2 * window - 1``. NaN before that (``ta``: 0.0). A zero true-range sum gives DI 0, equal DIs
    summing to 0 give DX 0 (as in ``ta``).
    """
    window = _check_window(window)
    high, low, close = _as_float(high), _as_float(low), _as_float(close)
    n = close.shape[0]
    adx_out, plus_di, minus_di = _nan_array(n), _nan_array(n), _nan_array(n)
    if n > window:
        _adx_loop(high, low, close, window, adx_out, plus_di, minus_di)
    return adx_out, plus_di, minus_di


def stochastic(high, low, close, window: int = 14, smooth: int = 3) -> tuple[FloatArray, FloatArray]:
    """Stochastic %K and its ``smooth``-period SMA %D, ``ta.momentum.StochasticOscillator``.
    %K is 50 when the window's high equals its low."""
    window, smooth = _check_window(window), _check_window(smooth, "smooth")
    high, low, close = _as_float(high), _as_float(low), _as_float(close)
    n = close.shape[0]
    k = _nan_array(n)
    extremes, buffers = np.empty((2, _CHUNK)), _scratch(1, min(_CHUNK, n) + window - 1)
    for a, b in _spans(window - 1, n):
        lowest, highest = extremes[:, : b - a]
        _reduce_into(low[a - window + 1 : b], window, np.minimum, lowest, buffers)
        _reduce_into(high[a - window + 1 : b], window, np.maximum, highest, buffers)
        highest -= lowest
        np.subtract(close[a:b], lowest, out=lowest)
        _divide_into(k[a:b], lowest, highest, 0.5)
    k[window - 1 :] *= 100.0
    return k, rolling_mean(k, smooth)


def typical_price(high, low, close) -> FloatArray:
    """``(high + low + close) / 3``."""
    return (_as_float(high) + _as_float(low) + _as_float(close)) / 3.0


def _typical_price_into(out: FloatArray, high: FloatArray, low: FloatArray, close: FloatArray) -> FloatArray:
    np.add(high, low, out=out)
    out += close
    out /= 3.0
    return out


def cci(high, low, close, window: int = 20, constant: float = 0.015) -> FloatArray:
    """Commodity channel index, ``ta.trend.CCIIndicator`` (0 when the mean deviation is 0).

    The mean absolute deviation takes one vectorized pass per window offset (``window`` passes over
    each chunk; no loop over rows)."""
    window = _check_window(window)
    high, low, close = _as_float(high), _as_float(low), _as_float(close)
    n = close.shape[0]
    out = _nan_array(n)
    seg_len = min(_CHUNK, n) + window - 1
    tp, work, buffers = np.empty(seg_len), np.empty((3, _CHUNK)), _scratch(1, seg_len)
    for a, b in _spans(window - 1, n):
        lo = a - window + 1
        t = _typical_price_into(tp[: b - lo], high[lo:b], low[lo:b], close[lo:b])
        mean, deviation, term = work[:, : b - a]
        _reduce_into(t, window, np.add, mean, buffers)
        mean /= window
        deviation.fill(0.0)
        for offset in range(window):
            np.subtract(t[offset : offset + b - a], mean, out=term)
            deviation += np.abs(term, out=term)
        deviation *= constant / window
        np.subtract(t[window - 1 :], mean, out=term)
        _divide_into(out[a:b], term, deviation, 0.0)
    return out


def mfi(high, low, close, volume, window: int = 14) -> FloatArray:
    """Money flow index, ``ta.volume.MFIIndicator`` (50 when the window has no money flow)."""
    window = _check_window(window)
    high, low, close, volume = _as_float(high), _as_float(low), _as_float(close), _as_float(volume)
    n = close.shape[0]
    out = _nan_array(n)
    seg_len = min(_CHUNK, n) + window
    tp, flows, sums, buffers = (
        np.empty(seg_len),
        np.empty((2, seg_len)),
        np.empty((2, _CHUNK)),
        _scratch(2, seg_len),
    )
    for a, b in _spans(window, n):
        lo = a - window  # the candle before the first one in the first window
        t = _typical_price_into(tp[: b - lo], high[lo:b], low[lo:b], close[lo:b])
        positive, negative = flows[:, : b - lo - 1]
        np.multiply(t[1:], volume[lo + 1 : b], out=positive)
        np.multiply(positive, t[1:] < t[:-1], out=negative)
        positive *= t[1:] > t[:-1]
        s = sums[:, : b - a]
        _reduce_into(flows[:, : b - lo - 1], window, np.add, s, buffers)
        s[1] += s[0]
        _divide_into(out[a:b], s[0], s[1], 0.5)
    out[window:] *= 100.0
    return out


def rolling_vwap(high, low, close, volume, window: int = 60) -> FloatArray:
    """Rolling volume-weighted average price over ``window`` candles, ``ta.volume.VolumeWeightedAveragePrice``
    (not session-anchored); the mean typical price when the window has no volume."""
    window = _check_window(window)
    high, low, close, volume = _as_float(high), _as_float(low), _as_float(close), _as_float(volume)
    n = close.shape[0]
    out = _nan_array(n)
    seg_len = min(_CHUNK, n) + window - 1
    weighted, sums, buffers = np.empty((2, seg_len)), np.empty((2, _CHUNK)), _scratch(2, seg_len)
    for a, b in _spans(window - 1, n):
        lo = a - window + 1
        w = weighted[:, : b - lo]
        _typical_price_into(w[0], high[lo:b], low[lo:b], close[lo:b])
        w[0] *= volume[lo:b]
        w[1] = volume[lo:b]
        s = sums[:, : b - a]
        _reduce_into(w, window, np.add, s, buffers)
        _divide_into(out[a:b], s[0], s[1], np.nan)
        no_volume = s[1] == 0
        if no_volume.any():
            _typical_price_into(w[0], high[lo:b], low[lo:b], close[lo:b])
            _reduce_into(w[0], window, np.add, s[0], buffers[:, 0])
            out[a:b][no_volume] = s[0][no_volume] / window
    return out


def rolling_obv(close, volume, window: int = 60, normalize: bool = True) -> FloatArray:
    """On-balance volume over the trailing ``window`` candles instead of since inception.

    Each candle contributes ``-volume`` when its close is below the previous close and ``+volume``
    otherwise (``ta.volume.OnBalanceVolumeIndicator``'s rule, ties count as up), so the raw value
    equals ``ta``'s cumulative OBV differenced over ``window`` rows. With ``normalize`` the sum is
    divided by the window's total volume (range -1..1; 0 without volume).
    """
    window = _check_window(window)
    close, volume = _as_float(close), _as_float(volume)
    n = close.shape[0]
    out = _nan_array(n)
    seg_len = min(_CHUNK, n) + window
    flows, sums, buffers = np.empty((2, seg_len)), np.empty((2, _CHUNK)), _scratch(2, seg_len)
    for a, b in _spans(window, n):
        lo = a - window
        f = flows[:, : b - lo - 1]
        np.copyto(f[1], volume[lo + 1 : b])
        np.negative(f[1], out=f[0])
        np.copyto(f[0], f[1], where=close[lo + 1 : b] >= close[lo : b - 1])
        s = sums[:, : b - a]
        _reduce_into(f, window, np.add, s, buffers)
        if normalize:
            _divide_into(out[a:b], s[0], s[1], 0.0)
        else:
            out[a:b] = s[0]
    return out
