"""Benchmark: MarketStore candle upserts vs a raw bulk load on the same database, in the same run.

1,000,000 synthetic one-minute candles (4 symbols x 250,000) are written with
``MarketStore.upsert_candles`` (one call per symbol, each its own transaction), then written again
(the idempotent second pass must leave the row count unchanged). The reference is a raw bulk load of
the same rows into an equivalent empty table (same columns and primary key) on the same database:

* PostgreSQL: one binary ``COPY ... FROM STDIN`` (psycopg2 ``copy_expert``) into ``ohlcv_raw``; a fresh
  database is created and dropped (admin URL from ``ANTMETER_BENCH_PG_ADMIN_URL``).
* SQLite (temporary file, same PRAGMAs): one plain ``executemany`` INSERT, no conflict handling.

The reference times only the load itself (payload or row tuples prepared beforehand; the preparation is
reported separately), while the store is timed end to end from DataFrames (validation, conversion,
staging, upsert, commit). The compiled COPY encoder is loaded (one small encode) before anything is
timed. Goals: both passes >= 0.6x the raw load on PostgreSQL, >= 0.9x on SQLite. Prints rows/s and
ratios (and the load averages: the machine is shared); the last line is one JSON object.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from antmeter.market.store import OHLCV, MarketStore, encode_copy_binary

ROWS_PER_SYMBOL = 250_000
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
REPEATS = 2  # best of 2 per measurement; tables emptied (and, in PostgreSQL, vacuumed + checkpointed) first
ADMIN_URL = os.environ.get(
    "ANTMETER_BENCH_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def synthetic_candles(seed: int) -> pd.DataFrame:
    """A random-walk candle frame of ``ROWS_PER_SYMBOL`` minutes."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, ROWS_PER_SYMBOL)))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0.0, 5e-4, ROWS_PER_SYMBOL)) * close
    return pd.DataFrame(
        {
            "open_time": pd.date_range("2023-01-01", periods=ROWS_PER_SYMBOL, freq="min", tz="UTC"),
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.exponential(10.0, ROWS_PER_SYMBOL),
        }
    )


