"""Named corruption operators for candle files, exchange fault scenarios, and the judge of outcomes.

Shared by the fuzz suite (``antmeter_tests/unit/test_bad_input_fuzz.py``) and
``bench/bench_bad_input.py``. A case passes only if reading it either raises an error that names the
file (or URL) and the row/field (a whole-file problem: the file and what was expected), or returns
exactly the generator's clean rows.
"""

from __future__ import annotations

import gzip
import io
import logging
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from antmeter.market.binance import BinanceConfig, BinanceError, BinanceKlinesClient
from antmeter.market.candles import CANDLE_COLUMNS, CandleValidationError
from antmeter.market.file_import import read_candle_file
from antmeter.market.symbols import InvalidSymbolError
from antmeter_testkit.servers.binance_server import FakeBinance, Fault, Kline, make_klines

MINUTE = pd.Timedelta(minutes=1)
VALUES = ["open", "high", "low", "close", "volume"]
OUTCOMES = (
    "clear_error",
    "valid_rows",
    "silently_accepted",
    "error_without_context",
    "hang",
    "unexpected_error",
    "secret_leaked",
)


# -- clean data and its file formats --------------------------------------------------------------


def clean_candles(rng: random.Random, n: int | None = None) -> pd.DataFrame:
    """Valid 1m candles (prices with two decimals, so text round-trips exactly) in 2020-2024."""
    n = n if n is not None else rng.randint(5, 60)
    start = pd.Timestamp("2020-01-01", tz="UTC") + rng.randrange(0, 2_000_000) * MINUTE
    price, rows = rng.uniform(10, 50_000), []
    for _ in range(n):
        open_ = round(price, 2)
        close = round(max(0.05, open_ * (1 + rng.gauss(0, 0.002))), 2)
        high = round(max(open_, close) + rng.uniform(0, 1), 2)
        low = round(max(0.01, min(open_, close) - rng.uniform(0, 1)), 2)
        rows.append((open_, high, low, close, round(rng.uniform(0, 100), 4)))
        price = close
    frame = pd.DataFrame(rows, columns=VALUES)
    frame.insert(0, "open_time", pd.date_range(start, periods=n, freq="min").astype("datetime64[ns, UTC]"))
    return frame


def _cell(value: object) -> str:
    if isinstance(value, pd.Timestamp):
        return "" if pd.isna(value) else value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if value is None or (isinstance(value, float) and pd.isna(value) and not isinstance(value, bool)):
        return "nan" if isinstance(value, float) else ""
    return repr(value) if isinstance(value, float) else str(value)


def named_csv(frame: pd.DataFrame, time_name: str = "timestamp") -> bytes:
    header = [time_name if c == "open_time" else c for c in frame.columns]
    lines = [",".join(header)] + [",".join(_cell(v) for v in row) for row in frame.itertuples(index=False)]
    return ("\n".join(lines) + "\n").encode()


