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
import json
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
from antmeter.market.redaction import get_logger, redact
from antmeter.market.symbols import validate_symbol

logger = get_logger("antmeter.market.binance")

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
    ``deadline_s``: the whole fetch (every page, retry and wait, and reading slow responses) must
    finish within this many seconds, else :class:`BinanceError`. ``max_total_retry_wait_s`` caps the
    sum of all backoff and ``Retry-After`` waits of one fetch. ``empty_page_retries``: how often an
    empty answer in the middle of the requested range is asked again before it is taken as "the
    exchange has no more data".
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
    deadline_s: float = 300.0
    max_total_retry_wait_s: float = 120.0
    empty_page_retries: int = 1


@dataclass(frozen=True)
class ExchangeOutage:
    """``[start, end)``: a stretch the exchange has no candles for, confirmed by a request starting at
    ``start`` whose first candle opened at ``end`` (or, at the end, that returned nothing)."""

    start: pd.Timestamp
    end: pd.Timestamp

    def __str__(self) -> str:
        return f"{self.start} .. {self.end}"


@dataclass(frozen=True)
class KlinesFetch:
    """What one :meth:`BinanceKlinesClient.fetch_klines_report` call got: candles, outages, requests."""

    candles: pd.DataFrame
    outages: tuple[ExchangeOutage, ...]
    requests: int


