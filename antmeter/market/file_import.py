"""Read candles from a local file into the canonical candle frame.

Accepted inputs (chosen by suffix: ``.csv``, ``.csv.gz``, ``.zip`` → CSV; ``.parquet``, ``.pq`` →
Parquet):

* **Named columns**: a time column called ``timestamp``, ``datetime`` or ``open_time`` (exactly one
  of them; header names are matched case-insensitively) plus ``open``, ``high``, ``low``, ``close``,
  ``volume``. Other columns are ignored. The time column is the candle's **open time** and may hold

  - ISO-8601 strings; a string without an offset is taken as **UTC**, one with an offset is
    converted to UTC;
  - epoch numbers in milliseconds or microseconds, told apart per value by magnitude
    (ms: ``[1e11, 9.2e12)``, 1973–2261; µs: ``[1e14, 9.2e15)``); anything else is rejected;
  - (Parquet) datetime columns; naive ones are taken as UTC.

* **Binance kline dumps** (data.binance.vision): CSV with no header and the 12 kline columns
  ``open_time, open, high, low, close, volume, close_time, quote_volume, trades, taker_buy_base,
  taker_buy_quote, ignore``. ``open_time`` is in ms (files before 2025) or µs (spot files since
  2025), detected by magnitude as above. The zipped files can be read directly.

A file is headerless when the first cell of its first line is a number. Errors raise
:class:`~antmeter.market.candles.CandleValidationError` whose source is the file path and whose row is the
0-based data row (the CSV line number is added where known).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from antmeter.market.binance import KLINE_FIELDS
from antmeter.market.candles import CANDLE_COLUMNS, CandleValidationError, validate_candles

TIME_COLUMN_NAMES = ("timestamp", "datetime", "open_time")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".zip")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?")
# Per-value epoch units, as (name, lowest value, highest value exclusive, nanoseconds per unit).
_EPOCH_UNITS = (("ms", 10**11, 92 * 10**11, 10**6), ("us", 10**14, 92 * 10**14, 10**3))


def read_candle_file(path: str | Path) -> pd.DataFrame:
    """Read a CSV/Parquet candle file or a Binance kline dump into a validated canonical frame."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"candle file not found: {path}")
    name = path.name.lower()
    if name.endswith(_PARQUET_SUFFIXES):
        return _from_named_columns(pd.read_parquet(path), source, header_lines=None)
    if not name.endswith(_CSV_SUFFIXES):
        raise ValueError(
            f"{source}: unsupported file type; expected one of {_CSV_SUFFIXES + _PARQUET_SUFFIXES}"
        )
    try:
        first = pd.read_csv(path, header=None, nrows=1, dtype=str)
    except pd.errors.EmptyDataError:
        raise CandleValidationError(source, "-", "-", "empty file") from None
    first_cell = str(first.iloc[0, 0]).strip()
    if _is_number(first_cell):
        return _from_binance_dump(path, source)
    return _from_named_columns(_read_csv(path, source, header=0), source, header_lines=1)


def _from_binance_dump(path: Path, source: str) -> pd.DataFrame:
    raw = _read_csv(path, source, header=None)
    if raw.shape[1] != len(KLINE_FIELDS):
        raise CandleValidationError(
            source,
            "-",
            "-",
            f"headerless file with {raw.shape[1]} columns; expected the {len(KLINE_FIELDS)}-column Binance "
            "kline dump format",
        )
    raw.columns = list(KLINE_FIELDS)
    return _from_named_columns(raw, source, header_lines=0)


def _read_csv(path: Path, source: str, header: int | None) -> pd.DataFrame:
    try:
        return pd.read_csv(path, header=header, dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CandleValidationError(source, "-", "-", f"unreadable CSV: {exc}") from None


def _from_named_columns(raw: pd.DataFrame, source: str, header_lines: int | None) -> pd.DataFrame:
    """Map a frame with named columns onto the canonical schema and validate it."""
    columns = {str(c).strip().lower(): c for c in raw.columns}
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
    return validate_candles(frame, source)


def _parse_times(values: pd.Series, source: str, field: str, header_lines: int | None) -> pd.Series:
    """Open times as UTC timestamps from ISO strings, epoch ms/µs numbers or datetime values."""
    values = values.reset_index(drop=True)
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    missing = values.isna().to_numpy()
    if missing.any():
        raise _time_error(source, int(np.flatnonzero(missing)[0]), field, header_lines, "missing time")
    if pd.api.types.is_bool_dtype(values.dtype):
        raise CandleValidationError(source, "-", field, "boolean column is not a time")
    numbers = (
        pd.to_numeric(values, errors="coerce") if not pd.api.types.is_numeric_dtype(values.dtype) else values
    )
    if len(values) and pd.notna(numbers.iloc[0]):  # the first value decides: epoch numbers or ISO strings
        _raise_first(numbers.isna(), values, source, field, header_lines, "not an epoch number")
        return _epoch_times(numbers, source, field, header_lines)
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
        raise _time_error(source, i, field, header_lines, f"{reason}: {values.iloc[i]!r}")


def _epoch_times(numbers: pd.Series, source: str, field: str, header_lines: int | None) -> pd.Series:
    """Epoch ms or µs (decided per value by magnitude) as UTC timestamps."""
    as_float = numbers.to_numpy(dtype="float64")
    fractional = as_float != np.floor(as_float)
    if fractional.any():
        i = int(np.flatnonzero(fractional)[0])
        raise _time_error(
            source, i, field, header_lines, f"epoch time is not an integer: {numbers.iloc[i]!r}"
        )
    as_int = numbers.to_numpy(dtype="int64")
    nanoseconds = np.zeros(len(as_int), dtype="int64")
    matched = np.zeros(len(as_int), dtype=bool)
    for _unit, low, high, scale in _EPOCH_UNITS:
        in_unit = (as_int >= low) & (as_int < high)
        nanoseconds[in_unit] = as_int[in_unit] * scale
        matched |= in_unit
    if not matched.all():
        i = int(np.flatnonzero(~matched)[0])
        raise _time_error(
            source,
            i,
            field,
            header_lines,
            f"epoch value {as_int[i]} is neither milliseconds (1e11..9.2e12) nor microseconds (1e14..9.2e15)",
        )
    return pd.Series(pd.to_datetime(nanoseconds, unit="ns", utc=True))


def _time_error(
    source: str, i: int, field: str, header_lines: int | None, reason: str
) -> CandleValidationError:
    row = f"{i} (line {i + header_lines + 1})" if header_lines is not None else i
    return CandleValidationError(source, row, field, reason)


def _is_number(text: str) -> bool:
    return _NUMBER.fullmatch(text) is not None
