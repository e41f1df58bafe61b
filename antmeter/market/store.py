"""The market store: candles, articles, sentiment, predictions and their verification.

One code path for two databases (SQLAlchemy Core, no Dagster import):

* **SQLite** (default, a file): WAL journal, a busy timeout and ``synchronous=NORMAL`` are set on every
  connection; every write transaction starts with ``BEGIN IMMEDIATE`` (the driver's own implicit
  transactions are switched off), so a write is all-or-nothing even if the process is killed.
  Upserts are one ``INSERT ... ON CONFLICT DO UPDATE`` executemany (a plain ``INSERT`` when no stored
  row lies in the frame's key box: the write lock is held, so they are all new).
* **PostgreSQL** (``postgresql+psycopg2://``; a bare ``postgresql://`` URL is rewritten to psycopg2):
  rows are encoded for binary ``COPY`` (a compiled loop) and, when no stored row lies in the frame's
  key box, copied straight into the table; otherwise into a temporary table (``ON COMMIT DROP``) on
  the same connection and transaction, one join counts new and changed rows, and only those are
  merged: changed ones with ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``, new ones with a plain
  ``INSERT ... SELECT`` (a concurrent writer that got there first turns either plain path into
  ``ON CONFLICT DO UPDATE`` for the whole stage; see :meth:`MarketStore._pg_copy_upsert`).
  ``migrate`` holds ``pg_advisory_xact_lock``.
  Reading needs PostgreSQL >= 14 (``EXTRACT(EPOCH ...)`` returns an exact numeric).

Values always travel as data (bind parameters or COPY), never inside SQL text.

Timestamps are timezone-aware UTC in and out (``datetime64[ns, UTC]`` columns on read) with
microsecond precision; a value with a sub-microsecond part is rejected rather than truncated.
PostgreSQL stores them as ``timestamptz``; SQLite stores them as **integer microseconds since the Unix
epoch** (:class:`UtcTimestamp`), which round-trips exactly and sorts like time.

Upserts are idempotent: the key is the table's primary key, the newest values win, and a row whose
values did not change is left untouched (for ``ohlcv`` this means ``ingested_at`` is the time the
stored values last changed). ``articles.first_seen_at`` only ever moves earlier.

The schema is owned by :data:`MIGRATIONS`, applied in order by :meth:`MarketStore.migrate` and recorded
in ``schema_version``.
"""

from __future__ import annotations

import contextlib
import enum
import io
import sqlite3
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from numba import njit
from psycopg2.errors import UniqueViolation
from sqlalchemy.dialects import postgresql, sqlite

from antmeter.market.candles import CANDLE_COLUMNS, empty_candles, interval_timedelta, validate_candles
from antmeter.market.symbols import validate_symbol

_UNIX_EPOCH = pd.Timestamp(0, tz="UTC")
_ONE_MICROSECOND = pd.Timedelta(microseconds=1)
_PG_EPOCH_OFFSET_US = 946_684_800_000_000  # 2000-01-01 (PostgreSQL's epoch) in Unix microseconds
_INT32 = np.iinfo(np.int32)
_SQLITE_BUSY_TIMEOUT_MS = 30_000
_MIGRATION_LOCK_KEY = 0x616E746D6574  # "antmet": the pg_advisory_xact_lock key for migrate()
_BEGIN_OPTION = "antmeter_sqlite_begin"
_PG_UNIQUE_VIOLATION = "23505"
_KEY_BOX_MAX_TEXTS = 64  # distinct values of a text key column listed in a key box (see _key_box)
# Server-side limits for every PostgreSQL session of the store: a writer that died mid-transaction
# (kill -9) releases its row locks within the idle timeout, a blocked writer gives up instead of queueing
# forever, and no statement runs unbounded.
PG_SESSION_TIMEOUTS = {
    "lock_timeout": "30s",
    "statement_timeout": "10min",
    "idle_in_transaction_session_timeout": "5s",
}
# SQLite: after a write of at least this many rows, checkpoint the WAL back into the database file and
# truncate it (otherwise it stays at the size of the largest write until the next checkpoint).
SQLITE_CHECKPOINT_ROWS = 50_000
# Planner settings for the merge statements (SET LOCAL: they end with the write transaction). The stage
# table has no statistics and a freshly vacuumed empty target reports 0 rows, which can make the planner
# pick a nested loop that seq-scans the target once per staged row (quadratic, minutes for 250k rows).
# With seq scans priced out the target is only ever reached through its primary-key index; JIT is off
# because that pricing inflates plan costs past the JIT thresholds (0.5 s of compiling per statement).
_PG_MERGE_SETTINGS = ("SET LOCAL enable_seqscan = off", "SET LOCAL jit = off", "SET LOCAL work_mem = '64MB'")


def _utc_timestamp(value: object, what: str) -> pd.Timestamp:
    """``value`` as a UTC ``pd.Timestamp``; raises for naive or sub-microsecond times."""
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        raise ValueError(f"{what}: timestamp {value!r} must be timezone-aware (UTC)")
    if ts.nanosecond:
        raise ValueError(f"{what}: timestamp {value!r} has sub-microsecond precision, which is not stored")
    return ts.tz_convert("UTC")


