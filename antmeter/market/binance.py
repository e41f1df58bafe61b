"""Binance REST klines client: paged, weight-aware, retrying, and strict about what it stores.

Only **closed** candles are returned: Binance also sends the candle that is still open (its close
time lies in the future), and that one must never be stored as final. Every row is checked for
structure (12 fields, integer times, numeric strings, consistent close time, inside the requested
window, increasing) and then by :func:`antmeter.market.candles.validate_candles`; a bad row raises
:class:`~antmeter.market.candles.CandleValidationError` naming the page, the index in the page, the open
time and the field. Nothing is silently dropped.

Wire format (``GET /api/v3/klines``), one array per candle::

    [open_time_ms, "open", "high", "low", "close", "volume", close_time_ms, "quote_volume",
     trades, "taker_buy_base", "taker_buy_quote", "ignore"]

where ``close_time_ms = open_time_ms + interval_ms - 1``.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pandas as pd

from antmeter.market.candles import (
    CandleValidationError,
    closed_before,
    empty_candles,
    interval_timedelta,
    validate_candles,
)

logger = logging.getLogger("antmeter.market.binance")

KLINES_PATH = "/api/v3/klines"
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
# Field names of one kline array, in wire order (also the column order of data.binance.vision dumps).
KLINE_FIELDS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base",
    "taker_buy_quote",
    "ignore",
)
_VALUE_FIELDS = ("open", "high", "low", "close", "volume")


class BinanceError(RuntimeError):
    """A request Binance refused or that kept failing; carries the HTTP status and Binance error code."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        msg: str | None = None,
        params: dict[str, Any] | None = None,
    ):
        self.status, self.code, self.msg, self.params = status, code, msg, dict(params or {})
        super().__init__(message)


@dataclass(frozen=True)
class BinanceConfig:
    """Where and how politely to talk to Binance.

    ``base_url`` may point at api.binance.com, api.binance.us or testnet.binance.vision.
    ``max_retry_after_s``: a 429/418 whose ``Retry-After`` asks for a longer wait than this raises
    :class:`BinanceError` instead of blocking (an IP ban can last days).
    """

    base_url: str = "https://api.binance.com"
    timeout_s: float = 10.0
    max_retries: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    weight_limit_per_minute: int = 6000
    request_weight: int = 2
    page_limit: int = 1000
    max_retry_after_s: float = 600.0


