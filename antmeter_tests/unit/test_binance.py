"""BinanceKlinesClient against a real loopback HTTP server speaking Binance's klines wire format."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pytest

from antmeter.market.binance import BinanceConfig, BinanceError, BinanceKlinesClient
from antmeter.market.candles import (
    CANDLE_COLUMNS,
    SUPPORTED_INTERVALS,
    CandleValidationError,
    interval_timedelta,
)
from antmeter_testkit.servers.binance_server import FakeBinance, Fault, Kline, make_klines

T0 = pd.Timestamp("2024-03-01 00:00", tz="UTC")
T0_MS = int(T0.timestamp() * 1000)
MINUTE = pd.Timedelta(minutes=1)
SERIES_LENGTH = 2500
SYMBOL = "BTCUSDT"


class FakeTime:
    """A clock shared by client and server; ``sleep`` records the wait and advances the clock."""

    def __init__(self, now: pd.Timestamp):
        self.now_s = now.timestamp()
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    # Mid-minute, long after the whole series has closed.
    return FakeTime(T0 + pd.Timedelta(days=3, seconds=30))


@pytest.fixture
def source_rows() -> list[Kline]:
    return make_klines(T0_MS, SERIES_LENGTH, seed=11)


@pytest.fixture
def exchange(fake_time: FakeTime, source_rows: list[Kline]) -> Iterator[FakeBinance]:
    with FakeBinance({(SYMBOL, "1m"): source_rows}, clock=fake_time.clock) as server:
        yield server


@pytest.fixture
def make_client(exchange: FakeBinance, fake_time: FakeTime) -> Iterator[Callable[..., BinanceKlinesClient]]:
    clients: list[BinanceKlinesClient] = []

    def make(**overrides: object) -> BinanceKlinesClient:
        config = BinanceConfig(base_url=exchange.base_url, **overrides)
        client = BinanceKlinesClient(
            config, sleep=fake_time.sleep, clock=fake_time.clock, rng=random.Random(3)
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _expected(rows: list[Kline]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "open_time": pd.to_datetime([r[0] for r in rows], unit="ms", utc=True).astype(
                "datetime64[ns, UTC]"
            ),
            **{name: [float(r[i]) for r in rows] for i, name in enumerate(CANDLE_COLUMNS[1:], start=1)},
        }
    )


def test_pages_through_2500_candles_contiguously(make_client, exchange, fake_time, source_rows):
    candles = make_client().fetch_klines(SYMBOL, "1m", T0, T0 + SERIES_LENGTH * MINUTE)

    assert len(candles) == SERIES_LENGTH
    assert list(candles.columns) == CANDLE_COLUMNS
    assert str(candles["open_time"].dtype) == "datetime64[ns, UTC]"
    assert (candles["open_time"].diff().iloc[1:] == MINUTE).all()
    pd.testing.assert_frame_equal(candles, _expected(source_rows))
    starts = [int(r["startTime"]) for r in exchange.requests]
    assert starts == [T0_MS, T0_MS + 1000 * 60_000, T0_MS + 2000 * 60_000]
    assert {r["limit"] for r in exchange.requests} == {"1000"}
    assert exchange.sent_rows == [1000, 1000, 500]
    assert fake_time.sleeps == []


def test_paging_ends_when_the_exchange_has_no_more_data(make_client, exchange, fake_time, source_rows):
    report = make_client().fetch_klines_report(SYMBOL, "1m", T0 + 1700 * MINUTE, T0 + 5000 * MINUTE)

    pd.testing.assert_frame_equal(report.candles, _expected(source_rows[1700:]))
    # a short page is followed up; an empty answer is asked once more, then taken as "no more data"
    assert exchange.sent_rows == [800, 0, 0]
    # the candles that should have closed by now but do not exist are recorded, not raised
    assert [(o.start, o.end) for o in report.outages] == [
        (T0 + SERIES_LENGTH * MINUTE, T0 + pd.Timedelta(days=3))
    ]


def test_truncated_page_is_followed_up_until_the_end_is_covered(make_client, exchange, source_rows):
    exchange.faults = [Fault.none(), Fault.truncated(600)]  # the second page comes back cut to 600 rows

    report = make_client().fetch_klines_report(SYMBOL, "1m", T0, T0 + SERIES_LENGTH * MINUTE)

    pd.testing.assert_frame_equal(report.candles, _expected(source_rows))  # not 1,600 of 2,500
    assert report.outages == ()
    assert exchange.sent_rows == [1000, 600, 900]


def test_transient_empty_page_mid_range_is_asked_again(make_client, exchange, source_rows):
    exchange.faults = [Fault.none(), Fault.truncated(0)]

    report = make_client().fetch_klines_report(SYMBOL, "1m", T0, T0 + SERIES_LENGTH * MINUTE)

    pd.testing.assert_frame_equal(report.candles, _expected(source_rows))
    assert report.outages == ()


def test_exchange_outage_is_recorded_not_raised(make_client, exchange, source_rows):
    del source_rows[1200:1290]  # the exchange itself has no candles for 90 minutes

    report = make_client().fetch_klines_report(SYMBOL, "1m", T0, T0 + SERIES_LENGTH * MINUTE)

    pd.testing.assert_frame_equal(report.candles, _expected(source_rows))
    assert [(o.start, o.end) for o in report.outages] == [(T0 + 1200 * MINUTE, T0 + 1290 * MINUTE)]
    # the request that started inside the gap confirmed it: its first candle opened after the gap
    assert int(exchange.requests[2]["startTime"]) == T0_MS + 1200 * 60_000


def test_trickling_server_is_cut_off_by_the_fetch_deadline(make_client, exchange):
    exchange.faults = [Fault.trickle(0.05)]  # ~100 kB at 16 bytes per 50 ms: minutes, every read in time

    started = time.monotonic()
    with pytest.raises(BinanceError, match="deadline_s=1"):
        make_client(timeout_s=1.0, deadline_s=1.0).fetch_klines(SYMBOL, "1m", T0, T0 + 1000 * MINUTE)
    assert time.monotonic() - started < 3.0


def test_total_retry_wait_is_capped(make_client, exchange, fake_time):
    exchange.faults = [Fault.rate_limited(retry_after=100)] * 6

    with pytest.raises(BinanceError, match="max_total_retry_wait_s=150"):
        make_client(max_total_retry_wait_s=150).fetch_klines(SYMBOL, "1m", T0, T0 + 100 * MINUTE)
    assert fake_time.sleeps == [100.0]  # not 5 x 100 s


def test_huge_open_time_is_a_named_row_error(make_client, exchange):
    exchange.faults = [Fault.corrupt(_set(2, 0, 10**20))]

    with pytest.raises(CandleValidationError) as info:
        make_client().fetch_klines(SYMBOL, "1m", T0, T0 + 10 * MINUTE)
    assert info.value.field == "open_time" and "page 0" in info.value.source
    assert str(info.value.row).startswith("2") and "outside the requested window" in info.value.reason


def test_window_is_half_open_and_needs_one_request(make_client, exchange, source_rows):
    candles = make_client().fetch_klines(SYMBOL, "1m", T0 + 10 * MINUTE, T0 + 20 * MINUTE)

    pd.testing.assert_frame_equal(candles, _expected(source_rows[10:20]))
    assert len(exchange.requests) == 1
    assert int(exchange.requests[0]["endTime"]) == T0_MS + 20 * 60_000 - 1


def test_open_last_candle_is_excluded(make_client, exchange, fake_time, source_rows):
    fake_time.now_s = (T0 + 100 * MINUTE + pd.Timedelta(seconds=30)).timestamp()  # candle 100 is open

    candles = make_client().fetch_klines(SYMBOL, "1m", T0, T0 + pd.Timedelta(days=1))

    assert exchange.sent_rows == [101]  # Binance sends the open candle too ...
    pd.testing.assert_frame_equal(candles, _expected(source_rows[:100]))  # ... it is never kept


def test_explicit_now_decides_what_is_closed(make_client, source_rows):
    now = T0 + 50 * MINUTE + pd.Timedelta(seconds=10)
    candles = make_client().fetch_klines(SYMBOL, "1m", T0, T0 + 200 * MINUTE, now=now)
    pd.testing.assert_frame_equal(candles, _expected(source_rows[:50]))


def test_429_waits_retry_after_then_succeeds(make_client, exchange, fake_time, source_rows):
    exchange.faults = [Fault.rate_limited(retry_after=7)]

    candles = make_client().fetch_klines(SYMBOL, "1m", T0, T0 + 100 * MINUTE)

    assert fake_time.sleeps == [7.0]
    assert exchange.statuses == [429, 200]
    pd.testing.assert_frame_equal(candles, _expected(source_rows[:100]))


def test_418_ip_ban_waits_retry_after_and_logs(make_client, exchange, fake_time, source_rows, caplog):
    exchange.faults = [Fault.banned(retry_after=120)]

    with caplog.at_level(logging.INFO, logger="antmeter.market.binance"):
        candles = make_client().fetch_klines(SYMBOL, "1m", T0, T0 + 100 * MINUTE)

    assert fake_time.sleeps == [120.0]
    assert exchange.statuses == [418, 200]
    assert any(r.levelno == logging.ERROR and "418" in r.getMessage() for r in caplog.records)
    pd.testing.assert_frame_equal(candles, _expected(source_rows[:100]))


def test_ban_longer_than_allowed_raises_without_waiting(make_client, exchange, fake_time):
    exchange.faults = [Fault.banned(retry_after=7200)]

    with pytest.raises(BinanceError, match="Retry-After 7200") as info:
        make_client(max_retry_after_s=600).fetch_klines(SYMBOL, "1m", T0, T0 + 100 * MINUTE)

    assert info.value.status == 418 and info.value.code == -1003
    assert fake_time.sleeps == []
    assert len(exchange.requests) == 1


def test_5xx_then_success_backs_off_with_jitter(make_client, exchange, fake_time, source_rows, caplog):
    exchange.faults = [Fault.server_error(500), Fault.server_error(502)]

    with caplog.at_level(logging.WARNING, logger="antmeter.market.binance"):
        candles = make_client().fetch_klines(SYMBOL, "1m", T0, T0 + 100 * MINUTE)

    assert exchange.statuses == [500, 502, 200]
    assert len(fake_time.sleeps) == 2
    assert 0 <= fake_time.sleeps[0] <= 0.5 and 0 <= fake_time.sleeps[1] <= 1.0
    assert sum("HTTP 50" in r.getMessage() for r in caplog.records) == 2
    pd.testing.assert_frame_equal(candles, _expected(source_rows[:100]))


def test_timeout_then_success(make_client, exchange, fake_time, source_rows):
    exchange.faults = [Fault.slow(delay_s=1.5)]

    started = time.monotonic()
    candles = make_client(timeout_s=0.2).fetch_klines(SYMBOL, "1m", T0, T0 + 100 * MINUTE)

    assert time.monotonic() - started < 1.2  # the client gave up on the slow answer
    assert len(exchange.requests) == 2
    assert len(fake_time.sleeps) == 1 and 0 <= fake_time.sleeps[0] <= 0.5
    pd.testing.assert_frame_equal(candles, _expected(source_rows[:100]))


def test_persistent_5xx_raises_after_max_retries(make_client, exchange, fake_time):
    exchange.faults = [Fault.server_error(503)] * 10

    with pytest.raises(BinanceError) as info:
        make_client(max_retries=5).fetch_klines(SYMBOL, "1m", T0, T0 + 100 * MINUTE)

    message = str(info.value)
    assert "symbol=BTCUSDT" in message and "interval=1m" in message and f"startTime={T0_MS}" in message
    assert "after 6 attempts" in message and "503" in message
    assert info.value.status == 503
    assert len(exchange.requests) == 6
    caps = [min(30.0, 0.5 * 2**k) for k in range(5)]
    assert len(fake_time.sleeps) == 5
    assert all(0 <= s <= cap for s, cap in zip(fake_time.sleeps, caps, strict=True))
    assert len(set(fake_time.sleeps)) == 5  # jittered, not a fixed schedule


def _set(index: int, field: int, value: object) -> Callable[[list[Kline]], None]:
    def mutate(rows: list[Kline]) -> None:
        rows[index][field] = value

    return mutate


def _drop_last_field(rows: list[Kline]) -> None:
    rows[3].pop()


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (_set(3, 2, "abc"), "high", "not a number: 'abc'"),
        (_set(3, 4, None), "close", "expected a numeric string"),
        (_set(3, 3, "99999999"), "low", "low above open/close"),
        (_set(3, 5, "-1"), "volume", "negative volume"),
        (_set(3, 6, 123), "close_time", "open_time + interval"),
        (_drop_last_field, "-", "12 fields, got 11"),
    ],
)
def test_malformed_row_names_page_row_and_field(make_client, exchange, mutate, field, reason):
    exchange.faults = [Fault.none(), Fault.corrupt(mutate)]  # corrupt the second page

    with pytest.raises(CandleValidationError) as info:
        make_client().fetch_klines(SYMBOL, "1m", T0, T0 + SERIES_LENGTH * MINUTE)

    error = info.value
    assert error.field == field
    assert reason in error.reason
    assert "page 1" in error.source
    assert str(error.row).startswith("3")
    if field != "-":  # the open time is known once the row has the right shape
        assert str(T0 + 1003 * MINUTE) in str(error.row)


def test_string_open_time_is_rejected(make_client, exchange):
    exchange.faults = [Fault.corrupt(_set(0, 0, str(T0_MS)))]

    with pytest.raises(CandleValidationError, match="open_time") as info:
        make_client().fetch_klines(SYMBOL, "1m", T0, T0 + 10 * MINUTE)
    assert info.value.field == "open_time" and "page 0" in info.value.source


def test_invalid_symbol_raises_binance_code_without_retry(make_client, exchange, fake_time):
    with pytest.raises(BinanceError, match="-1121") as info:
        make_client().fetch_klines("NOPECOIN", "1m", T0, T0 + 10 * MINUTE)

    assert (info.value.status, info.value.code, info.value.msg) == (400, -1121, "Invalid symbol.")
    assert len(exchange.requests) == 1
    assert fake_time.sleeps == []


def test_weight_limit_waits_for_next_minute(make_client, exchange, fake_time, source_rows):
    # 5996 of 6000 already used this minute: two more requests fit, the third must wait.
    exchange.set_used_weight(5996)

    candles = make_client(weight_limit_per_minute=6000, request_weight=2).fetch_klines(
        SYMBOL, "1m", T0, T0 + SERIES_LENGTH * MINUTE
    )

    assert fake_time.sleeps == [30.0]  # the clock stood at hh:mm:30
    assert exchange.statuses == [200, 200, 200]  # the server never had to refuse
    pd.testing.assert_frame_equal(candles, _expected(source_rows))


def test_empty_and_invalid_windows(make_client, exchange):
    client = make_client()
    future = pd.Timestamp(exchange.clock(), unit="s", tz="UTC") + pd.Timedelta(hours=1)
    assert client.fetch_klines(SYMBOL, "1m", future, future + MINUTE).empty
    assert exchange.requests == []  # nothing can have closed yet, so nothing is asked
    with pytest.raises(ValueError, match="timezone-aware"):
        client.fetch_klines(SYMBOL, "1m", pd.Timestamp("2024-03-01"), T0 + MINUTE)
    with pytest.raises(ValueError, match="unsupported candle interval"):
        client.fetch_klines(SYMBOL, "3m", T0, T0 + MINUTE)


def test_prices_keep_full_decimal_precision(make_client, exchange, source_rows):
    source_rows[0][1:6] = ["0.00001234", "0.00001240", "0.00001230", "0.00001235", "123456789.12345678"]
    candles = make_client().fetch_klines(SYMBOL, "1m", T0, T0 + MINUTE)
    np.testing.assert_array_equal(
        candles[["open", "high", "low", "close", "volume"]].to_numpy()[0],
        [0.00001234, 0.00001240, 0.00001230, 0.00001235, 123456789.12345678],
    )


@pytest.mark.parametrize("interval", SUPPORTED_INTERVALS)
def test_every_supported_interval_pages_and_keeps_only_closed_candles(interval):
    step = interval_timedelta(interval)
    rows = make_klines(T0_MS, 1500, interval_ms=int(step / pd.Timedelta(milliseconds=1)), seed=5)
    now = T0 + 1499 * step + step / 2  # the last candle is still open
    clock = FakeTime(now)
    with (
        FakeBinance({(SYMBOL, interval): rows}, clock=clock.clock) as server,
        BinanceKlinesClient(
            BinanceConfig(base_url=server.base_url), sleep=clock.sleep, clock=clock.clock
        ) as client,
    ):
        candles = client.fetch_klines(SYMBOL, interval, T0, T0 + 1500 * step)
    pd.testing.assert_frame_equal(candles, _expected(rows[:-1]))
    assert [int(r["startTime"]) for r in server.requests] == [T0_MS, T0_MS + 1000 * (rows[1][0] - rows[0][0])]