class UtcTimestamp(sa.types.TypeDecorator):
    """A timezone-aware UTC instant.

    PostgreSQL: ``timestamp with time zone``. SQLite: ``BIGINT`` microseconds since 1970-01-01 UTC,
    exact and correctly ordered. Binds ``datetime``/``pd.Timestamp`` (timezone-aware only) and
    returns ``pd.Timestamp`` in UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: object, dialect: sa.Dialect) -> object:
        if value is None:
            return None
        ts = _utc_timestamp(value, "bound parameter")
        if dialect.name == "sqlite":
            return (ts - _UNIX_EPOCH) // _ONE_MICROSECOND
        return ts.to_pydatetime()

    def process_result_value(self, value: object, dialect: sa.Dialect) -> pd.Timestamp | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return pd.Timestamp(value, unit="us", tz="UTC")
        return pd.Timestamp(value).tz_convert("UTC")


# ----------------------------------------------------------------------------------------------
# Schema (the current shape; MIGRATIONS below creates and evolves it)

METADATA = sa.MetaData()
_Float = sa.Double  # DOUBLE PRECISION in PostgreSQL, REAL (8-byte IEEE) in SQLite

OHLCV = sa.Table(
    "ohlcv",
    METADATA,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("interval", sa.Text, primary_key=True),
    sa.Column("open_time", UtcTimestamp, primary_key=True),
    sa.Column("open", _Float, nullable=False),
    sa.Column("high", _Float, nullable=False),
    sa.Column("low", _Float, nullable=False),
    sa.Column("close", _Float, nullable=False),
    sa.Column("volume", _Float, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("ingested_at", UtcTimestamp, nullable=False),
    info={"time_column": "open_time", "bookkeeping": ("ingested_at",)},
)

ARTICLES = sa.Table(
    "articles",
    METADATA,
    sa.Column("article_id", sa.Text, primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("published_at", UtcTimestamp, nullable=True),
    sa.Column("first_seen_at", UtcTimestamp, nullable=False),
    sa.Column("symbols", sa.Text, nullable=False),  # comma-separated
    sa.Column("simulated", sa.Boolean, nullable=False),
    sa.Column("sentiment", _Float, nullable=True),
    sa.Column("scorer", sa.Text, nullable=True),
    info={"time_column": "first_seen_at", "keep_earliest": ("first_seen_at",)},
)

SENTIMENT_HOURLY = sa.Table(
    "sentiment_hourly",
    METADATA,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("hour", UtcTimestamp, primary_key=True),
    sa.Column("mean_sentiment", _Float, nullable=False),
    sa.Column("article_count", sa.Integer, nullable=False),
    sa.Column("positive_share", _Float, nullable=False),
    sa.Column("negative_share", _Float, nullable=False),
    info={"time_column": "hour"},
)


def _prediction_key() -> list[sa.Column]:
    return [
        sa.Column("symbol", sa.Text, primary_key=True),
        sa.Column("prediction_time", UtcTimestamp, primary_key=True),
        sa.Column("horizon_min", sa.Integer, primary_key=True),
        sa.Column("model_name", sa.Text, primary_key=True),
        sa.Column("model_version", sa.Text, primary_key=True),
    ]


PREDICTIONS = sa.Table(
    "predictions",
    METADATA,
    *_prediction_key(),
    sa.Column("prob_down", _Float, nullable=True),
    sa.Column("prob_flat", _Float, nullable=True),
    sa.Column("prob_up", _Float, nullable=True),
    sa.Column("predicted_class", sa.Integer, nullable=False),
    sa.Column("confidence", _Float, nullable=False),
    sa.Column("predicted_return", _Float, nullable=False),
    sa.Column("created_at", UtcTimestamp, nullable=False),
    info={"time_column": "prediction_time"},
)

VERIFICATION = sa.Table(
    "verification",
    METADATA,
    *_prediction_key(),
    sa.Column("realized_return", _Float, nullable=False),
    sa.Column("realized_class", sa.Integer, nullable=False),
    sa.Column("correct", sa.Boolean, nullable=False),
    sa.Column("verified_at", UtcTimestamp, nullable=False),
    info={"time_column": "prediction_time"},
)

# Derived per symbol x day frames (features, labels) as Parquet bytes: the copy every machine reaches
# (the trainer reads these, not the edge box's local files). Not in MARKET_TABLES: opaque blobs.
PARTITION_FRAMES = sa.Table(
    "partition_frames",
    METADATA,
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("day", sa.Text, primary_key=True),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("parquet", sa.LargeBinary, nullable=False),
    sa.Column("written_at", UtcTimestamp, nullable=False),
)

# Span annotations of candles (antmeter.market.annotations): people's labels, corrections and the
# model's accepted/dismissed predictions. Keyed by span and source: the newest label of a source wins.
ANNOTATIONS = sa.Table(
    "annotations",
    METADATA,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("interval", sa.Text, primary_key=True),
    sa.Column("start_time", UtcTimestamp, primary_key=True),
    sa.Column("end_time", UtcTimestamp, primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("confidence", _Float, nullable=False),
    sa.Column("model_prediction", sa.Text, nullable=True),
    info={"time_column": "start_time"},
)

SCHEMA_VERSION = sa.Table(
    "schema_version",
    METADATA,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied_at", UtcTimestamp, nullable=False),
)

_V1_TABLES = (OHLCV, ARTICLES, SENTIMENT_HOURLY, PREDICTIONS, VERIFICATION)
MARKET_TABLES: dict[str, sa.Table] = {t.name: t for t in (*_V1_TABLES, ANNOTATIONS)}

# Secondary indexes for time-range reads and retention on tables whose key does not start with time
# (created by migration 2; CREATE TABLE in migration 1 does not emit indexes).
_TIME_INDEXES = tuple(
    sa.Index(f"ix_{table.name}_{table.info['time_column']}", table.c[table.info["time_column"]])
    for table in (ARTICLES, SENTIMENT_HOURLY, PREDICTIONS, VERIFICATION)
)


# ----------------------------------------------------------------------------------------------
# Migrations


@dataclass(frozen=True)
class Migration:
    """One ordered schema step; ``apply`` runs inside the migration transaction."""

    version: int
    description: str
    apply: Callable[[sa.Connection], None]


def _create_market_tables(conn: sa.Connection) -> None:
    for table in _V1_TABLES:
        conn.execute(sa.schema.CreateTable(table))


def _create_annotations(conn: sa.Connection) -> None:
    conn.execute(sa.schema.CreateTable(ANNOTATIONS))
    conn.execute(sa.schema.CreateIndex(sa.Index("ix_annotations_start_time", ANNOTATIONS.c.start_time)))


def _create_time_indexes(conn: sa.Connection) -> None:
    for index in _TIME_INDEXES:
        conn.execute(sa.schema.CreateIndex(index))


# Append-only: a released step is never edited; a schema change is a new step (and the Table above
# is updated to the resulting shape).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "market tables: ohlcv, articles, sentiment_hourly, predictions, verification",
        _create_market_tables,
    ),
    Migration(2, "time-column indexes for range reads and retention", _create_time_indexes),
    Migration(
        3,
        "partition_frames: features/labels per symbol x day as Parquet, shared by all machines",
        lambda conn: conn.execute(sa.schema.CreateTable(PARTITION_FRAMES)),
    ),
    Migration(
        4, "annotations: labelled candle spans (human, corrections, model feedback)", _create_annotations
    ),
)
LATEST_SCHEMA_VERSION = MIGRATIONS[-1].version


# ----------------------------------------------------------------------------------------------
# Frame normalisation: pandas columns -> typed numpy arrays (with row-named errors)


class _Kind(enum.Enum):
    TIME = "time"
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    TEXT = "text"


def _kind(column: sa.Column) -> _Kind:
    col_type = column.type
    if isinstance(col_type, UtcTimestamp):
        return _Kind.TIME
    if isinstance(col_type, sa.Boolean):
        return _Kind.BOOL
    if isinstance(col_type, sa.Integer):
        return _Kind.INT
    if isinstance(col_type, sa.Float):
        return _Kind.FLOAT
    return _Kind.TEXT


@dataclass(frozen=True)
class _Values:
    """One column ready to store. ``values``: TIME int64 Unix microseconds, FLOAT float64, INT int64,
    BOOL bool, TEXT int64 codes into ``texts`` (the distinct strings; -1 for NULL). ``null`` marks
    NULLs, whose slot in ``values`` is meaningless."""

    kind: _Kind
    values: np.ndarray
    null: np.ndarray
    texts: np.ndarray | None = None

    def python_list(self) -> list:
        """Plain Python values for the SQLite driver (None for NULL)."""
        if self.kind is _Kind.TEXT:
            if len(self.texts) == 1 and not self.null.any():
                return [self.texts[0]] * len(self.values)  # one value (a symbol, a source)
            return np.append(self.texts, None)[self.values].tolist()  # code -1 picks the appended None
        values = self.values.astype(np.int8) if self.kind is _Kind.BOOL else self.values
        if not self.null.any():
            return values.tolist()
        out = values.astype(object)
        out[self.null] = None
        return out.tolist()


def _bad(table: str, row: int, column: str, reason: str) -> ValueError:
    return ValueError(f"{table}: row {row}, column {column!r}: {reason}")


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _normalize_column(table: str, column: sa.Column, series: pd.Series) -> _Values:
    name, kind = column.name, _kind(column)
    null = series.isna().to_numpy()
    if null.any() and not column.nullable:
        raise _bad(table, _first(null), name, "NULL in a NOT NULL column")
    if kind is _Kind.TIME:
        if null.all():
            values = np.zeros(len(series), dtype=np.int64)
        elif not isinstance(series.dtype, pd.DatetimeTZDtype):
            raise ValueError(
                f"{table}: column {name!r} must hold timezone-aware datetimes, got dtype {series.dtype}"
            )
        else:
            instants = pd.DatetimeIndex(series)  # .asi8: ticks since the Unix epoch (UTC); NaT is int64 min
            if instants.unit == "ns":
                sub_us = (instants.asi8 % 1000 != 0) & ~null
                if sub_us.any():
                    raise _bad(table, _first(sub_us), name, "sub-microsecond timestamps are not stored")
                values = instants.asi8 // 1000
            else:
                values = instants.as_unit("us").asi8
        return _Values(kind, values, null)
    if kind is _Kind.TEXT:
        first = series.iloc[0] if len(series) else None
        if isinstance(first, str) and (series == first).all():  # one value (a symbol, a source): no hashing
            codes, distinct = np.zeros(len(series), dtype=np.int64), [first]
        else:
            codes, distinct = pd.factorize(series, use_na_sentinel=True)
        texts = np.asarray(distinct, dtype=object)
        not_str = np.fromiter((not isinstance(v, str) for v in texts), dtype=bool, count=len(texts))
        if not_str.any():
            bad = texts[_first(not_str)]
            i = _first(codes == _first(not_str))
            raise _bad(table, i, name, f"expected text, got {type(bad).__name__} {bad!r}")
        return _Values(kind, codes.astype(np.int64), null, texts)
    if kind is _Kind.BOOL:
        if pd.api.types.is_bool_dtype(series.dtype):
            values = series.to_numpy(dtype=bool, na_value=False)
        else:
            numeric = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            not_bool = ~np.isin(numeric, (0.0, 1.0)) & ~null
            if not_bool.any():
                raise _bad(
                    table,
                    _first(not_bool),
                    name,
                    f"expected a boolean, got {series.iloc[_first(not_bool)]!r}",
                )
            values = numeric == 1.0
        return _Values(kind, values, null)
    numeric = pd.to_numeric(series, errors="coerce")
    floats = numeric.to_numpy(dtype="float64", na_value=np.nan)
    not_number = np.isnan(floats) & ~null
    if not_number.any():
        raise _bad(table, _first(not_number), name, f"not a number: {series.iloc[_first(not_number)]!r}")
    infinite = np.isinf(floats)
    if infinite.any():
        raise _bad(table, _first(infinite), name, "infinite value")
    if kind is _Kind.FLOAT:
        return _Values(kind, floats, null)
    whole = np.where(null, 0.0, floats)
    not_int = (whole != np.round(whole)) | (whole < _INT32.min) | (whole > _INT32.max)
    if not_int.any():
        raise _bad(
            table, _first(not_int), name, f"expected a 32-bit integer, got {series.iloc[_first(not_int)]!r}"
        )
    return _Values(kind, whole.astype(np.int64), null)  # exact: integral and within the int32 range


def _table_or_raise(table: str) -> sa.Table:
    try:
        return MARKET_TABLES[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r}; expected one of {sorted(MARKET_TABLES)}") from None


def _normalize(table: sa.Table, frame: pd.DataFrame) -> dict[str, _Values]:
    """Check ``frame`` against ``table`` (columns, types, NULLs, duplicate keys) and convert it."""
    expected = [c.name for c in table.columns]
    unknown = [c for c in frame.columns if c not in expected]
    if unknown:
        raise ValueError(f"{table.name}: unknown column(s) {unknown}; expected {expected}")
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise ValueError(f"{table.name}: missing column(s) {missing}")
    if frame.columns.duplicated().any():
        raise ValueError(
            f"{table.name}: duplicated column(s) {sorted(set(frame.columns[frame.columns.duplicated()]))}"
        )
    columns = {
        c.name: _normalize_column(table.name, c, frame[c.name].reset_index(drop=True)) for c in table.columns
    }
    key_names = [c.name for c in table.primary_key.columns]
    duplicated = _duplicated_keys([columns[name] for name in key_names])
    if duplicated.any():
        i = _first(duplicated)
        key = ", ".join(f"{name}={frame[name].iloc[i]}" for name in key_names)
        raise ValueError(f"{table.name}: row {i}: duplicate primary key ({key}) within the frame")
    return columns


def _duplicated_keys(key: list[_Values]) -> np.ndarray:
    """Rows whose key repeats an earlier row's. Fast path (a candle partition): the key columns that
    hold one value drop out and the one left is strictly increasing."""
    varying = [c.values for c in key if not (c.kind is _Kind.TEXT and len(c.texts) == 1)]
    if len(varying) == 1 and (np.diff(varying[0]) > 0).all():
        return np.zeros(len(varying[0]), dtype=bool)
    return pd.DataFrame({i: c.values for i, c in enumerate(key)}).duplicated().to_numpy()


# ----------------------------------------------------------------------------------------------
# PostgreSQL binary COPY encoding (vectorised)


def _pg_field_bytes(col: _Values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each row's field payload lies: (lengths int32 with -1 for NULL, starts int64 into the
    bytes, the bytes as uint8). Fixed-width values are their big-endian array; texts point into the
    concatenation of their distinct encoded strings."""
    n = len(col.values)
    if col.kind is _Kind.TEXT:
        encoded = [t.encode("utf-8") for t in col.texts] + [b""]  # the last entry serves NULL rows
        text_lengths = np.fromiter(map(len, encoded), dtype=np.int32, count=len(encoded))
        text_starts = np.cumsum(text_lengths, dtype=np.int64) - text_lengths
        codes = np.where(col.null, len(encoded) - 1, col.values)
        lengths, starts = text_lengths[codes], text_starts[codes]
        blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    else:
        if col.kind is _Kind.TIME:
            be = (col.values - _PG_EPOCH_OFFSET_US).astype(">i8")
        elif col.kind is _Kind.FLOAT:
            be = col.values.astype(">f8")
        elif col.kind is _Kind.INT:
            be = col.values.astype(">i4")
        else:
            be = col.values.astype(np.uint8)
        width = be.dtype.itemsize
        lengths = np.full(n, width, dtype=np.int32)
        starts = np.arange(0, n * width, width, dtype=np.int64)
        blob = be.view(np.uint8)
    lengths[col.null] = -1
    return lengths, starts, blob