class _Deadline:
    """The overall time budget of one fetch: real elapsed time plus injected (possibly fake) sleeps."""

    def __init__(self, seconds: float):
        self.seconds, self.started, self.slept, self.retry_waited = seconds, time.monotonic(), 0.0, 0.0

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.started) - self.slept


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
        only if ``open_time + interval <= now``. See :meth:`fetch_klines_report` for the outages.
        """
        return self.fetch_klines_report(symbol, interval, start, end, now).candles

    def fetch_klines_report(
        self,
        symbol: str,
        interval: str,
        start: pd.Timestamp,
        end: pd.Timestamp,
        now: pd.Timestamp | None = None,
    ) -> KlinesFetch:
        """Page until the window is covered or the exchange has no more data, telling truncation from outages.

        A page that stops short of the end, skips candles or comes back empty is followed by a request
        starting at the first missing candle: if that returns the missing candles, the earlier page was
        merely truncated and paging goes on; if its first candle opens later, the stretch in between is
        an exchange outage (recorded, not raised). An empty answer is asked again
        ``empty_page_retries`` times; still empty means the exchange has nothing more (recorded as an
        outage when those candles should have closed by ``now``).
        """
        validate_symbol(symbol, "binance symbol")
        step = interval_timedelta(interval)
        start, end = _utc(start, "start"), _utc(end, "end")
        now = _utc(now, "now") if now is not None else pd.Timestamp(self._clock(), unit="s", tz="UTC")
        request_end = min(end, now)  # candles opening at or after `now` cannot exist yet
        if start >= request_end:
            return KlinesFetch(empty_candles(), (), 0)
        step_ms, start_ms, end_ms = _ms(step), _ms(start), _ms(end)
        last_ms = _ms(request_end) - 1  # Binance's endTime is inclusive
        source = f"binance {symbol} {interval}"
        deadline = _Deadline(self.config.deadline_s)

        pages: list[pd.DataFrame] = []
        outages: list[ExchangeOutage] = []
        cursor_ms, previous_open_ms, page, empty_answers, requests = start_ms, None, 0, 0, 0
        while cursor_ms <= last_ms:
            params = {
                "symbol": symbol,
                "interval": interval,
                "startTime": cursor_ms,
                "endTime": last_ms,
                "limit": self.config.page_limit,
            }
            rows = self._get_json(params, deadline)
            requests += 1
            frame, _ = _parse_page(
                rows, f"{source} page {page}", interval, start_ms, end_ms, previous_open_ms, now
            )
            page += 1
            if frame.empty:
                if empty_answers < self.config.empty_page_retries:
                    empty_answers += 1
                    continue
                gap_end = min(request_end, (now - step).floor(step) + step)  # candles that have closed
                if _stamp(cursor_ms) < gap_end:
                    outages.append(ExchangeOutage(_stamp(cursor_ms), gap_end))
                break
            empty_answers = 0
            first_ms = _ms(frame["open_time"].iloc[0])
            if first_ms > cursor_ms:  # asked from cursor_ms, the exchange's first candle is later
                outages.append(ExchangeOutage(_stamp(cursor_ms), _stamp(first_ms)))
            contiguous = _contiguous_prefix(frame, step)
            pages.append(contiguous)
            previous_open_ms = _ms(contiguous["open_time"].iloc[-1])
            cursor_ms = previous_open_ms + step_ms
        for outage in outages:
            logger.warning("klines %s: no candles on the exchange for %s", source, outage)
        if not pages:
            return KlinesFetch(empty_candles(), tuple(outages), requests)
        candles = pd.concat(pages, ignore_index=True)
        closed = validate_candles(closed_before(candles, now, interval), source, interval, now=now)
        return KlinesFetch(closed, tuple(outages), requests)

    # -- HTTP -------------------------------------------------------------------------------------

    def _get_json(self, params: dict[str, Any], deadline: _Deadline) -> Any:
        """One GET with weight pacing and retries; returns the decoded JSON body of a 200."""
        url = self.config.base_url.rstrip("/") + KLINES_PATH
        described = " ".join(f"{k}={v}" for k, v in params.items())
        last_problem = "no attempt made"
        last_status: int | None = None
        for attempt in range(self.config.max_retries + 1):
            self._wait_for_weight(deadline, described)
            try:
                response = self._read_response(url, params, deadline, described)
            except httpx.TransportError as exc:  # includes httpx.TimeoutException
                last_problem, last_status = redact(f"{type(exc).__name__}: {exc}"), None
                self._backoff(attempt, described, last_problem, deadline)
                continue
            self._record_weight(response)
            status = response.status_code
            last_status = status
            if status == 200:
                try:
                    return json.loads(response.content)
                except ValueError:
                    raise BinanceError(
                        f"Binance GET {redact(url)} ({described}) returned HTTP 200 with a body that is not JSON: "
                        f"{response.content[:200]!r}",
                        status=status,
                        params=params,
                    ) from None
            if status in (429, 418):
                last_problem = f"HTTP {status}"
                self._wait_retry_after(response, attempt, url, described, params, deadline)
                continue
            if 500 <= status < 600:
                last_problem = f"HTTP {status}"
                self._backoff(attempt, described, last_problem, deadline)
                continue
            code, msg = _error_body(response)
            raise BinanceError(
                f"Binance GET {redact(url)} ({described}) failed: HTTP {status}, code {code}: {msg}",
                status=status,
                code=code,
                msg=msg,
                params=params,
            )
        raise BinanceError(
            f"Binance GET {redact(url)} ({described}) failed after {self.config.max_retries + 1} attempts; "
            f"last status {last_status if last_status is not None else 'none'} ({last_problem})",
            status=last_status,
            params=params,
        )

    def _read_response(
        self, url: str, params: dict[str, Any], deadline: _Deadline, described: str
    ) -> httpx.Response:
        """GET ``url`` and read the body in chunks, giving up when the fetch deadline passes (a server
        trickling bytes resets the read timeout with every chunk, so that alone would not end it)."""
        timeout = min(self.config.timeout_s, self._remaining(deadline, described))
        with self._http.stream("GET", url, params=params, timeout=timeout) as streamed:
            chunks = []
            for chunk in streamed.iter_bytes():
                chunks.append(chunk)
                self._remaining(deadline, described)
            return httpx.Response(
                streamed.status_code,
                headers=streamed.headers,
                content=b"".join(chunks),
                request=streamed.request,
            )

    def _remaining(self, deadline: _Deadline, described: str) -> float:
        """Seconds left of the fetch deadline; raises :class:`BinanceError` when none are."""
        left = deadline.remaining()
        if left <= 0:
            raise BinanceError(
                f"Binance klines {described}: the fetch took longer than deadline_s={self.config.deadline_s:g} s"
            )
        return left

    def _sleep_within(self, wait: float, deadline: _Deadline, described: str, *, retry: bool) -> None:
        """Sleep ``wait`` seconds unless that would pass the deadline or the total retry-wait cap."""
        if retry and deadline.retry_waited + wait > self.config.max_total_retry_wait_s:
            raise BinanceError(
                f"Binance klines {described}: waiting {wait:.2f} s more would exceed "
                f"max_total_retry_wait_s={self.config.max_total_retry_wait_s:g} s "
                f"(already waited {deadline.retry_waited:.2f} s)"
            )
        if wait >= self._remaining(deadline, described):
            raise BinanceError(
                f"Binance klines {described}: waiting {wait:.2f} s would pass "
                f"deadline_s={self.config.deadline_s:g} s"
            )
        self._sleep(wait)
        deadline.slept += wait
        if retry:
            deadline.retry_waited += wait

    def _backoff(self, attempt: int, described: str, problem: str, deadline: _Deadline) -> None:
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
        self._sleep_within(delay, deadline, described, retry=True)

    def _wait_retry_after(
        self,
        response: httpx.Response,
        attempt: int,
        url: str,
        described: str,
        params: dict[str, Any],
        deadline: _Deadline,
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
                f"Binance GET {redact(url)} ({described}): HTTP {status}, code {code}: {msg}; Retry-After {wait:g} s "
                f"exceeds max_retry_after_s={self.config.max_retry_after_s:g}",
                status=status,
                code=code,
                msg=msg,
                params=params,
            )
        self._sleep_within(wait, deadline, described, retry=True)
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

    def _wait_for_weight(self, deadline: _Deadline, described: str) -> None:
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
        self._sleep_within(wait, deadline, described, retry=False)
        self._used_weight = self._weight_minute = None

    def _seconds_to_next_minute(self) -> float:
        now = self._clock()
        return (math.floor(now / 60) + 1) * 60 - now


# -- parsing --------------------------------------------------------------------------------------


def _parse_page(
    rows: Any,
    source: str,
    interval: str,
    start_ms: int,
    end_ms: int,
    previous_open_ms: int | None,
    now: pd.Timestamp,
) -> tuple[pd.DataFrame, int | None]:
    """Check one page of kline arrays and return (candle frame, last open time in ms); open times are
    checked against the fetch's ``now`` (its clock), not the wall clock."""
    step_ms = _ms(interval_timedelta(interval))
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
        if not start_ms <= open_ms < end_ms:  # before building a timestamp: 1e20 ms is out of its range
            raise CandleValidationError(
                source, f"{i} (open_time={open_ms} ms)", "open_time", "outside the requested window"
            )
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
        if previous_open_ms is not None and open_ms <= previous_open_ms:
            raise CandleValidationError(source, label, "open_time", "not after the previous candle")
        previous_open_ms = open_ms
        open_times.append(open_ms)
        for name in _VALUE_FIELDS:
            values[name].append(_number(row[KLINE_FIELDS.index(name)], source, label, name))
    frame = pd.DataFrame({"open_time": pd.to_datetime(open_times, unit="ms", utc=True), **values})
    if frame.empty:
        return empty_candles(), previous_open_ms
    return validate_candles(frame, source, interval, now=now), previous_open_ms


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


def _contiguous_prefix(frame: pd.DataFrame, step: pd.Timedelta) -> pd.DataFrame:
    """The leading rows of ``frame`` without a missing candle between them (what follows a hole is
    asked again, starting at the hole)."""
    jumps = (frame["open_time"].diff().iloc[1:] != step).to_numpy()
    return frame if not jumps.any() else frame.iloc[: int(jumps.argmax()) + 1]


def _stamp(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC")


def _utc(value: pd.Timestamp, name: str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {stamp}")
    return stamp.tz_convert("UTC")


def _ms(value: pd.Timestamp | pd.Timedelta) -> int:
    if isinstance(value, pd.Timedelta):
        return value // pd.Timedelta(milliseconds=1)
    return (value - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
