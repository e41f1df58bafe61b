"""Read candles from a local file into the canonical candle frame.

Accepted inputs (chosen by suffix: ``.csv``, ``.csv.gz``, ``.zip`` (exactly one member) → CSV;
``.parquet``, ``.pq`` → Parquet). CSV text is UTF-8 (a BOM is allowed), comma-separated, every
line with the same number of fields (one trailing comma on *every* line, header included, is
tolerated and dropped).

* **Named columns**: a time column called ``timestamp``, ``datetime`` or ``open_time`` (exactly one
  of them; header names are matched case-insensitively) plus ``open``, ``high``, ``low``, ``close``,
  ``volume``. Other columns are ignored. The time column is the candle's **open time** and may hold

  - ISO-8601 strings; a string without an offset is taken as **UTC**, one with an offset is
    converted to UTC;
  - epoch numbers in milliseconds or microseconds, told apart per value by magnitude
    (ms: ``[1e11, 9.2e12)``, 1973–2261; µs: ``[1e14, 9.2e15)``); anything else is rejected;
  - (Parquet) datetime columns; naive ones are taken as UTC.

* **Binance kline dumps** (data.binance.vision): CSV with no header and exactly the 12 kline columns
  ``open_time, open, high, low, close, volume, close_time, quote_volume, trades, taker_buy_base,
  taker_buy_quote, ignore``. ``open_time`` is in ms (files before 2025) or µs (spot files since
  2025), detected by magnitude as above; ``close_time`` must be ``open_time + interval - 1`` in the
  same unit. The zipped files can be read directly.

A file is headerless when the first cell of its first line is a number. Every candle then passes
:func:`~antmeter.market.candles.validate_candles` for the given interval. Every failure, including an
unreadable file, raises :class:`~antmeter.market.candles.CandleValidationError` whose source is the
file path and whose row is the 0-based data row (with the line number where known) and what was
expected.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from antmeter.market.binance import KLINE_FIELDS
from antmeter.market.candles import (
    CANDLE_COLUMNS,
    DEFAULT_INTERVAL,
    CandleValidationError,
    interval_timedelta,
    validate_candles,
)

TIME_COLUMN_NAMES = ("timestamp", "datetime", "open_time")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".zip")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?")
# Per-value epoch units, as (name, lowest value, highest value exclusive, nanoseconds per unit).
_EPOCH_UNITS = (("ms", 10**11, 92 * 10**11, 10**6), ("us", 10**14, 92 * 10**14, 10**3))


def read_candle_file(
    path: str | Path, interval: str = DEFAULT_INTERVAL, *, now: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Read a CSV/Parquet candle file or a Binance kline dump into a validated canonical frame."""
    path = Path(path)
    source = str(path)
    interval_timedelta(interval)
    if not path.is_file():
        raise FileNotFoundError(f"candle file not found: {path}")
    name = path.name.lower()
    if name.endswith(_PARQUET_SUFFIXES):
        frame = _from_named_columns(_read_parquet(path, source), source, header_lines=None)
    elif name.endswith(_CSV_SUFFIXES):
        text = _decode(_read_bytes(path, source, name), source)
        frame = _from_csv_text(text, source, interval)
    else:
        raise ValueError(
            f"{source}: unsupported file type; expected one of {_CSV_SUFFIXES + _PARQUET_SUFFIXES}"
        )
    return validate_candles(frame, source, interval, now=now)


# -- reading bytes and text ------------------------------------------------------------------------


def _file_error(source: str, expected: str, exc: BaseException | str) -> CandleValidationError:
    detail = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return CandleValidationError(source, "-", "-", f"{detail}; expected {expected}")