def encode_copy_binary(table: str, frame: pd.DataFrame) -> bytes:
    """Check ``frame`` against market table ``table`` and encode it, columns in table order, for
    ``COPY table FROM STDIN WITH (FORMAT binary)`` (PostgreSQL's documented binary COPY format)."""
    target = _table_or_raise(table)
    columns = _normalize(target, frame)
    return _encode_copy_binary([columns[c.name] for c in target.columns])


def _encode_copy_binary(columns: list[_Values]) -> bytes:
    n = len(columns[0].values) if columns else 0
    fields = [_pg_field_bytes(c) for c in columns]
    blob = np.concatenate([f[2] for f in fields]) if fields else np.empty(0, dtype=np.uint8)
    bases = np.cumsum([0] + [f[2].size for f in fields[:-1]], dtype=np.int64)
    lengths = np.stack([f[0] for f in fields]) if fields else np.empty((0, n), dtype=np.int32)
    starts = np.stack([f[1] + base for f, base in zip(fields, bases, strict=True)]) if fields else lengths
    header = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
    trailer = struct.pack(">h", -1)
    tuples_size = n * (2 + 4 * len(fields)) + int(np.maximum(lengths, 0).sum())
    out = np.empty(len(header) + tuples_size + len(trailer), dtype=np.uint8)
    out[: len(header)] = np.frombuffer(header, dtype=np.uint8)
    out[len(out) - len(trailer) :] = np.frombuffer(trailer, dtype=np.uint8)
    _write_copy_tuples(lengths, starts, blob, out[len(header) : len(out) - len(trailer)])
    return out.tobytes()