def dump_csv(frame: pd.DataFrame) -> bytes:
    """data.binance.vision layout: 12 fields, no header, times in ms."""
    lines = []
    for row in frame.itertuples(index=False):
        open_ms = int(row.open_time.value // 10**6) if not pd.isna(row.open_time) else ""
        close_ms = open_ms + 59_999 if open_ms != "" else ""
        values = [_cell(getattr(row, c)) for c in VALUES]
        lines.append(",".join(map(str, [open_ms, *values, close_ms, "1.0", 10, "0.5", "0.5", 0])))
    return ("\n".join(lines) + "\n").encode()


def parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.rename(columns={"open_time": "timestamp"}).to_parquet(buffer, index=False)
    return buffer.getvalue()


WRITERS: dict[str, Callable[[pd.DataFrame], bytes]] = {"csv": named_csv, "dump": dump_csv, "parquet": parquet}
SUFFIX = {"csv": ".csv", "dump": ".csv", "parquet": ".parquet"}


# -- operators ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corrupted:
    """A corrupted file's suffix and bytes, the frame behind it (if any) and the interval to read it as."""

    suffix: str
    data: bytes
    frame: pd.DataFrame | None = None
    interval: str = "1m"


@dataclass(frozen=True)
class Operator:
    """``apply(rng, clean, fmt)`` corrupts ``clean`` written as ``fmt``; ``harmless``: the clean rows must
    be read exactly (a legal variation such as a BOM), otherwise an error naming file and row/field."""

    name: str
    defect: str
    formats: tuple[str, ...]
    apply: Callable[[random.Random, pd.DataFrame, str], Corrupted]
    harmless: bool = False


def _frame_op(change: Callable[[random.Random, pd.DataFrame], pd.DataFrame], interval: str = "1m"):
    def apply(rng: random.Random, clean: pd.DataFrame, fmt: str) -> Corrupted:
        frame = change(rng, clean.copy())
        return Corrupted(SUFFIX[fmt], WRITERS[fmt](frame), frame, interval)

    return apply


def _bytes_op(change: Callable[[random.Random, bytes, str], tuple[str, bytes]]):
    def apply(rng: random.Random, clean: pd.DataFrame, fmt: str) -> Corrupted:
        suffix, data = change(rng, WRITERS[fmt](clean), fmt)
        return Corrupted(suffix, data)

    return apply


def _row(rng: random.Random, frame: pd.DataFrame) -> int:
    return rng.randrange(len(frame))


def _set(frame: pd.DataFrame, i: int, column: str, value: object) -> pd.DataFrame:
    frame[column] = frame[column].astype(object)
    frame.loc[i, column] = value
    return frame


def _off_grid(rng, f):
    i = _row(rng, f)
    f.loc[i, "open_time"] += pd.Timedelta(seconds=rng.choice([1, 15, 30, 59]))
    return f


def _nat(rng, f):
    f.loc[_row(rng, f), "open_time"] = pd.NaT
    return f


def _boolean(rng, f):
    f[rng.choice(VALUES)] = [rng.random() < 0.5 for _ in range(len(f))]
    return f


def _ohlc(rng, f):
    i = _row(rng, f)
    if rng.random() < 0.5:
        f.loc[i, "high"] = round(min(f.loc[i, "open"], f.loc[i, "close"]) * 0.9, 2)
    else:
        f.loc[i, "low"] = round(max(f.loc[i, "open"], f.loc[i, "close"]) * 1.1, 2)
    return f


def _zero_price(rng, f):
    i = _row(rng, f)
    f.loc[i, ["open", "high", "low", "close"]] = [0.0, 0.0, 0.0, 0.0] if rng.random() < 0.5 else [-1.0] * 4
    return f


def _duplicate(rng, f):
    return pd.concat([f, f.iloc[[_row(rng, f)]]], ignore_index=True)


def _far_time(when: str):
    def change(rng, f):
        f.loc[_row(rng, f), "open_time"] = pd.Timestamp(when, tz="UTC")
        return f

    return change


def _future(rng, f):
    f.loc[_row(rng, f), "open_time"] = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=10)).floor("min")
    return f


def _missing_column(rng, f):
    return f.drop(columns=rng.choice(VALUES))


def _extra_column(rng, f):
    f["trades"] = [rng.randint(1, 99) for _ in range(len(f))]
    return f


def _shuffled(rng, f):
    order = list(range(len(f)))
    rng.shuffle(order)
    return f.iloc[order].reset_index(drop=True)


def _lines(data: bytes) -> list[bytes]:
    return data.rstrip(b"\n").split(b"\n")


def _truncate_last_line(rng, data, fmt):
    lines = _lines(data)
    cut = rng.randrange(1, len(lines[-1]))
    return ".csv", b"\n".join([*lines[:-1], lines[-1][:cut]])


def _drop_field(rng, data, fmt):
    lines = _lines(data)
    i = rng.randrange(len(lines))
    cells = lines[i].split(b",")
    del cells[rng.randrange(1, len(cells))]
    lines[i] = b",".join(cells)
    return ".csv", b"\n".join(lines) + b"\n"


