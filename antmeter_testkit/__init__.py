"""Fault-injection kit shared by the tests and the benchmarks: loopback servers speaking the real wire
formats (Binance klines, RSS/CryptoPanic/NewsAPI) and named corruption operators for candle files.
No fixtures and no test code: ``antmeter_tests`` imports it, ``bench/`` imports it, product code never does."""
