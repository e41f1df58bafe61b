"""A fake Binance exchange on 127.0.0.1 serving ``GET /api/v3/klines`` in the documented wire format.

What it reproduces:

* kline arrays ``[open_time_ms, "open", "high", "low", "close", "volume", close_time_ms,
  "quote_volume", trades, "taker_buy_base", "taker_buy_quote", "0"]`` with prices as strings;
* ``startTime`` / ``endTime`` (inclusive, on open time) / ``limit`` (default 500, max 1000);
* candles that have not opened yet (by the server's ``clock``) do not exist; the candle that is
  still open *is* returned, as on Binance;
* error bodies ``{"code": ..., "msg": ...}`` with the matching HTTP status (-1121 invalid symbol,
  -1120 invalid interval, -1102 missing parameter, -1130 bad limit, -1100 illegal characters,
  -1023 start after end);
* an ``X-MBX-USED-WEIGHT-1M`` header on every response, a per-minute weight window keyed by the
  server's clock, and HTTP 429 + ``Retry-After`` when a request would exceed the limit;
* scripted :class:`Fault` s consumed one per klines request: 429/418 with ``Retry-After``, 5xx,
  slow responses (to trigger client timeouts), bodies trickled a few bytes at a time (each chunk
  inside any read timeout) and corrupted, truncated or emptied pages.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

KLINE_INTERVALS_MS = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}
DEFAULT_LIMIT, MAX_LIMIT = 500, 1000

Kline = list[Any]


def make_klines(start_ms: int, count: int, interval_ms: int = 60_000, seed: int = 0) -> list[Kline]:
    """``count`` consistent klines in Binance's wire format (a seeded random walk around 40,000)."""
    rng = random.Random(seed)
    price = 40_000.0
    rows: list[Kline] = []
    for i in range(count):
        open_ms = start_ms + i * interval_ms
        open_price = price
        close_price = max(1.0, open_price * (1 + rng.gauss(0, 0.001)))
        high = max(open_price, close_price) * (1 + abs(rng.gauss(0, 0.0005)))
        low = min(open_price, close_price) * (1 - abs(rng.gauss(0, 0.0005)))
        volume = rng.uniform(0.5, 50.0)
        rows.append(
            [
                open_ms,
                f"{open_price:.2f}",
                f"{high:.2f}",
                f"{low:.2f}",
                f"{close_price:.2f}",
                f"{volume:.8f}",
                open_ms + interval_ms - 1,
                f"{volume * close_price:.8f}",
                rng.randint(10, 1000),
                f"{volume / 2:.8f}",
                f"{volume * close_price / 2:.8f}",
                "0",
            ]
        )
        price = close_price
    return rows


@dataclass
class Fault:
    """One scripted misbehaviour, applied to the next klines request."""

    status: int | None = None
    retry_after: str | None = None
    delay_s: float = 0.0
    mutate: Callable[[list[Kline]], None] | None = None
    body: dict[str, Any] | None = None
    trickle_s: float = 0.0  # pause between 16-byte chunks of the body

    @classmethod
    def none(cls) -> Fault:
        """Serve this request normally."""
        return cls()

    @classmethod
    def rate_limited(cls, retry_after: int | None) -> Fault:
        body = {"code": -1003, "msg": "Too many requests; current limit is 6000 request weight per 1 MINUTE."}
        return cls(429, None if retry_after is None else str(retry_after), body=body)

    @classmethod
    def banned(cls, retry_after: int) -> Fault:
        msg = "Way too many requests; IP(127.0.0.1) banned until 1700000000000. Please use WebSocket Streams."
        return cls(418, str(retry_after), body={"code": -1003, "msg": msg})

    @classmethod
    def server_error(cls, status: int = 503) -> Fault:
        return cls(status, body={"code": -1001, "msg": "Internal error; unable to process your request."})

    @classmethod
    def slow(cls, delay_s: float) -> Fault:
        return cls(delay_s=delay_s)

    @classmethod
    def corrupt(cls, mutate: Callable[[list[Kline]], None]) -> Fault:
        return cls(mutate=mutate)

    @classmethod
    def truncated(cls, keep: int) -> Fault:
        """Serve only the first ``keep`` rows of the page (``keep=0``: an empty page)."""

        def cut(rows: list[Kline]) -> None:
            del rows[keep:]

        return cls(mutate=cut)

    @classmethod
    def trickle(cls, pause_s: float) -> Fault:
        return cls(trickle_s=pause_s)