def _close_time(rng, data, fmt):
    lines = _lines(data)
    i = rng.randrange(len(lines))
    cells = lines[i].split(b",")
    cells[6] = str(int(cells[6]) + rng.choice([-60_000, 1, 60_000, -59_999])).encode()
    lines[i] = b",".join(cells)
    return ".csv", b"\n".join(lines) + b"\n"


def _huge_epoch(rng, data, fmt):
    lines = _lines(data)
    i = rng.randrange(len(lines))
    cells = lines[i].split(b",")
    cells[0] = rng.choice([b"100000000000000000000", b"1e20", b"-1704067200000", b"99999999999999999999999"])
    lines[i] = b",".join(cells)
    return ".csv", b"\n".join(lines) + b"\n"


def _undecodable(rng, data, fmt):
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines[i] = lines[i] + rng.choice([b"\xff", b"\xc3(", b"\xe9t\xe9"])
    return ".csv", b"\n".join(lines) + b"\n"


def _unclosed_quote(rng, data, fmt):
    return ".csv", b'"' + data


def _corrupt_gz(rng, data, fmt):
    packed = gzip.compress(data)
    if rng.random() < 0.5:
        return ".csv.gz", packed[: rng.randrange(1, len(packed) - 1)]
    flipped = bytearray(packed)
    flipped[rng.randrange(10, len(packed) - 8)] ^= 0xFF
    return ".csv.gz", bytes(flipped)


def _plain_as_gz(rng, data, fmt):
    return ".csv.gz", data


def _multi_member_zip(rng, data, fmt):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for k in range(rng.randint(2, 3)):
            archive.writestr(f"part{k}.csv", data)
    return ".zip", buffer.getvalue()


def _broken_zip(rng, data, fmt):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("one.csv", data)
    packed = buffer.getvalue()
    return ".zip", packed[: rng.randrange(10, len(packed) - 10)]


def _broken_parquet(rng, data, fmt):
    return ".parquet", data[: rng.randrange(0, len(data) - 1)]


def _trailing_commas(rng, data, fmt):
    return ".csv", b"\n".join(line + b"," for line in _lines(data)) + b"\n"


def _bom(rng, data, fmt):
    return ".csv", b"\xef\xbb\xbf" + data


def _crlf(rng, data, fmt):
    return ".csv", data.replace(b"\n", b"\r\n")


def _semicolons(rng, data, fmt):
    return ".csv", data.replace(b",", rng.choice([b";", b"\t", b"|"]))


def _empty(rng, data, fmt):
    return ".csv", rng.choice([b"", b"\n\n", b"   \n"])


def _gzip_clean(rng, data, fmt):
    return ".csv.gz", gzip.compress(data)


def _mixed_timezones(rng, clean, fmt):
    zones = ["+00:00", "+01:00", "-05:00", "+05:30", "Z"]
    lines = ["timestamp,open,high,low,close,volume"]
    for row in clean.itertuples(index=False):
        zone = rng.choice(zones)
        local = row.open_time if zone == "Z" else row.open_time.tz_convert(_offset(zone))
        stamp = local.strftime("%Y-%m-%dT%H:%M:%S") + zone
        lines.append(",".join([stamp, *(repr(getattr(row, c)) for c in VALUES)]))
    return Corrupted(".csv", ("\n".join(lines) + "\n").encode())


