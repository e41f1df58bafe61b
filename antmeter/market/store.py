"""The market store: candles, articles, sentiment, predictions and their verification.

One code path for two databases (SQLAlchemy Core, no Dagster import):

* **SQLite** (default, a file): WAL journal, a busy timeout and ``synchronous=NORMAL`` are set on every
  connection; every write transaction starts with ``BEGIN IMMEDIATE`` (the driver's own implicit
  transactions are switched off), so a write is all-or-nothing even if the process is killed.
  Upserts are one ``INSERT ... ON CONFLICT DO UPDATE`` executemany.
* **PostgreSQL** (``postgresql+psycopg2://``; a bare ``postgresql://`` URL is rewritten to psycopg2):
  rows are sent with binary ``COPY`` into a temporary table (``ON COMMIT DROP``) on the same
  connection and transaction, then merged: stored rows whose values changed with
  ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``, new rows with a plain ``INSERT ... SELECT`` (falling
  back to ``ON CONFLICT DO UPDATE`` for the whole stage if a concurrent writer got there first; see
  :meth:`MarketStore._pg_copy_upsert`). ``migrate`` holds ``pg_advisory_xact_lock``.
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
from sqlalchemy.dialects import postgresql, sqlite

from antmeter.market.candles import CANDLE_COLUMNS, empty_candles, interval_timedelta, validate_candles

_UNIX_EPOCH = pd.Timestamp(0, tz="UTC")
_ONE_MICROSECOND = pd.Timedelta(microseconds=1)
_PG_EPOCH_OFFSET_US = 946_684_800_000_000  # 2000-01-01 (PostgreSQL's epoch) in Unix microseconds
_INT32 = np.iinfo(np.int32)
_SQLITE_BUSY_TIMEOUT_MS = 30_000
_MIGRATION_LOCK_KEY = 0x616E746D6574  # "antmet": the pg_advisory_xact_lock key for migrate()
_BEGIN_OPTION = "antmeter_sqlite_begin"
_PG_UNIQUE_VIOLATION = "23505"
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
        3, "annotations: labelled candle spans (human, corrections, model feedback)", _create_annotations
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
            utc = series.dt.tz_convert("UTC")
            sub_us = (utc.dt.nanosecond != 0).to_numpy() & ~null
            if sub_us.any():
                raise _bad(table, _first(sub_us), name, "sub-microsecond timestamps are not stored")
            values = utc.dt.tz_localize(None).dt.as_unit("us").to_numpy().view(np.int64)
        return _Values(kind, values, null)
    if kind is _Kind.TEXT:
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
    duplicated = pd.DataFrame({name: columns[name].values for name in key_names}).duplicated().to_numpy()
    if duplicated.any():
        i = _first(duplicated)
        key = ", ".join(f"{name}={frame[name].iloc[i]}" for name in key_names)
        raise ValueError(f"{table.name}: row {i}: duplicate primary key ({key}) within the frame")
    return columns


# ----------------------------------------------------------------------------------------------
# PostgreSQL binary COPY encoding (vectorised)


def _pg_field_bytes(col: _Values) -> tuple[np.ndarray, np.ndarray]:
    """Per-row field payloads as (lengths int64 with -1 for NULL, concatenated bytes as uint8)."""
    n = len(col.values)
    if col.kind is _Kind.TEXT:
        encoded = [t.encode("utf-8") for t in col.texts] + [b""]  # the last entry serves NULL rows
        text_lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        text_starts = np.cumsum(text_lengths) - text_lengths
        codes = np.where(col.null, len(encoded) - 1, col.values)
        lengths = text_lengths[codes]
        blob_starts = np.cumsum(lengths) - lengths
        gather = np.repeat(text_starts[codes] - blob_starts, lengths) + np.arange(int(lengths.sum()))
        blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)[gather]
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
        lengths = np.full(n, width, dtype=np.int64)
        blob = be[~col.null].view(np.uint8) if col.null.any() else be.view(np.uint8)
    lengths[col.null] = -1
    return lengths, blob


def encode_copy_binary(table: str, frame: pd.DataFrame) -> bytes:
    """Check ``frame`` against market table ``table`` and encode it, columns in table order, for
    ``COPY table FROM STDIN WITH (FORMAT binary)`` (PostgreSQL's documented binary COPY format)."""
    target = _table_or_raise(table)
    columns = _normalize(target, frame)
    return _encode_copy_binary([columns[c.name] for c in target.columns])


def _encode_copy_binary(columns: list[_Values]) -> bytes:
    n = len(columns[0].values) if columns else 0
    fields = [_pg_field_bytes(c) for c in columns]
    uniform = n > 0 and all(lengths[0] >= 0 and (lengths == lengths[0]).all() for lengths, _ in fields)
    body = _uniform_rows(fields, n) if uniform else _scattered_rows(fields, n)
    header = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
    return header + body + struct.pack(">h", -1)


def _uniform_rows(fields: list[tuple[np.ndarray, np.ndarray]], n: int) -> bytes:
    """Tuples that all share one layout (no NULLs, same byte length per field): one structured array."""
    layout: list[tuple[str, str]] = [("count", ">i2")]
    for i, (lengths, _) in enumerate(fields):
        layout += [(f"length{i}", ">i4")] + ([(f"value{i}", f"V{lengths[0]}")] if lengths[0] else [])
    rows = np.empty(n, dtype=np.dtype(layout))
    rows["count"] = len(fields)
    for i, (lengths, blob) in enumerate(fields):
        rows[f"length{i}"] = lengths[0]
        if lengths[0]:
            rows[f"value{i}"] = blob.view(f"V{lengths[0]}")
    return rows.tobytes()


def _scattered_rows(fields: list[tuple[np.ndarray, np.ndarray]], n: int) -> bytes:
    """Tuples of varying length (NULLs, text of different lengths): scatter each field into place."""
    row_lengths = 2 + sum(4 + np.maximum(lengths, 0) for lengths, _ in fields)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(row_lengths[:-1], out=starts[1:])
    out = np.empty(int(row_lengths.sum()) if n else 0, dtype=np.uint8)
    out[starts[:, None] + np.arange(2)] = np.frombuffer(struct.pack(">h", len(fields)), dtype=np.uint8)
    pos = starts + 2
    for lengths, blob in fields:
        out[pos[:, None] + np.arange(4)] = lengths.astype(">i4").view(np.uint8).reshape(n, 4)
        pos += 4
        sizes = np.maximum(lengths, 0)
        if blob.size:
            blob_starts = np.cumsum(sizes) - sizes
            out[np.repeat(pos - blob_starts, sizes) + np.arange(blob.size)] = blob
        pos += sizes
    return out.tobytes()


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
            self.engine = sa.create_engine(self.url, pool_pre_ping=True)
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

    def upsert_candles(self, symbol: str, interval: str, candles: pd.DataFrame, source: str) -> int:
        """Validate and upsert one symbol's candles in one transaction; returns the number of rows written."""
        interval_timedelta(interval)
        for name, value in (("symbol", symbol), ("source", source)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"ohlcv: {name} must be a non-empty string, got {value!r}")
        canonical = validate_candles(candles, source)
        frame = canonical.assign(
            symbol=symbol,
            interval=interval,
            source=source,
            ingested_at=pd.Timestamp.now(tz="UTC").floor("us"),
        )
        return self._upsert(OHLCV, _normalize(OHLCV, frame[[c.name for c in OHLCV.columns]]))

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
                interval_timedelta(interval)
                validate_candles(group, f"ohlcv {symbol} {interval}")
        return self._upsert(target, columns)

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
            rows = list(zip(*(c.python_list() for c in ordered), strict=True))
            sql = _sqlite_upsert_sql(table, self.engine.dialect)
            with self._writer.begin() as conn:
                conn.exec_driver_sql(sql, rows)
        else:
            payload = _encode_copy_binary(ordered)
            with self._writer.begin() as conn:
                self._pg_copy_upsert(conn, table, payload)
        return n

    @staticmethod
    def _pg_copy_upsert(conn: sa.Connection, table: sa.Table, payload: bytes) -> None:
        """Stage ``payload`` with binary COPY, then merge it into ``table`` (all in the caller's transaction).

        If some staged keys are stored already, those rows are merged with ``INSERT ... SELECT ... ON
        CONFLICT DO UPDATE`` (only rows whose values changed). The remaining rows, or all of them when no
        key is stored yet, go in with a plain ``INSERT ... SELECT``: about 2x faster than the speculative
        insertion that ON CONFLICT does for every new row. If a concurrent writer stores one of those keys
        in between, that insert fails with a unique violation, is rolled back to its savepoint, and the
        whole stage is merged with ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` instead.
        """
        quote = conn.dialect.identifier_preparer.quote
        stage = f"_stage_{table.name}"
        names = [c.name for c in table.columns]
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {quote(stage)} (LIKE {quote(table.name)}) ON COMMIT DROP"
        )
        with conn.connection.dbapi_connection.cursor() as cursor:
            copy = f"COPY {quote(stage)} ({', '.join(map(quote, names))}) FROM STDIN WITH (FORMAT binary)"
            cursor.copy_expert(copy, io.BytesIO(payload))
        for setting in _PG_MERGE_SETTINGS:
            conn.exec_driver_sql(setting)

        staged = sa.table(stage, *[sa.column(n) for n in names])
        stored = table.alias("stored")
        same_key = sa.and_(*[stored.c[c.name] == staged.c[c.name] for c in table.primary_key.columns])
        merge_all = _merge(
            postgresql.insert(table).from_select(names, sa.select(staged)), table, sa.func.least
        )
        new_rows = sa.select(staged)
        if conn.execute(
            sa.select(sa.exists(sa.select(1).select_from(staged).join(stored, same_key)))
        ).scalar():
            changed_rows = sa.select(staged).join(stored, same_key).where(_changed(table, stored.c, staged.c))
            conn.execute(
                _merge(postgresql.insert(table).from_select(names, changed_rows), table, sa.func.least)
            )
            new_rows = new_rows.where(~sa.exists().where(same_key))
        try:
            with conn.begin_nested():
                conn.execute(sa.insert(table).from_select(names, new_rows))
        except sa.exc.IntegrityError as error:
            if getattr(error.orig, "pgcode", None) != _PG_UNIQUE_VIOLATION:
                raise
            conn.execute(merge_all)


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


def _sqlite_upsert_sql(table: sa.Table, dialect: sa.Dialect) -> str:
    """The positional (qmark) executemany upsert for ``table``, with columns in table order."""
    insert = sqlite.insert(table)
    compiled = _merge(insert, table, sa.func.min).compile(dialect=dialect)
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
