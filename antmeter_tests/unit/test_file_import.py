"""read_candle_file: CSV, Parquet and Binance kline dumps (ms and µs), written to tmp_path by each test."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest

from antmeter.market.candles import CANDLE_COLUMNS, CandleValidationError
from antmeter.market.file_import import read_candle_file
from antmeter_testkit.servers.binance_server import make_klines

T0 = pd.Timestamp("2024-12-31 23:58", tz="UTC")
T0_MS = int(T0.timestamp() * 1000)
COUNT = 5


def _expected() -> pd.DataFrame:
    """The candles every test writes (in its own format) and expects back."""
    rows = make_klines(T0_MS, COUNT, seed=5)
    return pd.DataFrame(
        {
            "open_time": pd.date_range(T0, periods=COUNT, freq="min", tz="UTC").astype("datetime64[ns, UTC]"),
            **{name: [float(r[i]) for r in rows] for i, name in enumerate(CANDLE_COLUMNS[1:], start=1)},
        }
    )


def _named(time_column: str, times: list[object]) -> pd.DataFrame:
    frame = _expected().drop(columns="open_time")
    frame.insert(0, time_column, times)
    return frame


def _dump_lines(time_scale: int) -> list[str]:
    """Binance data.binance.vision kline lines: 12 fields, no header, times in ms * time_scale."""
    lines = []
    for row in make_klines(T0_MS, COUNT, seed=5):
        row[0], row[6] = row[0] * time_scale, (row[6] + 1) * time_scale - 1
        lines.append(",".join(str(v) for v in row))
    return lines


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_with_iso_timestamps(tmp_path):
    path = tmp_path / "candles.csv"
    times = [t.isoformat() for t in _expected()["open_time"]]  # "+00:00" offsets
    _named("timestamp", times).to_csv(path, index=False)

    pd.testing.assert_frame_equal(read_candle_file(path), _expected())


def test_naive_iso_times_are_taken_as_utc_and_offsets_converted(tmp_path):
    naive = [t.strftime("%Y-%m-%d %H:%M:%S") for t in _expected()["open_time"]]
    path = tmp_path / "naive.csv"
    _named("datetime", naive).to_csv(path, index=False)
    pd.testing.assert_frame_equal(read_candle_file(path), _expected())

    shifted = [t.tz_convert("Europe/Berlin").isoformat() for t in _expected()["open_time"]]
    path = tmp_path / "berlin.csv"
    _named("DateTime", shifted).to_csv(path, index=False)
    pd.testing.assert_frame_equal(read_candle_file(path), _expected())


@pytest.mark.parametrize("scale", [1, 1000], ids=["ms", "us"])
def test_csv_with_epoch_numbers(tmp_path, scale):
    epochs = [T0_MS * scale + i * 60_000 * scale for i in range(COUNT)]
    path = tmp_path / "epoch.csv"
    _named("open_time", epochs).to_csv(path, index=False)

    pd.testing.assert_frame_equal(read_candle_file(path), _expected())


def test_rows_out_of_order_are_sorted(tmp_path):
    path = tmp_path / "shuffled.csv"
    frame = _named("timestamp", [t.isoformat() for t in _expected()["open_time"]])
    frame.iloc[[3, 0, 4, 1, 2]].to_csv(path, index=False)

    pd.testing.assert_frame_equal(read_candle_file(path), _expected())


@pytest.mark.parametrize("kind", ["aware", "naive", "epoch_us"])
def test_parquet(tmp_path, kind):
    times = _expected()["open_time"]
    column = {
        "aware": times.dt.tz_convert("Asia/Tokyo"),
        "naive": times.dt.tz_localize(None),
        "epoch_us": times.astype("int64") // 1000,
    }[kind]
    path = tmp_path / "candles.parquet"
    _named("timestamp", list(column)).assign(timestamp=column.to_numpy()).to_parquet(path)

    pd.testing.assert_frame_equal(read_candle_file(path), _expected())


@pytest.mark.parametrize("scale", [1, 1000], ids=["ms_before_2025", "us_since_2025"])
def test_binance_kline_dump(tmp_path, scale):
    path = _write(tmp_path / "BTCUSDT-1m-2024-12-31.csv", _dump_lines(scale))

    pd.testing.assert_frame_equal(read_candle_file(path), _expected())


def test_dump_mixing_ms_and_us_files_and_zipped(tmp_path):
    """Concatenated 2024 (ms) and 2025 (µs) dumps, read straight from the zip Binance ships."""
    lines = _dump_lines(1)[:2] + _dump_lines(1000)[2:]
    path = tmp_path / "BTCUSDT-1m-2025-01.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("BTCUSDT-1m-2025-01.csv", "\n".join(lines) + "\n")

    pd.testing.assert_frame_equal(read_candle_file(path), _expected())


def _bad_cell(lines: list[str], row: int, field: int, value: str) -> list[str]:
    cells = lines[row].split(",")
    cells[field] = value
    return [*lines[:row], ",".join(cells), *lines[row + 1 :]]


@pytest.mark.parametrize(
    ("field_index", "value", "field", "reason"),
    [
        (2, "abc", "high", "not a finite number: 'abc'"),
        (5, "-3", "volume", "negative volume"),
        (3, "999999", "low", "low above open/close"),
        (0, "12345", "open_time", "neither milliseconds"),
        (0, "2024-13-45", "open_time", "not an epoch number"),
        (0, "", "open_time", "missing time"),
    ],
)
def test_bad_dump_row_names_file_row_and_field(tmp_path, field_index, value, field, reason):
    path = _write(tmp_path / "bad.csv", _bad_cell(_dump_lines(1), 3, field_index, value))

    with pytest.raises(CandleValidationError) as info:
        read_candle_file(path)
    error = info.value
    assert error.source == str(path)
    assert error.field == field
    assert reason in error.reason
    assert str(error.row).startswith("3")


def test_bad_time_in_named_csv_reports_line(tmp_path):
    times = [t.isoformat() for t in _expected()["open_time"]]
    times[2] = "yesterday"
    path = tmp_path / "bad_time.csv"
    _named("timestamp", times).to_csv(path, index=False)

    with pytest.raises(CandleValidationError, match=r"bad_time\.csv: row 2 \(line 4\), field 'timestamp'"):
        read_candle_file(path)


def test_duplicate_open_time_rejected(tmp_path):
    lines = _dump_lines(1)
    path = _write(tmp_path / "dup.csv", [*lines, lines[1]])
    with pytest.raises(CandleValidationError, match="duplicate open time"):
        read_candle_file(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "empty file"),
        ("1735689480000,1,2,0.5,1.5,10\n", "6 columns; expected the 12-column Binance"),
        ("time,open,high,low,close,volume\n2024-01-01,1,2,0.5,1.5,10\n", "exactly one time column"),
        ("timestamp,datetime,open,high,low,close,volume\n", "exactly one time column"),
        ("timestamp,open,high,low,close\n2024-01-01,1,2,0.5,1.5\n", "volume.*missing column"),
    ],
)
def test_bad_file_shapes(tmp_path, content, match):
    path = tmp_path / "shape.csv"
    path.write_text(content)
    with pytest.raises(CandleValidationError, match=match) as info:
        read_candle_file(path)
    assert info.value.source == str(path)


def test_header_only_csv_gives_empty_frame(tmp_path):
    path = tmp_path / "header_only.csv"
    path.write_text("open_time,open,high,low,close,volume\n")
    candles = read_candle_file(path)
    assert candles.empty and list(candles.columns) == CANDLE_COLUMNS
    assert str(candles["open_time"].dtype) == "datetime64[ns, UTC]"


def test_unsupported_suffix_and_missing_file(tmp_path):
    path = tmp_path / "candles.json"
    path.write_text("[]")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_candle_file(path)
    with pytest.raises(FileNotFoundError):
        read_candle_file(tmp_path / "nope.csv")


# -- issue 12: grid, row shape, close_time, NaT, booleans, wrapped reader errors -----------------


def test_off_grid_rows_are_rejected_for_the_interval(tmp_path):
    times = [t.isoformat() for t in _expected()["open_time"]]
    times[3] = times[3].replace(":00+00:00", ":30+00:00")  # 00:01:30 between two minute candles
    path = tmp_path / "half_minute.csv"
    _named("timestamp", times).to_csv(path, index=False)
    with pytest.raises(CandleValidationError, match=r"half_minute\.csv: row 3 .*'open_time': not on the 1m"):
        read_candle_file(path)
    minute_rows = tmp_path / "minutes.csv"
    _named("timestamp", [t.isoformat() for t in _expected()["open_time"]]).to_csv(minute_rows, index=False)
    with pytest.raises(CandleValidationError, match=r"row 0 .*not on the 1h interval grid"):
        read_candle_file(minute_rows, "1h")


@pytest.mark.parametrize("cut", range(1, 60))
def test_truncated_last_dump_line_is_rejected_at_every_cut(tmp_path, cut):
    lines = _dump_lines(1)
    lines[-1] = lines[-1][:-cut]  # the file ends inside its last line
    path = tmp_path / "cut.csv"
    path.write_text("\n".join(lines))  # no final newline, as a cut download
    with pytest.raises(CandleValidationError) as info:
        read_candle_file(path)
    assert info.value.source == str(path) and str(info.value.row).startswith("4")


def test_dump_close_time_must_match_open_time(tmp_path):
    path = _write(tmp_path / "close.csv", _bad_cell(_dump_lines(1), 2, 6, str(T0_MS + 3 * 60_000)))
    with pytest.raises(CandleValidationError) as info:
        read_candle_file(path)
    assert (info.value.field, str(info.value.row)) == ("close_time", "2 (line 3)")
    assert "open_time + 1m - 1 unit" in info.value.reason


def test_dump_with_extra_field_names_the_line(tmp_path):
    lines = _dump_lines(1)
    lines[2] += ",7"
    path = _write(tmp_path / "extra.csv", lines)
    with pytest.raises(
        CandleValidationError,
        match=r"extra\.csv: row 2 \(line 3\), field 'ignore': line has 13 fields; expected 12",
    ):
        read_candle_file(path)


def test_nat_open_time_in_parquet_names_file_and_row(tmp_path):
    times = _expected()["open_time"].copy()
    times.iloc[2] = pd.NaT
    path = tmp_path / "nat.parquet"
    _named("timestamp", list(times)).assign(timestamp=times.to_numpy()).to_parquet(path)
    with pytest.raises(CandleValidationError) as info:
        read_candle_file(path)
    assert info.value.source == str(path) and info.value.field == "open_time"
    assert str(info.value.row).startswith("2") and "NaT" in info.value.reason


@pytest.mark.parametrize("column", ["open", "volume"])
def test_boolean_price_or_volume_column_is_rejected(tmp_path, column):
    frame = _named("timestamp", list(_expected()["open_time"]))
    frame[column] = True
    path = tmp_path / "bool.parquet"
    frame.to_parquet(path)
    with pytest.raises(CandleValidationError, match=rf"bool\.parquet: row 0 .*'{column}': boolean"):
        read_candle_file(path)


def _gzip_cut(tmp_path: Path) -> Path:
    import gzip

    data = gzip.compress(("\n".join(_dump_lines(1)) + "\n").encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def _zip_two_members(tmp_path: Path) -> Path:
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.csv", "\n".join(_dump_lines(1)))
        archive.writestr("b.csv", "\n".join(_dump_lines(1)))
    return path


def _broken_parquet(tmp_path: Path) -> Path:
    path = tmp_path / "broken.parquet"
    _named("timestamp", list(_expected()["open_time"])).to_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    return path


def _undecodable(tmp_path: Path) -> Path:
    path = tmp_path / "latin1.csv"
    lines = _dump_lines(1)
    path.write_bytes(("\n".join(lines[:3]) + "\n").encode() + b"\xff\xfe,1\n")
    return path


def _unclosed_quote(tmp_path: Path) -> Path:
    path = tmp_path / "quote.csv"
    path.write_text('"timestamp,open,high,low,close,volume\n2024-12-31T23:58:00Z,1,2,0.5,1.5,3\n')
    return path


def _huge_epoch(tmp_path: Path) -> Path:
    return _write(tmp_path / "huge.csv", _bad_cell(_dump_lines(1), 1, 0, "100000000000000000000"))


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_gzip_cut, r"cut\.csv\.gz: .*expected a complete gzip-compressed CSV"),
        (
            _zip_two_members,
            r"two\.zip: 2 members \(a\.csv, b\.csv\); expected a zip archive with exactly one",
        ),
        (_broken_parquet, r"broken\.parquet: .*expected an Apache Parquet file"),
        (_undecodable, r"latin1\.csv: row - \(line 4\).*0xff .*not UTF-8 text"),
        (_unclosed_quote, r"quote\.csv: .*balanced quotes"),
        (_huge_epoch, r"huge\.csv: row 1 \(line 2\), field 'open_time': epoch value '100000000000000000000'"),
    ],
    ids=["corrupt_gz", "multi_member_zip", "broken_parquet", "undecodable", "unclosed_quote", "1e20_epoch"],
)
def test_reader_failures_name_the_file_and_what_was_expected(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(CandleValidationError, match=expected) as info:
        read_candle_file(path)
    assert info.value.source == str(path)


def test_trailing_comma_on_every_line_is_read_exactly(tmp_path):
    frame = _named("timestamp", [t.isoformat() for t in _expected()["open_time"]])
    path = tmp_path / "trailing.csv"
    path.write_text("\n".join(line + "," for line in frame.to_csv(index=False).splitlines()) + "\n")
    pd.testing.assert_frame_equal(read_candle_file(path), _expected())
    dump = _write(tmp_path / "trailing_dump.csv", [line + "," for line in _dump_lines(1)])
    pd.testing.assert_frame_equal(read_candle_file(dump), _expected())


def test_bom_is_accepted_and_wrong_delimiter_named(tmp_path):
    frame = _named("timestamp", [t.isoformat() for t in _expected()["open_time"]])
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + frame.to_csv(index=False).encode())
    pd.testing.assert_frame_equal(read_candle_file(bom), _expected())
    semicolon = tmp_path / "semicolon.csv"
    frame.to_csv(semicolon, index=False, sep=";")
    with pytest.raises(CandleValidationError, match=r"semicolon\.csv: row - \(line 1\).*wrong delimiter"):
        read_candle_file(semicolon)