def _offset(zone: str):
    import datetime as dt

    sign = 1 if zone[0] == "+" else -1
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def _epochs(scale: int):
    def apply(rng, clean, fmt):
        frame = clean.copy()
        frame["open_time"] = [t.value // 10**9 * 1000 * scale for t in clean["open_time"]]
        return Corrupted(".csv", named_csv(frame, "open_time"))

    return apply


ALL = ("csv", "dump", "parquet")
TEXT = ("csv", "dump")
OPERATORS: tuple[Operator, ...] = (
    # 1: the interval grid
    Operator("off_grid_open_time", "1", ALL, _frame_op(_off_grid)),
    Operator("minute_rows_read_as_1h", "1", ALL, _frame_op(lambda rng, f: f, interval="1h")),
    # 2: row shape and close_time of Binance dumps
    Operator("truncated_last_line", "2", ("dump",), _bytes_op(_truncate_last_line)),
    Operator("missing_field_in_a_line", "2", TEXT, _bytes_op(_drop_field)),
    Operator("close_time_contradicts_open_time", "2", ("dump",), _bytes_op(_close_time)),
    # 3, 4: NaT, booleans
    Operator("nat_open_time", "3", ALL, _frame_op(_nat)),
    Operator("boolean_value_column", "4", ALL, _frame_op(_boolean)),
    # 5: reader failures
    Operator("undecodable_text", "5", TEXT, _bytes_op(_undecodable)),
    Operator("unclosed_quote_first_line", "5", TEXT, _bytes_op(_unclosed_quote)),
    Operator("corrupt_gz", "5", TEXT, _bytes_op(_corrupt_gz)),
    Operator("plain_text_named_gz", "5", TEXT, _bytes_op(_plain_as_gz)),
    Operator("multi_member_zip", "5", TEXT, _bytes_op(_multi_member_zip)),
    Operator("broken_zip", "5", TEXT, _bytes_op(_broken_zip)),
    Operator("broken_parquet", "5", ("parquet",), _bytes_op(_broken_parquet)),
    Operator("huge_epoch", "5", ("dump",), _bytes_op(_huge_epoch)),
    Operator("trailing_comma_every_line", "5", TEXT, _bytes_op(_trailing_commas), harmless=True),
    # classic
    Operator("missing_column", "classic", ("csv", "parquet"), _frame_op(_missing_column)),
    Operator("extra_column", "classic", ("csv", "parquet"), _frame_op(_extra_column), harmless=True),
    Operator(
        "non_numeric_cell",
        "classic",
        TEXT,
        _frame_op(lambda r, f: _set(f, _row(r, f), r.choice(VALUES), "abc")),
    ),
    Operator(
        "nan_cell",
        "classic",
        ALL,
        _frame_op(lambda r, f: _set(f, _row(r, f), r.choice(VALUES), float("nan"))),
    ),
    Operator(
        "inf_cell",
        "classic",
        ALL,
        _frame_op(lambda r, f: _set(f, _row(r, f), r.choice(VALUES), float("inf"))),
    ),
    Operator("ohlc_violation", "classic", ALL, _frame_op(_ohlc)),
    Operator("negative_volume", "classic", ALL, _frame_op(lambda r, f: _set(f, _row(r, f), "volume", -1.5))),
    Operator("non_positive_price", "classic", ALL, _frame_op(_zero_price)),
    Operator("duplicate_row", "classic", ALL, _frame_op(_duplicate)),
    Operator("open_time_before_2009", "classic", ALL, _frame_op(_far_time("2008-06-01 12:00"))),
    Operator("open_time_in_the_future", "classic", ALL, _frame_op(_future)),
    Operator("rows_out_of_order", "classic", ALL, _frame_op(_shuffled), harmless=True),
    Operator("mixed_timezones", "classic", ("csv",), _mixed_timezones, harmless=True),
    Operator("epoch_milliseconds", "classic", ("csv",), _epochs(1), harmless=True),
    Operator("epoch_microseconds", "classic", ("csv",), _epochs(1000), harmless=True),
    Operator("empty_file", "classic", TEXT, _bytes_op(_empty)),
    Operator("bom", "classic", TEXT, _bytes_op(_bom), harmless=True),
    Operator("crlf_line_ends", "classic", TEXT, _bytes_op(_crlf), harmless=True),
    Operator("wrong_delimiter", "classic", TEXT, _bytes_op(_semicolons)),
    Operator("gzip_compressed", "classic", TEXT, _bytes_op(_gzip_clean), harmless=True),
)
OPERATORS_BY_NAME = {op.name: op for op in OPERATORS}


# -- judging --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    outcome: str
    read: pd.DataFrame | None
    message: str


def names_context(error: Exception, source: str) -> bool:
    """The error names ``source`` and either a row/field or (whole-file problems) what was expected."""
    if not isinstance(error, CandleValidationError) or source not in str(error) or error.source != source:
        return False
    return error.row != "-" or error.field != "-" or "expected" in error.reason


def judge_file(path: Path, clean: pd.DataFrame, interval: str, harmless: bool) -> Verdict:
    """Read ``path`` and classify the outcome against the generator's ``clean`` rows."""
    try:
        read = read_candle_file(path, interval)
    except Exception as error:  # every failure is judged, raw library errors included
        outcome = "clear_error" if names_context(error, str(path)) else "error_without_context"
        return Verdict(outcome, None, f"{type(error).__name__}: {error}")
    exact = read.reset_index(drop=True).equals(clean[CANDLE_COLUMNS].reset_index(drop=True))
    return Verdict("valid_rows" if exact else "silently_accepted", read, "" if exact else "read differs")


def corrupt_file(directory: Path, op: Operator, fmt: str, rng: random.Random, index: int):
    """Write one corrupted file; returns (path, clean frame, corrupted)."""
    clean = clean_candles(rng)
    corrupted = op.apply(rng, clean, fmt)
    path = directory / f"case{index:05d}_{op.name}_{fmt}{corrupted.suffix}"
    path.write_bytes(corrupted.data)
    return path, clean, corrupted


# -- exchange fault scenarios ---------------------------------------------------------------------

T0 = pd.Timestamp("2024-03-01", tz="UTC")
T0_MS = int(T0.timestamp() * 1000)
EXCHANGE_SYMBOL = "BTCUSDT"


class FakeClock:
    """Shared by client and server; ``sleep`` advances it instead of sleeping."""

    def __init__(self) -> None:
        self.now_s = (T0 + pd.Timedelta(days=5, seconds=30)).timestamp()

    def clock(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds


@dataclass(frozen=True)
class Scenario:
    """``setup(rng, rows) -> (faults, rows served, config overrides, expect)``; expect is ``"rows"`` (exactly
    the served rows, outages recorded) or ``"error"`` (a BinanceError, or a CandleValidationError naming
    the page, row and field)."""

    name: str
    setup: Callable[[random.Random, list[Kline]], tuple[list[Fault], list[Kline], dict, str]]


def _mutate_row(field: int, value: Callable[[random.Random, Kline], object]):
    def setup(rng, rows):
        index = rng.randrange(0, 900)

        def mutate(page: list[Kline]) -> None:
            page[index][field] = value(rng, page[index])

        return [Fault.none()] * rng.randint(0, 1) + [Fault.corrupt(mutate)], rows, {}, "error"

    return setup


def _reorder(rng, rows):
    def mutate(page):
        i = rng.randrange(0, 900)
        page[i], page[i + 1] = page[i + 1], page[i]

    return [Fault.corrupt(mutate)], rows, {}, "error"


def _duplicate_kline(rng, rows):
    def mutate(page):
        i = rng.randrange(0, 900)
        page.insert(i + 1, list(page[i]))

    return [Fault.corrupt(mutate)], rows, {}, "error"


def _truncated(rng, rows):
    return [Fault.none()] * rng.randint(0, 1) + [Fault.truncated(rng.randrange(1, 999))], rows, {}, "rows"


def _empty_once(rng, rows):
    return [Fault.none()] * rng.randint(0, 1) + [Fault.truncated(0)], rows, {}, "rows"


def _outage(rng, rows):
    start = rng.randrange(10, len(rows) - 200)
    served = rows[:start] + rows[start + rng.randint(1, 150) :]
    return [], served, {}, "rows"


def _rate_limited(rng, rows):
    return [Fault.rate_limited(rng.randint(1, 30)) for _ in range(rng.randint(1, 3))], rows, {}, "rows"


def _retry_wait_cap(rng, rows):
    faults = [Fault.rate_limited(rng.randint(60, 100)) for _ in range(6)]
    return faults, rows, {"max_total_retry_wait_s": 100.0}, "error"


def _long_ban(rng, rows):
    return [Fault.banned(rng.randint(700, 90_000))], rows, {}, "error"


def _server_errors(rng, rows):
    return (
        [Fault.server_error(rng.choice([500, 502, 503, 504])) for _ in range(rng.randint(1, 3))],
        rows,
        {},
        "rows",
    )


def _persistent_5xx(rng, rows):
    return [Fault.server_error(503)] * 10, rows, {}, "error"


def _slow_once(rng, rows):
    return [Fault.slow(0.6)], rows, {"timeout_s": 0.2}, "rows"


def _trickle(rng, rows):
    return [Fault.trickle(0.05)], rows, {"timeout_s": 1.0, "deadline_s": 1.0}, "error"


def _short_array(rng, rows):
    index = rng.randrange(0, 900)
    return [Fault.corrupt(lambda page: page[index].pop())], rows, {}, "error"


def _secret_in_base_url(rng, rows):
    return [Fault.server_error(503)] * 10, rows, {"userinfo": "trader:s3cr3tPassw0rd"}, "error"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("truncated_page", _truncated),
    Scenario("empty_page_once", _empty_once),
    Scenario("exchange_outage", _outage),
    Scenario("rate_limited_429", _rate_limited),
    Scenario("retry_wait_cap", _retry_wait_cap),
    Scenario("ip_ban_longer_than_allowed", _long_ban),
    Scenario("transient_5xx", _server_errors),
    Scenario("persistent_5xx", _persistent_5xx),
    Scenario("slow_response_timeout", _slow_once),
    Scenario("trickling_body_deadline", _trickle),
    Scenario("huge_open_time", _mutate_row(0, lambda r, k: r.choice([10**20, -(10**15), 2**63]))),
    Scenario("string_open_time", _mutate_row(0, lambda r, k: str(k[0]))),
    Scenario("off_grid_open_time", _mutate_row(0, lambda r, k: k[0] + r.choice([1, 30_000]))),
    Scenario("close_time_mismatch", _mutate_row(6, lambda r, k: k[6] + r.choice([1, -60_000]))),
    Scenario("nan_price", _mutate_row(4, lambda r, k: r.choice(["NaN", "inf", "abc", ""]))),
    Scenario("boolean_volume", _mutate_row(5, lambda r, k: r.choice([True, False]))),
    Scenario("negative_volume", _mutate_row(5, lambda r, k: "-" + k[5])),
    Scenario("ohlc_violation", _mutate_row(2, lambda r, k: str(min(float(k[1]), float(k[4])) * 0.5))),
    Scenario("short_kline_array", _short_array),
    Scenario("secret_in_base_url", _secret_in_base_url),
    Scenario("rows_out_of_order", _reorder),
    Scenario("duplicated_kline", _duplicate_kline),
)


class _LogCapture(logging.Handler):
    """Every formatted record of the client's and httpx's loggers while in the ``with`` block."""

    NAMES = ("antmeter.market.binance", "httpx")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def __enter__(self) -> _LogCapture:
        for name in self.NAMES:
            logger = logging.getLogger(name)
            logger.addHandler(self)
            self._levels = getattr(self, "_levels", {}) | {name: logger.level}
            logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for name in self.NAMES:
            logging.getLogger(name).removeHandler(self)
            logging.getLogger(name).setLevel(self._levels[name])


def run_scenario(server: FakeBinance, scenario: Scenario, rng: random.Random, hang_after_s: float = 15.0):
    """Serve one scenario on ``server`` and judge the client's answer; returns (outcome, detail)."""
    import time

    rows = make_klines(T0_MS, 2500, seed=rng.randrange(1000))
    faults, served, overrides, expect = scenario.setup(rng, rows)
    clock = FakeClock()
    server.klines = {(EXCHANGE_SYMBOL, "1m"): served}
    server.clock = clock.clock
    server.faults = list(faults)
    server.requests.clear()
    userinfo = overrides.pop("userinfo", None)
    base_url = server.base_url.replace("://", f"://{userinfo}@") if userinfo else server.base_url
    secret = userinfo.split(":", 1)[1] if userinfo else None
    config = BinanceConfig(base_url=base_url, **overrides)
    started = time.monotonic()
    with (
        BinanceKlinesClient(config, sleep=clock.sleep, clock=clock.clock, rng=rng) as client,
        _LogCapture() as logs,
    ):
        try:
            report = client.fetch_klines_report(EXCHANGE_SYMBOL, "1m", T0, T0 + 2500 * MINUTE)
        except (BinanceError, CandleValidationError) as error:
            elapsed = time.monotonic() - started
            if elapsed > hang_after_s:
                return "hang", f"{elapsed:.1f} s"
            if secret and (secret in str(error) or any(secret in line for line in logs.lines)):
                return "secret_leaked", "the base URL's password appeared in an error or log line"
            clear = (
                isinstance(error, BinanceError)
                and "klines" in str(error)
                or (
                    isinstance(error, CandleValidationError)
                    and "binance BTCUSDT 1m page" in error.source
                    and error.row != "-"
                )
            )
            if expect == "rows" or not clear:
                return "error_without_context" if not clear else "unexpected_error", str(error)
            return "clear_error", str(error)
        except Exception as error:
            return "error_without_context", f"{type(error).__name__}: {error}"
    if time.monotonic() - started > hang_after_s:
        return "hang", "slow"
    expected = pd.DataFrame(
        {
            "open_time": pd.to_datetime([r[0] for r in served], unit="ms", utc=True).astype(
                "datetime64[ns, UTC]"
            ),
            **{name: [float(r[i]) for r in served] for i, name in enumerate(VALUES, start=1)},
        }
    )
    if expect == "rows" and report.candles.equals(expected):
        missing = sorted(set(int(r[0]) for r in rows) - set(int(r[0]) for r in served))
        outage_minutes = sum(
            (o.end - o.start) // MINUTE for o in report.outages if o.end <= T0 + 2500 * MINUTE
        )
        if outage_minutes == len(missing):
            return "valid_rows", ""
        return "silently_accepted", f"outages {report.outages} do not cover {len(missing)} missing"
    return "silently_accepted", f"{len(report.candles)} rows, expected {expect}"


# -- hostile symbols ------------------------------------------------------------------------------

HOSTILE_SYMBOLS: dict[str, tuple[str, ...]] = {
    "path_traversal": ("../../../escaped", "..", "../BTCUSDT", "/etc/passwd", "BTC/../../x"),
    "dot_suffix_collision": ("BTC.A", "BTC.B", "BTCUSDT.csv"),
    "nul_and_control": ("BTC\x00USDT", "BTC\nUSDT", "BTC USDT", "BTC\tUSDT"),
    "case_and_length": ("btcusdt", "X", "A" * 21, ""),
    "unicode_lookalike": ("ВТСUSDT", "BTCＵSDT"),
}


def judge_symbol(file_dir: Path, symbol: str) -> str:
    """A hostile symbol must be refused (naming it and the rule) before any path or SQL is built."""
    from antmeter_resources import CandleSourceResource

    source = CandleSourceResource(kind="file", file_dir=str(file_dir))
    try:
        source.fetch_day(symbol, "2024-01-02", pd.Timestamp("2024-01-03", tz="UTC"))
    except InvalidSymbolError as error:
        return (
            "clear_error"
            if repr(symbol) in str(error) and "ANTMETER_SYMBOL_PATTERN" in str(error)
            else ("error_without_context")
        )
    except Exception:
        return "error_without_context"
    return "silently_accepted"