def full_rows(candles: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """All candles as ``ohlcv`` table rows (what the raw reference loads)."""
    now = pd.Timestamp.now(tz="UTC").floor("us")
    frames = [c.assign(symbol=s, interval="1m", source="bench", ingested_at=now) for s, c in candles.items()]
    return pd.concat(frames, ignore_index=True)[[c.name for c in OHLCV.columns]]


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def store_passes(store: MarketStore, candles: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Time the first upsert pass (empty table) and the idempotent second pass; check the row count."""
    total = ROWS_PER_SYMBOL * len(candles)
    result = {}
    for name in ("first_pass", "second_pass"):
        seconds = timed(
            lambda: [store.upsert_candles(s, "1m", c, source="bench") for s, c in candles.items()]
        )
        with store.engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(OHLCV)).scalar_one()
        assert count == total, f"{name}: expected {total} rows, found {count}"
        result[f"store_{name}_s"] = seconds
    return result


def best_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """The fastest time of each measurement over the repeats (the machine is shared and noisy)."""
    return {key: min(run[key] for run in runs) for key in runs[0]}


def raw_table(store: MarketStore) -> sa.Table:
    """An empty table equivalent to ``ohlcv`` (same columns and primary key) named ``ohlcv_raw``."""
    table = OHLCV.to_metadata(sa.MetaData(), name="ohlcv_raw")
    with store.engine.begin() as conn:
        table.create(conn)
    return table


def empty_tables(store: MarketStore, raw: sa.Table) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.delete(OHLCV))
        conn.execute(sa.delete(raw))
    if store.dialect == "postgresql":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ohlcv, ohlcv_raw")
            conn.exec_driver_sql("CHECKPOINT")


def bench_postgresql(candles: dict[str, pd.DataFrame], rows: pd.DataFrame) -> dict[str, float]:
    database = f"antmeter_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    try:
        store = MarketStore(
            sa.make_url(ADMIN_URL).set(database=database).render_as_string(hide_password=False)
        )
        store.migrate()
        raw = raw_table(store)
        payload: list[bytes] = []
        encode_s = timed(lambda: payload.append(encode_copy_binary("ohlcv", rows)))

        def raw_copy() -> None:
            with store.engine.begin() as conn, conn.connection.dbapi_connection.cursor() as cursor:
                cursor.copy_expert(f"COPY {raw.name} FROM STDIN WITH (FORMAT binary)", io.BytesIO(payload[0]))

        runs = []
        for _ in range(REPEATS):
            empty_tables(store, raw)
            runs.append({"raw_load_s": timed(raw_copy), **store_passes(store, candles)})
        store.engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
    return {**_figures(len(rows), best_of(runs), encode_s), "reference": "binary COPY into ohlcv_raw"}


def bench_sqlite(candles: dict[str, pd.DataFrame], rows: pd.DataFrame) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        store = MarketStore(f"sqlite:///{Path(directory) / 'bench.sqlite'}")
        store.migrate()
        raw = raw_table(store)
        tuples: list[list[tuple]] = []

        def to_tuples() -> None:
            micros = {c: rows[c].dt.as_unit("us").astype("int64") for c in ("open_time", "ingested_at")}
            columns = [micros[c.name] if c.name in micros else rows[c.name] for c in raw.columns]
            tuples.append(list(zip(*(column.tolist() for column in columns), strict=True)))

        prepare_s = timed(to_tuples)
        insert = f"INSERT INTO {raw.name} VALUES ({', '.join('?' * len(raw.columns))})"

        def raw_insert() -> None:
            with store.engine.begin() as conn:
                conn.exec_driver_sql(insert, tuples[0])

        runs = []
        for _ in range(REPEATS):
            empty_tables(store, raw)
            runs.append({"raw_load_s": timed(raw_insert), **store_passes(store, candles)})
        store.engine.dispose()
    return {**_figures(len(rows), best_of(runs), prepare_s), "reference": "executemany INSERT"}


def _figures(rows: int, best: dict[str, float], prepare_s: float) -> dict[str, float]:
    rates = {
        "store_first_pass_rows_per_s": rows / best["store_first_pass_s"],
        "store_second_pass_rows_per_s": rows / best["store_second_pass_s"],
        "raw_rows_per_s": rows / best["raw_load_s"],
        "raw_with_prepare_rows_per_s": rows / (best["raw_load_s"] + prepare_s),
    }
    return {
        **best,
        "raw_prepare_s": prepare_s,
        **rates,
        "ratio_first_pass_vs_raw": rates["store_first_pass_rows_per_s"] / rates["raw_rows_per_s"],
        "ratio_second_pass_vs_raw": rates["store_second_pass_rows_per_s"] / rates["raw_rows_per_s"],
        "ratio_first_pass_vs_raw_with_prepare": rates["store_first_pass_rows_per_s"]
        / rates["raw_with_prepare_rows_per_s"],
    }


GOALS = {"postgresql": 0.6, "sqlite": 0.9}


def main() -> None:
    load_start = os.getloadavg()
    candles = {symbol: synthetic_candles(seed) for seed, symbol in enumerate(SYMBOLS)}
    rows = full_rows(candles)
    encode_copy_binary("ohlcv", rows.iloc[:10])  # loads the compiled encoder (numba cache) once
    results: dict = {"rows": len(rows), "symbols": len(SYMBOLS)}
    for name, bench in (("postgresql", bench_postgresql), ("sqlite", bench_sqlite)):
        results[name] = figures = bench(candles, rows)
        print(
            f"{name:10s} store first pass {figures['store_first_pass_rows_per_s']:>10,.0f} rows/s, "
            f"second pass {figures['store_second_pass_rows_per_s']:>10,.0f} rows/s; "
            f"raw ({figures['reference']}) {figures['raw_rows_per_s']:>10,.0f} rows/s "
            f"({figures['raw_with_prepare_rows_per_s']:,.0f} with preparation); "
            f"ratio first pass / raw = {figures['ratio_first_pass_vs_raw']:.2f}"
        )
        figures["goal_both_passes_ratio_min"] = GOALS[name]
        figures["goal_met"] = (
            min(figures["ratio_first_pass_vs_raw"], figures["ratio_second_pass_vs_raw"]) >= GOALS[name]
        )
    results["cpu_count"] = os.cpu_count()
    results["loadavg_start"] = [round(v, 2) for v in load_start]
    results["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in _flat(results).items()}))


def _flat(results: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in results.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


if __name__ == "__main__":
    main()