@njit(cache=True, nogil=True)
def _write_copy_tuples(lengths: np.ndarray, starts: np.ndarray, blob: np.ndarray, out: np.ndarray) -> None:
    """Binary COPY tuples into ``out``: per row the field count (int16), then per field its length
    (int32, -1 for NULL) and ``lengths[f, row]`` bytes of ``blob`` from ``starts[f, row]``."""
    fields, rows = lengths.shape
    pos = 0
    for row in range(rows):
        out[pos] = (fields >> 8) & 0xFF
        out[pos + 1] = fields & 0xFF
        pos += 2
        for f in range(fields):
            length = lengths[f, row]
            word = np.uint32(length)
            out[pos] = (word >> 24) & 0xFF
            out[pos + 1] = (word >> 16) & 0xFF
            out[pos + 2] = (word >> 8) & 0xFF
            out[pos + 3] = word & 0xFF
            pos += 4
            start = starts[f, row]
            for j in range(length):  # no iterations for NULL (-1)
                out[pos + j] = blob[start + j]
            pos += max(length, 0)


# ----------------------------------------------------------------------------------------------
# The store


def _engine_url(url: str) -> sa.URL:
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg2")
    if parsed.drivername in ("postgresql+psycopg2", "sqlite", "sqlite+pysqlite"):
        return parsed
    raise ValueError(
        f"unsupported market store URL driver {parsed.drivername!r}: use sqlite:///path or postgresql+psycopg2://..."
    )


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record) -> None:
    dbapi_connection.isolation_level = None  # the driver's implicit transactions off: we emit BEGIN ourselves
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
    _enable_wal(cursor)
    cursor.execute("PRAGMA synchronous = NORMAL")  # in WAL mode: atomic and consistent, fsync at checkpoints
    cursor.close()


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Switch the file to WAL (persistent, so a no-op after the first time).

    Switching needs an exclusive lock and SQLite answers "database is locked" at once, without the busy
    handler, while another connection is creating the same new file; so retry until the busy timeout.
    """
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_MS / 1000
    while (mode := cursor.execute("PRAGMA journal_mode").fetchone()[0]) not in ("wal", "memory"):
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError(
                f"could not switch the SQLite file to WAL (journal_mode is {mode})"
            )
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error):
                raise
            time.sleep(0.01)


def _pg_session_options() -> str:
    """libpq ``options`` that set :data:`PG_SESSION_TIMEOUTS` on each new session."""
    return " ".join(f"-c {name}={value}" for name, value in PG_SESSION_TIMEOUTS.items())


def _on_sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get(_BEGIN_OPTION, 'DEFERRED')}")


def _tz_aware(value: object, what: str) -> pd.Timestamp | None:
    return None if value is None else _utc_timestamp(value, what)


class MarketStore:
    """Market data in SQLite (a file) or PostgreSQL, behind one API. Call :meth:`migrate` once first."""

    def __init__(self, url: str):
        self.url = _engine_url(url)
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite":
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: sa.Engine = sa.create_engine(self.url)
            sa.event.listen(self.engine, "connect", _on_sqlite_connect)
            sa.event.listen(self.engine, "begin", _on_sqlite_begin)
        else:
            self.engine = sa.create_engine(
                self.url, pool_pre_ping=True, connect_args={"options": _pg_session_options()}
            )
        self._writer = self.engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        self._schema_checked = False

    def __repr__(self) -> str:
        return f"MarketStore({self.url.render_as_string(hide_password=True)!r})"

    # -- schema ----------------------------------------------------------------------------------

    def migrate(self, target_version: int | None = None) -> int:
        """Apply the missing :data:`MIGRATIONS` steps (up to ``target_version``) in one transaction.

        Idempotent, and serialised between processes (PostgreSQL advisory lock; SQLite write lock).
        Returns the schema version afterwards.
        """
        target = LATEST_SCHEMA_VERSION if target_version is None else target_version
        if not 0 <= target <= LATEST_SCHEMA_VERSION:
            raise ValueError(f"target_version must be in [0, {LATEST_SCHEMA_VERSION}], got {target}")
        with self._writer.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
            SCHEMA_VERSION.create(conn, checkfirst=True)
            version = self._current_version(conn)
            if version > LATEST_SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self!r}: schema version {version} is newer than this code knows ({LATEST_SCHEMA_VERSION})"
                )
            for step in MIGRATIONS:
                if version < step.version <= target:
                    step.apply(conn)
                    conn.execute(
                        sa.insert(SCHEMA_VERSION).values(
                            version=step.version,
                            description=step.description,
                            applied_at=pd.Timestamp.now(tz="UTC"),
                        )
                    )
                    version = step.version
        return version

    def schema_version(self) -> int:
        """The schema version recorded in the database (0 for an empty database)."""
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(SCHEMA_VERSION.name):
                return 0
            return self._current_version(conn)

    @staticmethod
    def _current_version(conn: sa.Connection) -> int:
        return conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(SCHEMA_VERSION.c.version), 0))
        ).scalar_one()

    def _require_schema(self) -> None:
        if self._schema_checked:
            return
        version = self.schema_version()
        if version != LATEST_SCHEMA_VERSION:
            raise RuntimeError(
                f"{self!r} is at schema version {version}, this code needs {LATEST_SCHEMA_VERSION}: "
                "call MarketStore.migrate() first"
            )
        self._schema_checked = True

    # -- candles ---------------------------------------------------------------------------------

    def upsert_candles(
        self,
        symbol: str,
        interval: str,
        candles: pd.DataFrame,
        source: str,
        *,
        now: pd.Timestamp | None = None,
    ) -> int:
        """Validate and upsert one symbol's candles in one transaction; returns the number of rows written.

        ``now``: the pipeline's clock the candle contract checks open times against (default: the wall
        clock; a replay's simulated clock may run ahead of it)."""
        interval_timedelta(interval)
        validate_symbol(symbol, "ohlcv: symbol")
        if not isinstance(source, str) or not source:
            raise ValueError(f"ohlcv: source must be a non-empty string, got {source!r}")
        canonical = validate_candles(candles, source, interval, now=now)
        frame = canonical.assign(
            symbol=symbol,
            interval=interval,
            source=source,
            ingested_at=pd.Timestamp.now(tz="UTC").floor("us"),
        )
        written = self._upsert(OHLCV, _normalize(OHLCV, frame[[c.name for c in OHLCV.columns]]))
        self._checkpoint_after(written)
        return written

    def read_candles(
        self,
        symbol: str,
        interval: str = "1m",
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """The canonical candle frame of ``symbol`` for open times in ``[start, end)``, sorted."""
        interval_timedelta(interval)
        frame = self._select(OHLCV, CANDLE_COLUMNS, {"symbol": symbol, "interval": interval}, (start, end))
        return frame if len(frame) else empty_candles()

    def candle_stats(self, symbol: str, interval: str, start=None, end=None) -> dict:
        """``{"rows", "first_open_time", "last_open_time"}`` for open times in ``[start, end)``."""
        self._require_schema()
        open_time = OHLCV.c.open_time
        stmt = sa.select(sa.func.count(), sa.func.min(open_time), sa.func.max(open_time)).where(
            *self._conditions(OHLCV, {"symbol": symbol, "interval": interval}, (start, end))
        )
        with self.engine.connect() as conn:
            rows, first, last = conn.execute(stmt).one()
        return {"rows": int(rows), "first_open_time": first, "last_open_time": last}

    def symbols(self) -> list[str]:
        """Symbols that have candles, sorted."""
        self._require_schema()
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(OHLCV.c.symbol).distinct().order_by(OHLCV.c.symbol)).scalars())

    # -- generic tables --------------------------------------------------------------------------

    def upsert_frame(self, table: str, frame: pd.DataFrame) -> int:
        """Idempotently upsert ``frame`` (exactly the table's columns) by primary key, in one transaction.

        ``ohlcv`` frames are also checked with :func:`validate_candles` per (symbol, interval).
        Returns the number of rows written.
        """
        target = _table_or_raise(table)
        columns = _normalize(target, frame)
        if target is OHLCV:
            for (symbol, interval), group in frame.groupby(["symbol", "interval"], sort=False):
                validate_symbol(symbol, "ohlcv: symbol")
                validate_candles(group, f"ohlcv {symbol} {interval}", interval)
        written = self._upsert(target, columns)
        self._checkpoint_after(written)
        return written

    def _checkpoint_after(self, written: int) -> None:
        """SQLite: checkpoint and truncate the WAL after a large write (see :data:`SQLITE_CHECKPOINT_ROWS`).

        Best effort: with readers still on old snapshots SQLite checkpoints what it can and the next
        large write tries again."""
        if self.dialect != "sqlite" or written < SQLITE_CHECKPOINT_ROWS:
            return
        connection = self.engine.raw_connection()  # outside any transaction (the driver autocommits)
        try:
            connection.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            connection.close()

    def read_frame(
        self,
        table: str,
        filters: dict[str, object] | None = None,
        time_range: tuple[pd.Timestamp | None, pd.Timestamp | None] | None = None,
    ) -> pd.DataFrame:
        """Rows of ``table`` matching ``filters`` (column == value, or IN for a list/tuple/set) whose time
        column lies in ``[start, end)``, sorted by primary key."""
        target = _table_or_raise(table)
        return self._select(target, [c.name for c in target.columns], filters or {}, time_range)

    def delete_older_than(self, table: str, cutoff: pd.Timestamp) -> int:
        """Delete rows whose time column is before ``cutoff``; returns how many were deleted."""
        target = _table_or_raise(table)
        self._require_schema()
        cutoff = _utc_timestamp(cutoff, f"{table}: cutoff")
        with self._writer.begin() as conn:
            return conn.execute(
                sa.delete(target).where(target.c[target.info["time_column"]] < cutoff)
            ).rowcount

    # -- derived partition frames ----------------------------------------------------------------

    def put_partition_frame(self, kind: str, symbol: str, day: str, frame: pd.DataFrame) -> int:
        """Store ``frame`` as the (kind, symbol, day) partition, replacing any previous one, in one
        transaction; returns its row count."""
        for name, value in (("kind", kind), ("symbol", symbol), ("day", day)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"partition_frames: {name} must be a non-empty string, got {value!r}")
        self._require_schema()
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        key = (
            (PARTITION_FRAMES.c.kind == kind)
            & (PARTITION_FRAMES.c.symbol == symbol)
            & (PARTITION_FRAMES.c.day == day)
        )
        with self._writer.begin() as conn:
            conn.execute(sa.delete(PARTITION_FRAMES).where(key))
            conn.execute(
                sa.insert(PARTITION_FRAMES).values(
                    kind=kind,
                    symbol=symbol,
                    day=day,
                    rows=len(frame),
                    parquet=buffer.getvalue(),
                    written_at=pd.Timestamp.now(tz="UTC"),
                )
            )
        return len(frame)

    def read_partition_frame(self, kind: str, symbol: str, day: str) -> pd.DataFrame:
        """The stored (kind, symbol, day) frame; a clear KeyError naming it when there is none."""
        self._require_schema()
        with self.engine.connect() as conn:
            blob = conn.execute(
                sa.select(PARTITION_FRAMES.c.parquet).where(
                    (PARTITION_FRAMES.c.kind == kind)
                    & (PARTITION_FRAMES.c.symbol == symbol)
                    & (PARTITION_FRAMES.c.day == day)
                )
            ).scalar_one_or_none()
        if blob is None:
            raise KeyError(f"{self!r}: no {kind} partition for {symbol} {day} (materialize {kind} first)")
        return pd.read_parquet(io.BytesIO(blob))

    def partition_frame_days(self, kind: str, symbol: str) -> list[str]:
        """Days with a stored (kind, symbol) frame, sorted."""
        self._require_schema()
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(PARTITION_FRAMES.c.day)
                    .where((PARTITION_FRAMES.c.kind == kind) & (PARTITION_FRAMES.c.symbol == symbol))
                    .order_by(PARTITION_FRAMES.c.day)
                ).scalars()
            )

    # -- internals -------------------------------------------------------------------------------

    def _conditions(self, table: sa.Table, filters: dict[str, object], time_range) -> list[sa.ColumnElement]:
        conditions = []
        for name, value in filters.items():
            if name not in table.c:
                raise ValueError(f"{table.name}: unknown filter column {name!r}")
            column = table.c[name]
            multiple = isinstance(value, list | tuple | set | frozenset)
            conditions.append(column.in_(list(value)) if multiple else column == value)
        start, end = time_range if time_range is not None else (None, None)
        time_column = table.c[table.info["time_column"]]
        if (start := _tz_aware(start, f"{table.name}: start")) is not None:
            conditions.append(time_column >= start)
        if (end := _tz_aware(end, f"{table.name}: end")) is not None:
            conditions.append(time_column < end)
        return conditions

    def _raw_column(self, column: sa.Column) -> sa.ColumnElement:
        """``column`` as the driver's plain value; timestamps as integer Unix microseconds."""
        if _kind(column) is not _Kind.TIME:
            return column
        if self.dialect == "sqlite":
            return sa.type_coerce(column, sa.BigInteger).label(column.name)
        return sa.cast(sa.extract("epoch", column) * 1_000_000, sa.BigInteger).label(column.name)

    def _select(
        self, table: sa.Table, names: list[str], filters: dict[str, object], time_range
    ) -> pd.DataFrame:
        self._require_schema()
        columns = [table.c[n] for n in names]
        stmt = (
            sa.select(*[self._raw_column(c) for c in columns])
            .where(*self._conditions(table, filters, time_range))
            .order_by(*table.primary_key.columns)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        values = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
        return pd.DataFrame({c.name: _column_from_db(c, v) for c, v in zip(columns, values, strict=True)})

    def _upsert(self, table: sa.Table, columns: dict[str, _Values]) -> int:
        self._require_schema()
        n = len(next(iter(columns.values())).values)
        if n == 0:
            return 0
        ordered = [columns[c.name] for c in table.columns]
        if self.dialect == "sqlite":
            # Row tuples are made one at a time as the driver binds them (no list of a million tuples for
            # the garbage collector to scan over and over).
            rows = zip(*(c.python_list() for c in ordered), strict=True)
            with self._writer.begin() as conn:
                # BEGIN IMMEDIATE holds the write lock, so no other writer can add a key until commit:
                # with no stored row in the frame's key box every row is new and a plain INSERT suffices.
                fresh = not _any_stored_in_key_box(conn, table, columns)
                cursor = conn.connection.dbapi_connection.cursor()
                try:
                    cursor.executemany(_sqlite_write_sql(table, self.engine.dialect, fresh), rows)
                finally:
                    cursor.close()
        else:
            with self._writer.begin() as conn:
                self._pg_copy_upsert(conn, table, columns)
        return n

    @staticmethod
    def _pg_copy_upsert(conn: sa.Connection, table: sa.Table, columns: dict[str, _Values]) -> None:
        """Upsert the rows ``columns`` with binary COPY, in the caller's transaction.

        * No stored row in the frame's key box (:func:`_key_box`, a superset of its keys; a first load
          or a new partition): the rows are copied straight into ``table``.
        * Otherwise they are copied into a temporary stage table and one join against the stored rows
          counts the new keys and the changed rows. Rows equal to the stored ones are never rewritten
          (a re-upsert of unchanged data writes nothing). Changed rows are merged with ``INSERT ...
          SELECT ... ON CONFLICT DO UPDATE``, new ones go in with a plain ``INSERT ... SELECT`` (about
          2x faster than the speculative insertion that ON CONFLICT does for every new row).

        A concurrent writer that stores one of the new keys in between (after the box check or the
        count) makes the COPY or the plain insert fail with a unique violation; that step is rolled
        back to its savepoint and the whole stage is merged with ``ON CONFLICT DO UPDATE`` instead.
        """
        quote = conn.dialect.identifier_preparer.quote
        names = [c.name for c in table.columns]
        payload = _encode_copy_binary([columns[name] for name in names])
        column_list = ", ".join(map(quote, names))

        def copy_into(name: str) -> None:
            with conn.connection.dbapi_connection.cursor() as cursor:
                copy = f"COPY {quote(name)} ({column_list}) FROM STDIN WITH (FORMAT binary)"
                cursor.copy_expert(copy, io.BytesIO(payload))

        if not _any_stored_in_key_box(conn, table, columns):
            with contextlib.suppress(UniqueViolation):
                with conn.begin_nested():
                    copy_into(table.name)
                return

        stage = f"_stage_{table.name}"
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {quote(stage)} (LIKE {quote(table.name)}) ON COMMIT DROP"
        )
        copy_into(stage)
        for setting in _PG_MERGE_SETTINGS:
            conn.exec_driver_sql(setting)

        staged = sa.table(stage, *[sa.column(n) for n in names])
        stored = table.alias("stored")
        key = list(table.primary_key.columns)
        same_key = sa.and_(*[stored.c[c.name] == staged.c[c.name] for c in key])
        # The box conditions are implied by same_key; they narrow the scan of the stored rows.
        stored_in_box = _key_box(table, stored, columns)
        is_new = stored.c[key[0].name].is_(None)
        new_count, changed_count = conn.execute(
            sa.select(
                sa.func.count().filter(is_new),
                sa.func.count().filter(sa.and_(~is_new, _changed(table, stored.c, staged.c))),
            ).select_from(staged.outerjoin(stored, sa.and_(same_key, *stored_in_box)))
        ).one()
        merge_all = _merge(
            postgresql.insert(table).from_select(names, sa.select(staged)), table, sa.func.least
        )
        if changed_count:
            changed_rows = sa.select(staged).join(stored, same_key).where(_changed(table, stored.c, staged.c))
            conn.execute(
                _merge(postgresql.insert(table).from_select(names, changed_rows), table, sa.func.least)
            )
        if not new_count:
            return
        new_rows = sa.select(staged).where(~sa.exists().where(same_key, *stored_in_box))
        try:
            with conn.begin_nested():
                conn.execute(sa.insert(table).from_select(names, new_rows))
        except sa.exc.IntegrityError as error:
            if getattr(error.orig, "pgcode", None) != _PG_UNIQUE_VIOLATION:
                raise
            conn.execute(merge_all)


