"""Market data: the candle contract, the simulator, exchange and file sources, the store, quality checks."""
