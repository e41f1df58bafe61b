"""MarketStore against a fresh SQLite file and a fresh PostgreSQL database (the ``store_url`` fixture)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from antmeter.market.candles import CandleValidationError, validate_candles
from antmeter.market.store import (
    LATEST_SCHEMA_VERSION,
    OHLCV,
    PG_SESSION_TIMEOUTS,
    SQLITE_CHECKPOINT_ROWS,
    MarketStore,
)
from antmeter.market.symbols import InvalidSymbolError
from antmeter_tests.unit.store_writer_child import flat_candles

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def random_candles(rows: int, seed: int = 0, start: pd.Timestamp = T0) -> pd.DataFrame:
    """Consistent OHLCV rows with full-precision random floats."""
    rng = np.random.default_rng(seed)
    open_, close = rng.uniform(100, 200, rows), rng.uniform(100, 200, rows)
    return pd.DataFrame(
        {
            "open_time": pd.date_range(start, periods=rows, freq="min"),
            "open": open_,
            "high": np.maximum(open_, close) + rng.random(rows),
            "low": np.minimum(open_, close) - rng.random(rows),
            "close": close,
            "volume": rng.exponential(3.0, rows),
        }
    )


def prediction_rows(times: list[pd.Timestamp], model_version: str = "1") -> pd.DataFrame:
    n = len(times)
    return pd.DataFrame(
        {
            "symbol": "BTCUSDT",
            "prediction_time": pd.DatetimeIndex(times),
            "horizon_min": 15,
            "model_name": "lstm",
            "model_version": model_version,
            "prob_down": [0.1 + 0.2] * n,
            "prob_flat": [np.nan] * n,
            "prob_up": np.linspace(0.0, 1.0, n),
            "predicted_class": np.arange(n) % 3,
            "confidence": np.full(n, 1 / 3),
            "predicted_return": np.full(n, -1e-7),
            "created_at": pd.Timestamp("2024-03-02 00:00:00.000001", tz="UTC"),
        }
    )


def article(
    article_id: str, first_seen_at: str, title: str = "BTC up", sentiment: float | None = 0.25
) -> dict:
    return {
        "article_id": article_id,
        "url": f"http://127.0.0.1/{article_id}",
        "title": title,
        "summary": "",
        "source": "feed",
        "published_at": pd.NaT,
        "first_seen_at": pd.Timestamp(first_seen_at, tz="UTC"),
        "symbols": "BTCUSDT,ETHUSDT",
        "simulated": True,
        "sentiment": sentiment,
        "scorer": None if sentiment is None else "vader",
    }


def articles_frame(*rows: dict) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    frame["published_at"] = pd.to_datetime(frame["published_at"], utc=True)
    return frame


@pytest.fixture
def store(store_url: str) -> MarketStore:
    market = MarketStore(store_url)
    assert market.migrate() == LATEST_SCHEMA_VERSION
    yield market
    market.engine.dispose()


def test_candles_round_trip_exactly(store: MarketStore) -> None:
    candles = random_candles(500)
    candles.loc[3, ["open", "close"]] = [0.1 + 0.2, 0.30000000000000004]
    candles.loc[3, ["low", "high"]] = [5e-324, 1.7976931348623157e308]

    assert store.upsert_candles("BTCUSDT", "1m", candles, source="test") == 500

    stored = store.read_candles("BTCUSDT", "1m")
    pd.testing.assert_frame_equal(stored, validate_candles(candles, "test"), check_exact=True)
    assert stored["open_time"].dtype == "datetime64[ns, UTC]"
    assert store.symbols() == ["BTCUSDT"]
    assert store.read_candles("ETHUSDT").empty


def test_generic_tables_round_trip_exactly(store: MarketStore) -> None:
    times = [T0 + pd.Timedelta(microseconds=us) for us in (0, 1, 999_999, 86_400_000_001)]
    predictions = prediction_rows(times)
    verification = predictions[
        ["symbol", "prediction_time", "horizon_min", "model_name", "model_version"]
    ].assign(
        realized_return=[1e-300, -0.0, 2.5, -3.125],
        realized_class=[0, 1, 2, 1],
        correct=[True, False, True, False],
        verified_at=pd.Timestamp("2030-01-01 12:34:56.789012", tz="UTC"),
    )
    sentiment = pd.DataFrame(
        {
            "symbol": ["BTCUSDT", "ETHUSDT"],
            "hour": pd.to_datetime(["2024-03-01 10:00", "2024-03-01 10:00"], utc=True),
            "mean_sentiment": [0.123456789012345, -1.0],
            "article_count": [7, 0],
            "positive_share": [4 / 7, 0.0],
            "negative_share": [1 / 7, 0.0],
        }
    )
    for table, frame in (
        ("predictions", predictions),
        ("verification", verification),
        ("sentiment_hourly", sentiment),
    ):
        assert store.upsert_frame(table, frame) == len(frame)
        stored = store.read_frame(table)
        pd.testing.assert_frame_equal(stored, frame, check_exact=True, check_dtype=False)
        for column, dtype in frame.dtypes.items():
            if isinstance(dtype, pd.DatetimeTZDtype):
                assert stored[column].dtype == "datetime64[ns, UTC]"
            else:
                assert stored[column].dtype.kind == dtype.kind, column

    filtered = store.read_frame("predictions", filters={"model_version": "1", "predicted_class": [0, 2]})
    assert filtered["prediction_time"].tolist() == [times[0], times[2], times[3]]


def test_reupsert_is_idempotent_and_new_values_win(store: MarketStore) -> None:
    candles = random_candles(300)
    store.upsert_candles("BTCUSDT", "1m", candles, source="a")
    first = store.read_frame("ohlcv")

    store.upsert_candles("BTCUSDT", "1m", candles, source="a")
    again = store.read_frame("ohlcv")
    pd.testing.assert_frame_equal(again, first)  # unchanged rows are not rewritten (ingested_at kept)

    changed = candles.copy()
    changed.loc[10:19, "close"] = changed.loc[10:19, "low"]
    store.upsert_candles("BTCUSDT", "1m", changed, source="b")
    final = store.read_frame("ohlcv")
    assert len(final) == 300
    assert final["close"].tolist() == changed["close"].tolist()
    assert (final["source"] == "b").all()
    assert (final["ingested_at"] > first["ingested_at"]).all()


def _row_versions(market: MarketStore) -> dict[pd.Timestamp, object]:
    """Per open time, the stored row's physical version: PostgreSQL ``(xmin, ctid)`` (both change when a
    row is rewritten); SQLite the number of writes that a trigger counted for it (created on first use)."""
    open_time = OHLCV.c.open_time
    if market.dialect == "postgresql":
        query = sa.select(open_time, sa.text("xmin::text || ctid::text")).select_from(OHLCV)
    else:
        with market.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS row_writes (open_time INTEGER, writes INTEGER)")
            for event in ("INSERT", "UPDATE"):
                conn.exec_driver_sql(
                    f"CREATE TRIGGER IF NOT EXISTS count_{event.lower()} AFTER {event} ON ohlcv BEGIN "
                    "INSERT INTO row_writes VALUES (NEW.open_time, 1); END"
                )
        writes = sa.table("row_writes", sa.column("open_time"), sa.column("writes"))
        query = (
            sa.select(open_time, sa.func.count(writes.c.writes))
            .select_from(
                OHLCV.outerjoin(writes, writes.c.open_time == sa.type_coerce(open_time, sa.BigInteger))
            )
            .group_by(open_time)
        )
    with market.engine.connect() as conn:
        return dict(conn.execute(query).all())


def test_reupsert_rewrites_only_the_rows_that_changed(store: MarketStore) -> None:
    candles = random_candles(200)
    store.upsert_candles("BTCUSDT", "1m", candles.iloc[::2], source="a")  # every other minute
    before = _row_versions(store)

    store.upsert_candles("BTCUSDT", "1m", candles.iloc[::2], source="a")
    assert _row_versions(store) == before  # identical rows: not one row rewritten

    changed = candles.copy()
    changed.loc[[10, 20], "volume"] += 1.0
    store.upsert_candles("BTCUSDT", "1m", changed, source="a")  # 2 changed, 98 same, 100 new in between
    after = _row_versions(store)
    times = candles["open_time"]
    rewritten = {t for t in before if after[t] != before[t]}
    assert rewritten == {times[10], times[20]}
    assert len(after) == 200
    pd.testing.assert_frame_equal(store.read_candles("BTCUSDT"), validate_candles(changed, "test"))

    again = _row_versions(store)
    store.upsert_candles("BTCUSDT", "1m", changed, source="a")
    assert _row_versions(store) == again


def test_overlapping_partial_upsert_keeps_the_rest(store: MarketStore) -> None:
    old = random_candles(100, seed=1)
    new = random_candles(100, seed=2, start=T0 + pd.Timedelta(minutes=50))
    store.upsert_candles("BTCUSDT", "1m", old, source="test")
    store.upsert_candles("BTCUSDT", "1m", new, source="test")
    store.upsert_candles("ETHUSDT", "1m", old, source="test")

    stored = store.read_candles("BTCUSDT")
    assert len(stored) == 150
    expected = validate_candles(pd.concat([old.iloc[:50], new]), "test")
    pd.testing.assert_frame_equal(stored, expected, check_exact=True)
    pd.testing.assert_frame_equal(store.read_candles("ETHUSDT"), validate_candles(old, "test"))
    assert store.symbols() == ["BTCUSDT", "ETHUSDT"]


def test_bad_input_raises_and_writes_nothing(store: MarketStore) -> None:
    good = random_candles(50)
    store.upsert_candles("BTCUSDT", "1m", good, source="test")
    before = store.read_frame("ohlcv")

    bad = random_candles(50, seed=9)
    bad.loc[37, "high"] = bad.loc[37, "low"] / 2
    with pytest.raises(CandleValidationError) as caught:
        store.upsert_candles("BTCUSDT", "1m", bad, source="feed")
    assert (caught.value.field, caught.value.source) == ("high", "feed")
    with pytest.raises(ValueError, match="unsupported candle interval"):
        store.upsert_candles("BTCUSDT", "7m", good, source="feed")

    predictions = prediction_rows([T0, T0 + pd.Timedelta(minutes=1), T0 + pd.Timedelta(minutes=2)])
    with_null = predictions.assign(confidence=[0.5, None, 0.5])
    with pytest.raises(ValueError, match=r"predictions: row 1, column 'confidence': NULL"):
        store.upsert_frame("predictions", with_null)
    with pytest.raises(ValueError, match=r"predictions: missing column\(s\) \['created_at'\]"):
        store.upsert_frame("predictions", predictions.drop(columns="created_at"))
    with pytest.raises(ValueError, match=r"predictions: unknown column\(s\) \['colour'\]"):
        store.upsert_frame("predictions", predictions.assign(colour="red"))
    with pytest.raises(
        ValueError,
        match=r"predictions: row 2: duplicate primary key \(symbol=BTCUSDT, prediction_time=2024-03-01",
    ):
        store.upsert_frame("predictions", prediction_rows([T0, T0 + pd.Timedelta(minutes=1), T0]))
    with pytest.raises(ValueError, match=r"predictions: column 'created_at' must hold timezone-aware"):
        store.upsert_frame("predictions", predictions.assign(created_at=pd.Timestamp("2024-03-02")))
    with pytest.raises(ValueError, match=r"unknown table 'trades'"):
        store.upsert_frame("trades", predictions)

    pd.testing.assert_frame_equal(store.read_frame("ohlcv"), before)
    assert store.read_frame("predictions").empty


def test_article_first_seen_at_keeps_the_earliest(store: MarketStore) -> None:
    store.upsert_frame(
        "articles", articles_frame(article("a1", "2024-03-01 12:00"), article("a2", "2024-03-01 13:00"))
    )
    store.upsert_frame(
        "articles", articles_frame(article("a1", "2024-03-01 11:00:00.000001", title="BTC soars"))
    )
    store.upsert_frame(
        "articles", articles_frame(article("a1", "2024-03-02 09:00", title="BTC soars", sentiment=None))
    )

    stored = store.read_frame("articles").set_index("article_id")
    assert stored.loc["a1", "first_seen_at"] == pd.Timestamp("2024-03-01 11:00:00.000001", tz="UTC")
    assert stored.loc["a1", "title"] == "BTC soars"
    assert np.isnan(stored.loc["a1", "sentiment"]) and pd.isna(stored.loc["a1", "scorer"])
    assert stored.loc["a2", "first_seen_at"] == pd.Timestamp("2024-03-01 13:00", tz="UTC")
    assert stored.loc["a2", "summary"] == "" and bool(stored.loc["a2", "simulated"])


def test_many_distinct_text_keys_upsert_and_reupsert(store: MarketStore) -> None:
    """More distinct article ids than a key box lists: the box leaves the key unconstrained."""
    rows = [article(f"a{i:03d}", "2024-03-01 00:00", title=f"t{i}") for i in range(150)]
    assert store.upsert_frame("articles", articles_frame(*rows)) == 150
    assert store.upsert_frame("articles", articles_frame(*rows)) == 150
    rows[7] = article("a007", "2024-03-01 00:00", title="changed")
    rows.append(article("b000", "2024-03-01 00:00"))
    store.upsert_frame("articles", articles_frame(*rows))
    stored = store.read_frame("articles").set_index("article_id")
    assert len(stored) == 151
    assert stored.loc["a007", "title"] == "changed" and stored.loc["a008", "title"] == "t8"


def test_reads_are_half_open_ranges(store: MarketStore) -> None:
    store.upsert_candles("BTCUSDT", "1m", random_candles(10), source="test")
    minute = pd.Timedelta(minutes=1)

    window = store.read_candles("BTCUSDT", "1m", start=T0 + 2 * minute, end=T0 + 5 * minute)
    assert window["open_time"].tolist() == [T0 + k * minute for k in (2, 3, 4)]
    assert len(store.read_candles("BTCUSDT", start=T0 + 8 * minute)) == 2
    assert len(store.read_candles("BTCUSDT", end=T0 + 8 * minute)) == 8
    assert store.read_candles("BTCUSDT", "5m").empty

    stats = store.candle_stats("BTCUSDT", "1m", T0 + 2 * minute, T0 + 5 * minute)
    assert stats == {"rows": 3, "first_open_time": T0 + 2 * minute, "last_open_time": T0 + 4 * minute}
    assert store.candle_stats("BTCUSDT", "1m", T0 + 20 * minute, None) == {
        "rows": 0,
        "first_open_time": None,
        "last_open_time": None,
    }

    store.upsert_frame("predictions", prediction_rows([T0 + k * minute for k in range(5)]))
    ranged = store.read_frame("predictions", time_range=(T0 + minute, T0 + 3 * minute))
    assert ranged["prediction_time"].tolist() == [T0 + minute, T0 + 2 * minute]
    with pytest.raises(ValueError, match="timezone-aware"):
        store.read_candles("BTCUSDT", start=pd.Timestamp("2024-03-01"))


def test_migrate_is_idempotent_and_applies_missing_steps(store_url: str) -> None:
    fresh = MarketStore(store_url)
    with pytest.raises(RuntimeError, match="call MarketStore.migrate"):
        fresh.read_candles("BTCUSDT")
    assert fresh.migrate(target_version=1) == 1
    assert not _index_names(fresh, "articles")

    assert fresh.migrate() == LATEST_SCHEMA_VERSION
    fresh.upsert_candles("BTCUSDT", "1m", random_candles(20), source="test")
    assert fresh.migrate() == LATEST_SCHEMA_VERSION
    assert "ix_articles_first_seen_at" in _index_names(fresh, "articles")
    with fresh.engine.connect() as conn:
        versions = (
            conn.execute(sa.text("SELECT version FROM schema_version ORDER BY version")).scalars().all()
        )
    assert versions == list(range(1, LATEST_SCHEMA_VERSION + 1))
    assert len(fresh.read_candles("BTCUSDT")) == 20
    fresh.engine.dispose()


def test_concurrent_migrations_are_serialised(store_url: str) -> None:
    stores = [MarketStore(store_url) for _ in range(3)]
    barrier = threading.Barrier(len(stores))
    results: list[object] = []

    def run(market: MarketStore) -> None:
        barrier.wait()
        try:
            results.append(market.migrate())
        except Exception as exc:  # collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=run, args=(market,)) for market in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [LATEST_SCHEMA_VERSION] * len(stores)
    assert stores[0].schema_version() == LATEST_SCHEMA_VERSION
    for market in stores:
        market.engine.dispose()


def test_upsert_racing_a_concurrent_writer_of_the_same_key(store: MarketStore, store_url: str) -> None:
    candles = random_candles(100)
    contested = candles["open_time"].iloc[50]
    rival = MarketStore(store_url)
    outcome: list[object] = []

    def upsert() -> None:
        try:
            outcome.append(store.upsert_candles("BTCUSDT", "1m", candles, source="main"))
        except Exception as exc:  # asserted below
            outcome.append(exc)

    with rival.engine.connect() as conn:
        rival_tx = conn.begin()
        row = {
            "symbol": "BTCUSDT",
            "interval": "1m",
            "open_time": contested,
            "source": "rival",
            "ingested_at": T0,
        }
        conn.execute(sa.insert(OHLCV).values(**row, open=1.0, high=1.0, low=1.0, close=1.0, volume=1.0))
        writer = threading.Thread(target=upsert)
        writer.start()
        time.sleep(1.0)
        assert writer.is_alive(), f"the upsert did not wait for the rival transaction: {outcome}"
        rival_tx.commit()
    writer.join(timeout=60)
    rival.engine.dispose()

    assert outcome == [100]
    pd.testing.assert_frame_equal(store.read_candles("BTCUSDT"), validate_candles(candles, "test"))
    assert set(store.read_frame("ohlcv")["source"]) == {"main"}


def test_delete_older_than(store: MarketStore) -> None:
    minute = pd.Timedelta(minutes=1)
    store.upsert_candles("BTCUSDT", "1m", random_candles(10), source="test")
    store.upsert_candles("ETHUSDT", "1m", random_candles(10), source="test")
    store.upsert_frame("predictions", prediction_rows([T0 + k * minute for k in range(6)]))

    assert store.delete_older_than("ohlcv", T0 + 4 * minute) == 8
    assert store.delete_older_than("ohlcv", T0 + 4 * minute) == 0
    assert store.read_candles("BTCUSDT")["open_time"].min() == T0 + 4 * minute
    assert store.candle_stats("ETHUSDT", "1m", None, None)["rows"] == 6
    assert store.delete_older_than("predictions", T0 + 5 * minute) == 5
    assert store.read_frame("predictions")["prediction_time"].tolist() == [T0 + 5 * minute]


def test_killed_writer_leaves_old_rows_or_the_whole_new_partition(store: MarketStore, store_url: str) -> None:
    rows = 200_000
    store.upsert_candles("BTCUSDT", "1m", flat_candles(rows, close=1.0), source="parent")
    child = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("store_writer_child.py")),
            store_url,
            "BTCUSDT",
            str(rows),
            "2.0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "writing"
        time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        remaining = child.stdout.read()
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    total, replaced = _count_closes(store, 2.0)
    assert total == rows
    assert replaced in (0, rows), f"partial write: {replaced} of {rows} rows replaced"
    if "committed" in remaining:
        assert replaced == rows

    # the store stays usable (no stale lock): the killed partition can be written now
    store.upsert_candles("BTCUSDT", "1m", flat_candles(1000, close=3.0), source="parent")
    assert _count_closes(store, 3.0) == (rows, 1000)


def _count_closes(market: MarketStore, close: float) -> tuple[int, int]:
    """(rows, rows whose close equals ``close``) of BTCUSDT, counted in the database."""
    ohlcv = sa.table("ohlcv", sa.column("symbol"), sa.column("close"))
    matching = sa.func.sum(sa.case((ohlcv.c.close == close, 1), else_=0))
    query = sa.select(sa.func.count(), sa.func.coalesce(matching, 0)).where(ohlcv.c.symbol == "BTCUSDT")
    with market.engine.connect() as conn:
        total, matched = conn.execute(query).one()
    return int(total), int(matched)


def test_url_rewrites_bare_postgresql_to_psycopg2(pg_url: str) -> None:
    bare = sa.make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    market = MarketStore(bare)
    assert market.engine.url.drivername == "postgresql+psycopg2"
    assert market.migrate() == LATEST_SCHEMA_VERSION
    market.engine.dispose()
    with pytest.raises(ValueError, match="unsupported market store URL driver 'mysql'"):
        MarketStore("mysql://u@127.0.0.1/db")


def _index_names(market: MarketStore, table: str) -> set[str]:
    with market.engine.connect() as conn:
        return {index["name"] for index in sa.inspect(conn).get_indexes(table)}


# -- issue 12: the candle contract at the store, symbols, session timeouts, WAL --------------------


def test_off_grid_candles_are_rejected_and_nothing_written(store: MarketStore) -> None:
    half_minute = random_candles(10)
    half_minute.loc[4, "open_time"] += pd.Timedelta(seconds=30)  # 00:04:30 overlaps 00:04 and 00:05
    with pytest.raises(CandleValidationError) as caught:
        store.upsert_candles("BTCUSDT", "1m", half_minute, source="feed")
    assert (caught.value.field, str(caught.value.row)[:1]) == ("open_time", "4")
    assert "not on the 1m interval grid" in caught.value.reason
    with pytest.raises(CandleValidationError, match="row 1 .*not on the 1h interval grid"):
        store.upsert_candles("BTCUSDT", "1h", random_candles(10), source="feed")  # minute rows as 1h
    assert store.read_frame("ohlcv").empty


def test_nat_and_boolean_candles_are_rejected_naming_the_source(store: MarketStore) -> None:
    with_nat = random_candles(5)
    with_nat.loc[2, "open_time"] = pd.NaT
    with pytest.raises(CandleValidationError, match=r"feed: row 2 .*'open_time': missing open time \(NaT\)"):
        store.upsert_candles("BTCUSDT", "1m", with_nat, source="feed")
    boolean = random_candles(5).assign(volume=True)
    with pytest.raises(CandleValidationError, match=r"row 0 .*'volume': boolean"):
        store.upsert_candles("BTCUSDT", "1m", boolean, source="feed")
    assert store.read_frame("ohlcv").empty


@pytest.mark.parametrize("symbol", ["BTC\x00USDT", "../../../escaped", "BTC.A", "btcusdt", "X"])
def test_symbols_outside_the_rule_never_reach_the_database(store: MarketStore, symbol: str) -> None:
    with pytest.raises(InvalidSymbolError, match="not a valid symbol"):
        store.upsert_candles(symbol, "1m", random_candles(3), source="feed")
    frame = random_candles(3).assign(symbol=symbol, interval="1m", source="feed", ingested_at=T0)
    with pytest.raises(InvalidSymbolError):
        store.upsert_frame("ohlcv", frame[[c.name for c in OHLCV.columns]])
    assert store.read_frame("ohlcv").empty


def test_postgres_sessions_time_out_locks_statements_and_idle_transactions(pg_url: str) -> None:
    store = MarketStore(pg_url)
    store.migrate()
    with store.engine.connect() as conn:
        settings = {name: conn.exec_driver_sql(f"SHOW {name}").scalar_one() for name in PG_SESSION_TIMEOUTS}
    assert settings == PG_SESSION_TIMEOUTS
    store.upsert_candles("BTCUSDT", "1m", random_candles(5), source="old")

    # A writer that stalls inside its transaction (as a killed one does) holds row locks ...
    stalled = store.engine.connect()
    stalled.begin()
    stalled.execute(sa.update(OHLCV).values(source="stalled"))
    time.sleep(float(PG_SESSION_TIMEOUTS["idle_in_transaction_session_timeout"].rstrip("s")) + 1.5)
    # ... until the server ends its idle transaction: the next writer goes through at once.
    started = time.monotonic()
    store.upsert_candles("BTCUSDT", "1m", random_candles(5, seed=1), source="new")
    assert time.monotonic() - started < 5
    assert set(store.read_frame("ohlcv")["source"]) == {"new"}
    with pytest.raises(sa.exc.DBAPIError):
        stalled.execute(sa.select(1))
    stalled.invalidate()
    store.engine.dispose()


def test_sqlite_wal_is_checkpointed_after_a_large_write(sqlite_url: str) -> None:
    store = MarketStore(sqlite_url)
    store.migrate()
    wal = Path(sqlite_url.removeprefix("sqlite:///") + "-wal")
    store.upsert_candles("BTCUSDT", "1m", random_candles(SQLITE_CHECKPOINT_ROWS), source="bulk")
    assert wal.exists() and wal.stat().st_size == 0  # checkpointed and truncated, not left at ~10 MB
    assert store.candle_stats("BTCUSDT", "1m")["rows"] == SQLITE_CHECKPOINT_ROWS
    store.engine.dispose()