def _any_stored_in_key_box(conn: sa.Connection, table: sa.Table, columns: dict[str, _Values]) -> bool:
    """Whether ``table`` holds a row in the key box of the frame ``columns`` (see :func:`_key_box`)."""
    stored = sa.select(sa.literal(1)).select_from(table).where(*_key_box(table, table, columns))
    return bool(conn.execute(sa.select(sa.exists(stored))).scalar())


def _key_box(
    table: sa.Table, source: sa.FromClause, columns: dict[str, _Values]
) -> list[sa.ColumnElement[bool]]:
    """Conditions on ``source`` (``table`` or an alias of it) that every key of the frame ``columns``
    satisfies, so a box without stored rows means none of the keys is stored: each time or integer key
    column between its smallest and largest value, each text key column in its distinct values (when
    there are at most ``_KEY_BOX_MAX_TEXTS``; else unconstrained)."""
    conditions = []
    for key_column in table.primary_key.columns:
        column, values = source.c[key_column.name], columns[key_column.name]
        if values.kind is _Kind.TEXT:
            if len(values.texts) <= _KEY_BOX_MAX_TEXTS:
                conditions.append(column.in_(values.texts.tolist()))
        elif values.kind is _Kind.TIME:
            low, high = (
                pd.Timestamp(v, unit="us", tz="UTC") for v in (values.values.min(), values.values.max())
            )
            conditions.append(column.between(low, high))
        elif values.kind is _Kind.INT:
            conditions.append(column.between(int(values.values.min()), int(values.values.max())))
    return conditions


