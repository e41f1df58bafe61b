"""Child process for the killed-writer test: upsert one large candle partition into a market store.

Usage: ``python store_writer_child.py URL SYMBOL ROWS CLOSE``. Prints ``writing`` (flushed) when the
write transaction issues its first statement and ``committed`` once the upsert has returned.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import sqlalchemy as sa

from antmeter.market.store import MarketStore


def flat_candles(rows: int, close: float) -> pd.DataFrame:
    """``rows`` one-minute candles from 2024-01-01 whose prices all equal ``close``."""
    price = np.full(rows, close)
    return pd.DataFrame(
        {
            "open_time": pd.date_range("2024-01-01", periods=rows, freq="min", tz="UTC"),
            "open": price,
            "high": price,
            "low": price,
            "close": price,
            "volume": np.ones(rows),
        }
    )


def main(url: str, symbol: str, rows: int, close: float) -> None:
    store = MarketStore(url)
    candles = flat_candles(rows, close)

    def announce(conn, cursor, statement, parameters, context, executemany) -> None:
        # the write transaction's first statement: the key-box check (the rows themselves go through
        # the DBAPI cursor: COPY or executemany, which fire no engine event)
        if statement.lstrip().upper().startswith(("SELECT EXISTS", "INSERT", "CREATE TEMPORARY")):
            print("writing", flush=True)

    sa.event.listen(store.engine, "before_cursor_execute", announce)
    store.upsert_candles(symbol, "1m", candles, source="child")
    print("committed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
