"""The candle contract (validate_candles), the symbol rule and log redaction, as plain functions."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from antmeter.market.candles import CandleValidationError, validate_candles
from antmeter.market.redaction import get_logger, redact, redact_url, register_secret
from antmeter.market.symbols import InvalidSymbolError, path_under, validate_symbol

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def candles(n: int = 6, start: pd.Timestamp = T0, freq: str = "min") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "open_time": pd.date_range(start, periods=n, freq=freq),
            "open": 10.0,
            "high": 11.0,
            "low": 9.0,
            "close": 10.5,
            "volume": 1.0,
        }
    )


@pytest.mark.parametrize(
    ("column", "value", "field", "reason"),
    [
        ("open_time", T0 + pd.Timedelta(seconds=30), "open_time", "not on the 1m interval grid"),
        ("open_time", pd.Timestamp("2008-12-31 23:59", tz="UTC"), "open_time", "before 2009-01-01"),
        ("open_time", pd.Timestamp("2099-01-01", tz="UTC"), "open_time", "after now"),
        ("open_time", pd.NaT, "open_time", "missing open time (NaT)"),
        ("open", 0.0, "open", "price not positive"),
        ("close", -1.0, "close", "price not positive"),
        ("high", 10.2, "high", "high below open/close"),
        ("low", 10.4, "low", "low above open/close"),
        ("volume", -0.1, "volume", "negative volume"),
        ("volume", np.inf, "volume", "not a finite number"),
        ("open", True, "open", "boolean, not a number"),
    ],
)
def test_each_rule_names_source_row_and_field(column, value, field, reason):
    frame = candles()
    frame[column] = frame[column].astype(object) if column != "open_time" else frame[column]
    frame.loc[3, column] = value
    with pytest.raises(CandleValidationError) as info:
        validate_candles(frame, "api POST /candles")
    assert (info.value.source, info.value.field) == ("api POST /candles", field)
    assert str(info.value.row).startswith("3") and reason in info.value.reason


def test_price_jumps_are_not_limited_and_intervals_have_their_own_grid():
    jumpy = candles()
    jumpy.loc[2, ["open", "high", "low", "close"]] = [1e6, 2e6, 1e-6, 1e-3]
    assert len(validate_candles(jumpy, "x")) == 6
    assert len(validate_candles(candles(freq="h"), "x", "1h")) == 6
    with pytest.raises(CandleValidationError, match="row 1 .*not on the 5m interval grid"):
        validate_candles(candles(), "x", "5m")
    with pytest.raises(CandleValidationError, match="after now"):
        validate_candles(candles(), "x", now=T0 + pd.Timedelta(minutes=3))
    whole_bool_column = candles().assign(volume=True)
    with pytest.raises(CandleValidationError, match="row 0 .*'volume': boolean"):
        validate_candles(whole_bool_column, "x")


def test_symbol_rule_is_configurable_but_never_allows_path_characters(monkeypatch, tmp_path):
    assert validate_symbol("BTCUSDT") == "BTCUSDT"
    for bad in ("btcusdt", "B", "A" * 21, "../x", "BTC.A", "BTC\x00", "", 7):
        with pytest.raises(InvalidSymbolError):
            validate_symbol(bad)
    monkeypatch.setenv("ANTMETER_SYMBOL_PATTERN", r"^[A-Za-z0-9._/-]{1,30}$")
    assert validate_symbol("btc-usdt") == "btc-usdt"
    for still_bad in ("BTC.A", "../x", "a/b"):  # the pattern allows them, the safe characters do not
        with pytest.raises(InvalidSymbolError):
            validate_symbol(still_bad)
    monkeypatch.setenv("ANTMETER_SYMBOL_PATTERN", "([")
    with pytest.raises(ValueError, match="ANTMETER_SYMBOL_PATTERN"):
        validate_symbol("BTCUSDT")
    assert path_under(tmp_path, "a", "b.csv") == (tmp_path / "a" / "b.csv").resolve()
    with pytest.raises(ValueError, match="outside the base directory"):
        path_under(tmp_path, "..", "escaped.csv")


def test_redaction_masks_registered_and_secret_looking_values(caplog):
    register_secret("https://hooks.example.com/services/T1/B2/abcdefSECRET")
    text = (
        "POST https://hooks.example.com/services/T1/B2/abcdefSECRET failed; "
        "GET https://api.example/posts/?auth_token=tok123&currencies=BTC; "
        "postgresql://user:pw0rd@db/x; headers {'X-Api-Key': 'k3y'}"
    )
    masked = redact(text)
    for secret in ("abcdefSECRET", "tok123", "pw0rd", "k3y"):
        assert secret not in masked
    assert "currencies=BTC" in masked and "partition_key=BTCUSDT" in redact("partition_key=BTCUSDT")
    assert redact_url("https://hooks.example.com:8443/services/x") == "https://hooks.example.com:8443/***"
    logger = get_logger("antmeter.test_redaction")
    with caplog.at_level(logging.INFO, logger="antmeter.test_redaction"):
        logger.info("calling %s", "https://x/?apiKey=zzz999")
        try:
            raise RuntimeError("boom auth_token=zzz888")
        except RuntimeError:
            logger.exception("failed")
    assert "zzz999" not in caplog.text and "zzz888" not in caplog.text