def _changed(table: sa.Table, stored, new) -> sa.ColumnElement[bool]:
    """True where ``new`` would change the stored row: a value differs (NULL-safe), ignoring bookkeeping
    columns (``ohlcv.ingested_at``), or a keep-earliest column (``articles.first_seen_at``) is earlier."""
    keep_earliest = table.info.get("keep_earliest", ())
    bookkeeping = table.info.get("bookkeeping", ())
    return sa.or_(
        *[
            new[c.name] < stored[c.name]
            if c.name in keep_earliest
            else stored[c.name].is_distinct_from(new[c.name])
            for c in table.columns
            if not c.primary_key and c.name not in bookkeeping
        ]
    )


def _merge(insert, table: sa.Table, earliest: Callable[..., sa.ColumnElement]):
    """``ON CONFLICT (key) DO UPDATE`` that rewrites a stored row only when :func:`_changed`; the newest
    values win, except keep-earliest columns, which take ``earliest(stored, new)``."""
    excluded = insert.excluded
    keep_earliest = table.info.get("keep_earliest", ())
    set_ = {
        c.name: earliest(c, excluded[c.name]) if c.name in keep_earliest else excluded[c.name]
        for c in table.columns
        if not c.primary_key
    }
    return insert.on_conflict_do_update(
        index_elements=list(table.primary_key.columns), set_=set_, where=_changed(table, table.c, excluded)
    )


def _sqlite_write_sql(table: sa.Table, dialect: sa.Dialect, fresh: bool) -> str:
    """The positional (qmark) executemany statement for ``table``, with columns in table order: the
    upsert, or a plain ``INSERT`` when every row is known to be ``fresh`` (no stored key)."""
    insert = sqlite.insert(table)
    compiled = (insert if fresh else _merge(insert, table, sa.func.min)).compile(dialect=dialect)
    if list(compiled.positiontup or []) != [c.name for c in table.columns]:
        raise AssertionError(f"unexpected bind order for {table.name}: {compiled.positiontup}")
    return str(compiled)


def _column_from_db(column: sa.Column, values: tuple) -> pd.Series:
    kind = _kind(column)
    if kind is _Kind.TIME:
        micros = pd.array(values, dtype="Int64")
        return pd.Series(pd.to_datetime(micros, unit="us", utc=True), dtype="datetime64[ns, UTC]")
    if kind is _Kind.FLOAT:
        return pd.Series(np.array(values, dtype=np.float64))
    if kind is _Kind.INT:
        return pd.Series(np.array(values, dtype=np.int64))
    if kind is _Kind.BOOL:
        return pd.Series(np.array(values, dtype=bool))
    return pd.Series(list(values), dtype="str")
