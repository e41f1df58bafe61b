"""Fuzz suite: corrupted CSV/Parquet/Binance dumps and exchange faults (hypothesis, derandomized).

For every generated case: either an error naming the file (or URL) and the row/field, or exactly the
generator's clean rows; and nothing invalid reaches either store (SQLite and PostgreSQL): a corrupted
frame handed straight to the store is refused, and whatever is stored passes the candle contract.
"""

from __future__ import annotations

import itertools
import random

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from antmeter.market.candles import CandleValidationError, validate_candles
from antmeter.market.store import MarketStore
from antmeter.market.symbols import InvalidSymbolError
from antmeter_testkit import corruption
from antmeter_testkit.servers.binance_server import FakeBinance

FUZZ = settings(
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
FILE_CASES = [(op, fmt) for op in corruption.OPERATORS for fmt in op.formats]


@pytest.fixture
def stores(sqlite_url: str, pg_url: str):
    both = [MarketStore(sqlite_url), MarketStore(pg_url)]
    for store in both:
        store.migrate()
    yield both
    for store in both:
        store.engine.dispose()


def _assert_stores_hold_only(
    stores: list[MarketStore], symbol: str, interval: str, expected: pd.DataFrame | None
):
    for store in stores:
        stored = store.read_candles(symbol, interval)
        if expected is None:
            assert stored.empty, f"{store!r}: rows stored for a rejected case"
        else:
            pd.testing.assert_frame_equal(stored, expected)
            validate_candles(stored, f"{store!r}", interval)  # what is stored keeps the contract


@given(case=st.sampled_from(FILE_CASES), seed=st.integers(0, 2**16))
@settings(FUZZ, max_examples=160)
def test_corrupted_files_give_a_clear_error_or_exactly_the_clean_rows(case, seed, tmp_path_factory, stores):
    operator, fmt = case
    directory = tmp_path_factory.mktemp("fuzz")
    index = next(_file_counter)
    path, clean, corrupted = corruption.corrupt_file(directory, operator, fmt, random.Random(seed), index)
    verdict = corruption.judge_file(path, clean, corrupted.interval, operator.harmless)
    expected = "valid_rows" if operator.harmless else "clear_error"
    assert verdict.outcome == expected, f"{operator.name}/{fmt}: {verdict.outcome}: {verdict.message}"

    symbol = f"FUZZ{index}"
    for store in stores:
        if verdict.read is not None:
            store.upsert_candles(symbol, corrupted.interval, verdict.read, source=str(path))
        if corrupted.frame is not None and not operator.harmless:
            with pytest.raises(CandleValidationError):
                store.upsert_candles(symbol, corrupted.interval, corrupted.frame, source=str(path))
    _assert_stores_hold_only(stores, symbol, corrupted.interval, verdict.read)


_file_counter = itertools.count()
_exchange_counter = itertools.count()


@pytest.fixture
def exchange():
    with FakeBinance({}) as server:
        yield server


@given(scenario=st.sampled_from(corruption.SCENARIOS), seed=st.integers(0, 2**16))
@settings(FUZZ, max_examples=45)
def test_exchange_faults_give_a_clear_error_or_exactly_the_served_rows(scenario, seed, exchange, stores):
    outcome, detail = corruption.run_scenario(exchange, scenario, random.Random(seed))
    assert outcome in ("clear_error", "valid_rows"), f"{scenario.name}: {outcome}: {detail}"
    # what a successful fetch returns goes into both stores unchanged; a failed one leaves nothing
    symbol = f"EX{next(_exchange_counter)}"
    if outcome == "valid_rows":
        served = exchange.klines[(corruption.EXCHANGE_SYMBOL, "1m")]
        frame = pd.DataFrame(
            {
                "open_time": pd.to_datetime([r[0] for r in served], unit="ms", utc=True),
                **{n: [float(r[i]) for r in served] for i, n in enumerate(corruption.VALUES, start=1)},
            }
        )
        for store in stores:
            store.upsert_candles(symbol, "1m", frame, source="binance")
        _assert_stores_hold_only(stores, symbol, "1m", validate_candles(frame, "expected"))
    else:
        _assert_stores_hold_only(stores, symbol, "1m", None)


@pytest.mark.parametrize(
    "symbol", [s for family in corruption.HOSTILE_SYMBOLS.values() for s in family], ids=repr
)
def test_hostile_symbols_are_refused_before_any_path_or_sql(symbol, tmp_path, stores):
    assert corruption.judge_symbol(tmp_path, symbol) == "clear_error"
    for store in stores:
        with pytest.raises(InvalidSymbolError):
            store.upsert_candles(symbol, "1m", corruption.clean_candles(random.Random(0), 3), source="x")
    assert all(store.symbols() == [] for store in stores)