def _read_parquet(path: Path, source: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ValueError ... for a broken file
        raise _file_error(source, "an Apache Parquet file with candle columns", exc) from None


def _read_bytes(path: Path, source: str, name: str) -> bytes:
    data = path.read_bytes()
    if name.endswith(".gz"):
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise _file_error(source, "a complete gzip-compressed CSV file", exc) from None
    if name.endswith(".zip"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                members = [m for m in archive.infolist() if not m.is_dir()]
                if len(members) != 1:
                    names = ", ".join(m.filename for m in members) or "none"
                    raise _file_error(
                        source,
                        "a zip archive with exactly one CSV member",
                        f"{len(members)} members ({names})",
                    )
                return archive.read(members[0])
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
            raise _file_error(source, "a valid zip archive holding one CSV file", exc) from None
    return data


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CandleValidationError(
            source,
            f"- (line {line})",
            "-",
            f"byte {data[exc.start]:#04x} at offset {exc.start} is not UTF-8 text; expected a UTF-8 CSV file",
        ) from None


# -- CSV -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Records:
    """The non-blank CSV records of a text: first record's cells, field count and line number of each,
    and a builder of the data records as a frame of strings (``width`` leading fields)."""

    first: list[str]
    counts: list[int]
    lines: list[int]
    frame: Callable[[int, int], pd.DataFrame]  # (records to skip, width) -> frame
    last_field_blank: bool  # on every record (a trailing comma on every line)


def _from_csv_text(text: str, source: str, interval: str) -> pd.DataFrame:
    records = _records(text.replace("\r\n", "\n"), source)
    if not records.counts:
        raise _file_error(source, "a header line or Binance kline rows", "empty file")
    width = records.counts[0]
    if width > 1 and records.last_field_blank and len(set(records.counts)) == 1:
        width -= 1  # a trailing comma on every line
    first = records.first[:width]
    if width == 1 and any(d in first[0] for d in (";", "\t", "|")):
        raise CandleValidationError(
            source, "- (line 1)", "-", "one column found; expected comma-separated fields (wrong delimiter?)"
        )
    headerless = _is_number(first[0].strip())
    if headerless and width != len(KLINE_FIELDS):
        raise CandleValidationError(
            source,
            "- (line 1)",
            "-",
            f"headerless file with {width} columns; expected the {len(KLINE_FIELDS)}-column Binance kline "
            "dump format",
        )
    names = list(KLINE_FIELDS) if headerless else [c.strip() for c in first]
    header_lines = 0 if headerless else 1
    expected = records.counts[0]
    for i, count in enumerate(records.counts[header_lines:]):
        if count != expected:
            got = count - (expected - width)
            raise CandleValidationError(
                source,
                f"{i} (line {records.lines[i + header_lines]})",
                names[min(max(got, 0), width - 1)],
                f"line has {got} fields; expected {width} "
                f"({'truncated line?' if count < expected else 'extra delimiter?'})",
            )
    cells = records.frame(header_lines, width)
    cells.columns = names
    if headerless:
        return _from_binance_dump(cells, source, interval)
    return _from_named_columns(cells, source, header_lines=1)


def _records(text: str, source: str) -> _Records:
    """Fast path (no quotes, no lone CR, no whitespace-only lines): count commas per line and let pandas'
    C parser read the cells; otherwise the csv module, which knows quoting."""
    raw_lines = text.split("\n")
    if '"' in text or "\r" in text or any(line and not line.strip() for line in raw_lines):
        return _quoted_records(text, source)
    numbered = [(n, line) for n, line in enumerate(raw_lines, start=1) if line]
    counts = [line.count(",") + 1 for _, line in numbered]

    def frame(skip: int, width: int) -> pd.DataFrame:
        if len(numbered) <= skip:
            return pd.DataFrame(columns=range(width), dtype=object)
        cells = pd.read_csv(
            io.StringIO(text),
            header=None,
            dtype=str,
            na_filter=False,
            skipinitialspace=True,
            index_col=False,
            skiprows=skip,
        )
        return cells.iloc[:, :width].set_axis(range(width), axis=1)

    first = numbered[0][1].split(",") if numbered else []
    blank = all(line.rstrip().endswith(",") for _, line in numbered)
    return _Records([c.lstrip() for c in first], counts, [n for n, _ in numbered], frame, blank)


def _quoted_records(text: str, source: str) -> _Records:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, skipinitialspace=True)
    rows, lines = [], []
    try:
        for row in reader:
            if row and (len(row) > 1 or row[0].strip()):
                rows.append(row)
                lines.append(reader.line_num)
    except csv.Error as exc:
        raise CandleValidationError(
            source,
            f"- (line {reader.line_num})",
            "-",
            f"unreadable CSV ({exc}); expected comma-separated lines with balanced quotes",
        ) from None

    def frame(skip: int, width: int) -> pd.DataFrame:
        data = [row[:width] for row in rows[skip:]]
        return pd.DataFrame(data, columns=range(width), dtype=object)

    blank = all(not row[-1].strip() for row in rows)
    return _Records(rows[0] if rows else [], [len(r) for r in rows], lines, frame, blank)


def _from_binance_dump(raw: pd.DataFrame, source: str, interval: str) -> pd.DataFrame:
    """Open times, values and the close-time consistency check of a data.binance.vision dump."""
    open_ns, scale = _epoch_nanoseconds(raw["open_time"], source, "open_time", header_lines=0)
    close_raw = pd.to_numeric(raw["close_time"], errors="coerce")
    step_ns = interval_timedelta(interval).value
    expected_close = (open_ns + step_ns - scale) // scale
    bad_close = ~(close_raw.to_numpy(dtype="float64") == expected_close.astype("float64"))
    if bad_close.any():
        i = int(np.flatnonzero(bad_close)[0])
        raise _row_error(
            source,
            i,
            "close_time",
            0,
            f"{raw['close_time'].iloc[i]!r} is not open_time + {interval} - 1 unit ({expected_close[i]})",
        )
    for col in KLINE_FIELDS[7:]:  # unused here, but a dump row has a value in every field
        _raise_first(raw[col] == "", raw[col], source, col, 0, "empty field (truncated line?)")
    frame = pd.DataFrame({"open_time": pd.Series(pd.to_datetime(open_ns, unit="ns", utc=True))})
    for col in CANDLE_COLUMNS[1:]:
        frame[col] = raw[col].to_numpy()
    return frame


def _from_named_columns(raw: pd.DataFrame, source: str, header_lines: int | None) -> pd.DataFrame:
    """Map a frame with named columns onto the canonical schema (validated by the caller)."""
    columns: dict[str, object] = {}
    for c in raw.columns:
        key = str(c).strip().lower()
        if key in columns and key in (*TIME_COLUMN_NAMES, *CANDLE_COLUMNS):
            raise CandleValidationError(source, "-", key, "column appears twice in the header")
        columns[key] = c
    present = [name for name in TIME_COLUMN_NAMES if name in columns]
    if len(present) != 1:
        found = ", ".join(present) if present else "none"
        raise CandleValidationError(
            source,
            "-",
            "open_time",
            f"expected exactly one time column of {TIME_COLUMN_NAMES}, found {found}",
        )
    missing = [c for c in CANDLE_COLUMNS[1:] if c not in columns]
    if missing:
        raise CandleValidationError(source, "-", ",".join(missing), "missing column(s)")
    time_field = present[0]
    frame = pd.DataFrame(
        {"open_time": _parse_times(raw[columns[time_field]], source, time_field, header_lines)}
    )
    for col in CANDLE_COLUMNS[1:]:
        frame[col] = raw[columns[col]].to_numpy()
    return frame


def _parse_times(values: pd.Series, source: str, field: str, header_lines: int | None) -> pd.Series:
    """Open times as UTC timestamps from ISO strings, epoch ms/µs numbers or datetime values."""
    values = values.reset_index(drop=True)
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    if pd.api.types.is_bool_dtype(values.dtype):
        raise CandleValidationError(source, "-", field, "boolean column is not a time")
    missing = values.isna().to_numpy().copy()
    if values.dtype == object:
        missing |= (values == "").to_numpy(dtype=bool)  # skipinitialspace: a blank cell reads as ""
    if missing.any():
        raise _row_error(source, int(np.flatnonzero(missing)[0]), field, header_lines, "missing time")
    numbers = (
        pd.to_numeric(values, errors="coerce") if not pd.api.types.is_numeric_dtype(values.dtype) else values
    )
    if len(values) and pd.notna(numbers.iloc[0]):  # the first value decides: epoch numbers or ISO strings
        _raise_first(numbers.isna(), values, source, field, header_lines, "not an epoch number")
        nanoseconds, _ = _epoch_nanoseconds(values, source, field, header_lines, numbers)
        return pd.Series(pd.to_datetime(nanoseconds, unit="ns", utc=True))
    times = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
    _raise_first(times.isna(), values, source, field, header_lines, "not an ISO-8601 time")
    return times


def _raise_first(
    bad: pd.Series, values: pd.Series, source: str, field: str, header_lines: int | None, reason: str
) -> None:
    """Raise for the first row flagged in ``bad``, quoting its raw value."""
    flagged = bad.to_numpy()
    if flagged.any():
        i = int(np.flatnonzero(flagged)[0])
        raise _row_error(source, i, field, header_lines, f"{reason}: {values.iloc[i]!r}")


def _epoch_nanoseconds(
    values: pd.Series,
    source: str,
    field: str,
    header_lines: int | None,
    numbers: pd.Series | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Epoch ms or µs (decided per value by magnitude) as (nanoseconds, nanoseconds per unit)."""
    if numbers is None:
        _raise_first(values == "", values, source, field, header_lines, "missing time")
        numbers = pd.to_numeric(values, errors="coerce")
        _raise_first(numbers.isna(), values, source, field, header_lines, "not an epoch number")
    as_float = numbers.to_numpy(dtype="float64")
    fractional = as_float != np.floor(as_float)
    if fractional.any():
        i = int(np.flatnonzero(fractional)[0])
        raise _row_error(source, i, field, header_lines, f"epoch time is not an integer: {values.iloc[i]!r}")
    nanoseconds = np.zeros(len(as_float), dtype="int64")
    scales = np.zeros(len(as_float), dtype="int64")
    matched = np.zeros(len(as_float), dtype=bool)
    for _unit, low, high, scale in _EPOCH_UNITS:
        in_unit = (as_float >= low) & (as_float < high)  # range first: 1e20 must not wrap around in int64
        nanoseconds[in_unit] = numbers[in_unit].astype("int64").to_numpy() * scale
        scales[in_unit] = scale
        matched |= in_unit
    if not matched.all():
        i = int(np.flatnonzero(~matched)[0])
        raise _row_error(
            source,
            i,
            field,
            header_lines,
            f"epoch value {values.iloc[i]!r} is neither milliseconds (1e11..9.2e12) nor microseconds "
            "(1e14..9.2e15)",
        )
    return nanoseconds, scales


def _row_error(
    source: str, i: int, field: str, header_lines: int | None, reason: str
) -> CandleValidationError:
    row = f"{i} (line {i + header_lines + 1})" if header_lines is not None else i
    return CandleValidationError(source, row, field, reason)


def _is_number(text: str) -> bool:
    return _NUMBER.fullmatch(text) is not None