class BinanceKlinesClient:
    """Fetch closed klines from Binance's REST API (sync, httpx).

    ``sleep`` and ``clock`` (seconds since the epoch) are injectable so that waits can be recorded
    instead of slept; ``rng`` drives the backoff jitter.
    """

    def __init__(
        self,
        config: BinanceConfig | None = None,
        *,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ):
        self.config = config or BinanceConfig()
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=self.config.timeout_s)
        self._sleep, self._clock = sleep, clock
        self._rng = rng or random.Random()
        self._used_weight: int | None = None
        self._weight_minute: int | None = None

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> BinanceKlinesClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def fetch_klines(
        self,
        symbol: str,
        interval: str,
        start: pd.Timestamp,
        end: pd.Timestamp,
        now: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Closed candles with open time in ``[start, end)`` as a canonical candle frame.

        ``now`` (default: the injected clock) decides which candles are closed: a candle is kept
        only if ``open_time + interval <= now``.
        """
        step = interval_timedelta(interval)
        start, end = _utc(start, "start"), _utc(end, "end")
        now = _utc(now, "now") if now is not None else pd.Timestamp(self._clock(), unit="s", tz="UTC")
        request_end = min(end, now)  # candles opening at or after `now` cannot exist yet
        if start >= request_end:
            return empty_candles()
        step_ms, start_ms, end_ms = _ms(step), _ms(start), _ms(end)
        last_ms = _ms(request_end) - 1  # Binance's endTime is inclusive
        source = f"binance {symbol} {interval}"

        pages: list[pd.DataFrame] = []
        cursor_ms, previous_open_ms, page = start_ms, None, 0
        while cursor_ms <= last_ms:
            params = {
                "symbol": symbol,
                "interval": interval,
                "startTime": cursor_ms,
                "endTime": last_ms,
                "limit": self.config.page_limit,
            }
            rows = self._get_json(params)
            frame, last_open_ms = _parse_page(
                rows, f"{source} page {page}", step_ms, start_ms, end_ms, previous_open_ms
            )
            if frame.empty:
                break
            pages.append(frame)
            previous_open_ms = last_open_ms
            cursor_ms = last_open_ms + step_ms
            page += 1
            if len(frame) < self.config.page_limit:
                break
        if not pages:
            return empty_candles()
        candles = pd.concat(pages, ignore_index=True)
        return validate_candles(closed_before(candles, now, interval), source)

    # -- HTTP -------------------------------------------------------------------------------------

    def _get_json(self, params: dict[str, Any]) -> Any:
        """One GET with weight pacing and retries; returns the decoded JSON body of a 200."""
        url = self.config.base_url.rstrip("/") + KLINES_PATH
        described = " ".join(f"{k}={v}" for k, v in params.items())
        last_problem = "no attempt made"
        last_status: int | None = None
        for attempt in range(self.config.max_retries + 1):
            self._wait_for_weight()
            try:
                response = self._http.get(url, params=params, timeout=self.config.timeout_s)
            except httpx.TransportError as exc:  # includes httpx.TimeoutException
                last_problem, last_status = f"{type(exc).__name__}: {exc}", None
                self._backoff(attempt, described, last_problem)
                continue
            self._record_weight(response)
            status = response.status_code
            last_status = status
            if status == 200:
                try:
                    return response.json()
                except ValueError:
                    raise BinanceError(
                        f"Binance GET {url} ({described}) returned HTTP 200 with a body that is not JSON: "
                        f"{response.text[:200]!r}",
                        status=status,
                        params=params,
                    ) from None
            if status in (429, 418):
                last_problem = f"HTTP {status}"
                self._wait_retry_after(response, attempt, url, described, params)
                continue
            if 500 <= status < 600:
                last_problem = f"HTTP {status}"
                self._backoff(attempt, described, last_problem)
                continue
            code, msg = _error_body(response)
            raise BinanceError(
                f"Binance GET {url} ({described}) failed: HTTP {status}, code {code}: {msg}",
                status=status,
                code=code,
                msg=msg,
                params=params,
            )
        raise BinanceError(
            f"Binance GET {url} ({described}) failed after {self.config.max_retries + 1} attempts; "
            f"last status {last_status if last_status is not None else 'none'} ({last_problem})",
            status=last_status,
            params=params,
        )

    def _backoff(self, attempt: int, described: str, problem: str) -> None:
        """Sleep an exponential backoff with full jitter, unless this was the last attempt."""
        if attempt >= self.config.max_retries:
            return
        cap = min(self.config.backoff_max_s, self.config.backoff_base_s * 2**attempt)
        delay = self._rng.uniform(0.0, cap)
        logger.warning(
            "klines %s: %s; retry %d/%d in %.2f s",
            described,
            problem,
            attempt + 1,
            self.config.max_retries,
            delay,
        )
        self._sleep(delay)

    def _wait_retry_after(
        self, response: httpx.Response, attempt: int, url: str, described: str, params: dict[str, Any]
    ) -> None:
        """Honor ``Retry-After`` on 429 (rate limited) and 418 (IP banned) strictly."""
        status = response.status_code
        code, msg = _error_body(response)
        wait = _retry_after_seconds(response.headers.get("Retry-After"), self._clock())
        if wait is None:
            wait = self._seconds_to_next_minute()
            header_note = "no Retry-After header; waiting for the next weight window"
        else:
            header_note = f"Retry-After {wait:g} s"
        if status == 418:
            logger.error("klines %s: HTTP 418, IP banned by Binance (%s); %s", described, msg, header_note)
        else:
            logger.warning("klines %s: HTTP 429, rate limited (%s); %s", described, msg, header_note)
        if attempt >= self.config.max_retries:
            return
        if wait > self.config.max_retry_after_s:
            raise BinanceError(
                f"Binance GET {url} ({described}): HTTP {status}, code {code}: {msg}; Retry-After {wait:g} s "
                f"exceeds max_retry_after_s={self.config.max_retry_after_s:g}",
                status=status,
                code=code,
                msg=msg,
                params=params,
            )
        self._sleep(wait)
        self._used_weight = self._weight_minute = None  # the server told us when to come back

    # -- request weight ---------------------------------------------------------------------------

    def _record_weight(self, response: httpx.Response) -> None:
        header = response.headers.get(WEIGHT_HEADER)
        if header is None:
            return
        try:
            self._used_weight = int(header)
        except ValueError:
            logger.warning("ignoring unparseable %s header %r", WEIGHT_HEADER, header)
            return
        self._weight_minute = int(self._clock() // 60)

    def _wait_for_weight(self) -> None:
        """Sleep to the next minute boundary if the next request would exceed the weight limit."""
        if self._used_weight is None or self._weight_minute is None:
            return
        if int(self._clock() // 60) != self._weight_minute:
            self._used_weight = 0  # a new one-minute window has started
            self._weight_minute = int(self._clock() // 60)
            return
        if self._used_weight + self.config.request_weight <= self.config.weight_limit_per_minute:
            return
        wait = self._seconds_to_next_minute()
        logger.info(
            "used weight %d + %d would exceed %d/min; waiting %.2f s for the next minute",
            self._used_weight,
            self.config.request_weight,
            self.config.weight_limit_per_minute,
            wait,
        )
        self._sleep(wait)
        self._used_weight = self._weight_minute = None

    def _seconds_to_next_minute(self) -> float:
        now = self._clock()
        return (math.floor(now / 60) + 1) * 60 - now


# -- parsing --------------------------------------------------------------------------------------


def _parse_page(
    rows: Any,
    source: str,
    step_ms: int,
    start_ms: int,
    end_ms: int,
    previous_open_ms: int | None,
) -> tuple[pd.DataFrame, int | None]:
    """Check one page of kline arrays and return (candle frame, last open time in ms)."""
    if not isinstance(rows, list):
        raise CandleValidationError(source, "-", "-", f"response is not a JSON array: {str(rows)[:200]!r}")
    open_times: list[int] = []
    values: dict[str, list[float]] = {name: [] for name in _VALUE_FIELDS}
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(KLINE_FIELDS):
            size = len(row) if isinstance(row, list) else type(row).__name__
            raise CandleValidationError(
                source, i, "-", f"expected an array of {len(KLINE_FIELDS)} fields, got {size}"
            )
        open_ms = _integer(row[0], source, i, "open_time")
        label = f"{i} (open_time={pd.Timestamp(open_ms, unit='ms', tz='UTC')})"
        close_ms = _integer(row[6], source, label, "close_time")
        if close_ms != open_ms + step_ms - 1:
            raise CandleValidationError(
                source,
                label,
                "close_time",
                f"{close_ms} is not open_time + interval - 1 ms ({open_ms + step_ms - 1})",
            )
        if open_ms % step_ms:
            raise CandleValidationError(source, label, "open_time", "not aligned to the interval")
        if not start_ms <= open_ms < end_ms:
            raise CandleValidationError(source, label, "open_time", "outside the requested window")
        if previous_open_ms is not None and open_ms <= previous_open_ms:
            raise CandleValidationError(source, label, "open_time", "not after the previous candle")
        previous_open_ms = open_ms
        open_times.append(open_ms)
        for name in _VALUE_FIELDS:
            values[name].append(_number(row[KLINE_FIELDS.index(name)], source, label, name))
    frame = pd.DataFrame({"open_time": pd.to_datetime(open_times, unit="ms", utc=True), **values})
    if frame.empty:
        return empty_candles(), previous_open_ms
    return validate_candles(frame, source), previous_open_ms


def _integer(value: Any, source: str, row: int | str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CandleValidationError(
            source, row, field, f"expected an integer millisecond time, got {value!r}"
        )
    return value


def _number(value: Any, source: str, row: int | str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise CandleValidationError(source, row, field, f"expected a numeric string, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise CandleValidationError(source, row, field, f"not a number: {value!r}") from None
    if not math.isfinite(number):
        raise CandleValidationError(source, row, field, f"not a finite number: {value!r}")
    return number


def _error_body(response: httpx.Response) -> tuple[int | None, str]:
    """Binance's documented error body ``{"code": -1121, "msg": "Invalid symbol."}``, best effort."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        code = body.get("code")
        return (code if isinstance(code, int) else None), str(body.get("msg", body))
    return None, str(body)[:200]


def _retry_after_seconds(header: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), or None if absent/unreadable."""
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        logger.warning("unreadable Retry-After header %r", header)
        return None
    return max(0.0, when.timestamp() - now)


def _utc(value: pd.Timestamp, name: str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {stamp}")
    return stamp.tz_convert("UTC")


def _ms(value: pd.Timestamp | pd.Timedelta) -> int:
    if isinstance(value, pd.Timedelta):
        return value // pd.Timedelta(milliseconds=1)
    return (value - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