class FakeBinance:
    """Serve ``klines[(symbol, interval)]`` over real HTTP on 127.0.0.1 (use as a context manager)."""

    def __init__(
        self,
        klines: dict[tuple[str, str], list[Kline]],
        *,
        clock: Callable[[], float] = time.time,
        weight_limit: int = 6000,
        request_weight: int = 2,
    ):
        self.klines = klines
        self.clock = clock
        self.weight_limit, self.request_weight = weight_limit, request_weight
        self.faults: list[Fault] = []
        self.requests: list[dict[str, str]] = []  # query parameters of every klines request
        self.statuses: list[int] = []  # HTTP status of every klines response
        self.sent_rows: list[int] = []  # rows in every 200 response
        self._used_weight, self._weight_minute = 0, None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def set_used_weight(self, weight: int) -> None:
        """Pretend ``weight`` was already used in the current minute."""
        with self._lock:
            self._used_weight, self._weight_minute = weight, int(self.clock() // 60)

    def start(self) -> FakeBinance:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server API name
                # A client that timed out has hung up; there is nobody left to answer.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-binance",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeBinance:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- request handling ---------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        if url.path != "/api/v3/klines":
            self._send(handler, 404, {"code": -1000, "msg": "Not found."}, {})
            return
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        with self._lock:
            self.requests.append(params)
            fault = self.faults.pop(0) if self.faults else Fault.none()
            weight_headers, over_limit_wait = self._charge_weight()
        if fault.delay_s:
            time.sleep(fault.delay_s)
        if over_limit_wait is not None:
            body = {"code": -1003, "msg": "Too many requests; current limit is exceeded."}
            self._send(handler, 429, body, {**weight_headers, "Retry-After": str(over_limit_wait)})
            return
        if fault.status is not None:
            headers = dict(weight_headers)
            if fault.retry_after is not None:
                headers["Retry-After"] = fault.retry_after
            self._send(handler, fault.status, fault.body or {}, headers)
            return
        status, body = self._klines(params)
        if status == 200 and fault.mutate is not None:
            fault.mutate(body)
        if status == 200:
            with self._lock:
                self.sent_rows.append(len(body))
        self._send(handler, status, body, weight_headers, trickle_s=fault.trickle_s)

    def _charge_weight(self) -> tuple[dict[str, str], int | None]:
        """Count this request against the minute window; return headers and a wait if over the limit."""
        minute = int(self.clock() // 60)
        if minute != self._weight_minute:
            self._used_weight, self._weight_minute = 0, minute
        if self._used_weight + self.request_weight > self.weight_limit:
            wait = math.ceil((minute + 1) * 60 - self.clock())
            return {"X-MBX-USED-WEIGHT-1M": str(self._used_weight)}, wait
        self._used_weight += self.request_weight
        return {"X-MBX-USED-WEIGHT-1M": str(self._used_weight)}, None

    def _klines(self, params: dict[str, str]) -> tuple[int, Any]:
        for name in ("symbol", "interval"):
            if not params.get(name):
                msg = f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
                return 400, {"code": -1102, "msg": msg}
        numbers: dict[str, int] = {}
        for name in ("startTime", "endTime", "limit"):
            if name in params:
                if not params[name].isdigit() or len(params[name]) > 20:
                    msg = f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
                    return 400, {"code": -1100, "msg": msg}
                numbers[name] = int(params[name])
        if params["interval"] not in KLINE_INTERVALS_MS:
            return 400, {"code": -1120, "msg": "Invalid interval."}
        key = (params["symbol"], params["interval"])
        if not any(symbol == key[0] for symbol, _ in self.klines):
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        limit = numbers.get("limit", DEFAULT_LIMIT)
        if not 1 <= limit <= MAX_LIMIT:
            return 400, {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}
        start, end = numbers.get("startTime"), numbers.get("endTime")
        if start is not None and end is not None and start > end:
            return 400, {"code": -1023, "msg": "Start time is greater than end time."}
        now_ms = self.clock() * 1000
        rows = [
            row
            for row in self.klines.get(key, [])
            if row[0] <= now_ms and (start is None or row[0] >= start) and (end is None or row[0] <= end)
        ]
        rows = rows[:limit] if start is not None or end is None else rows[-limit:]
        return 200, copy.deepcopy(rows)

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: Any,
        headers: dict[str, str],
        trickle_s: float = 0.0,
    ) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        with self._lock:
            self.statuses.append(status)
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json;charset=UTF-8")
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        if not trickle_s:
            handler.wfile.write(payload)
            return
        for offset in range(0, len(payload), 16):
            handler.wfile.write(payload[offset : offset + 16])
            handler.wfile.flush()
            time.sleep(trickle_s)
