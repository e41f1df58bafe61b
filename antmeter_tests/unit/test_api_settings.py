"""The API reads the pipeline's candle-source variables to put the simulator's oracle beside its figures."""

import pytest

from antmeter_api.settings import ApiSettings


def test_simulated_candles_bring_the_simulator_settings_of_the_pipeline():
    simulator = ApiSettings.from_env(
        {"ANTMETER_SIM_SIGNAL_STRENGTH": "1.0", "ANTMETER_SIM_SIGNAL_FLIP_AT": "2024-03-06T00:00:00+00:00"}
    ).service.simulator
    assert simulator is not None
    assert simulator.signal_strength == 1.0 and simulator.signal_flip_at == "2024-03-06T00:00:00+00:00"
    assert ApiSettings.from_env({}).service.simulator.signal_strength == 0.5  # the simulator's default


def test_real_candles_have_no_oracle_and_a_bad_strength_names_the_variable():
    assert ApiSettings.from_env({"ANTMETER_CANDLE_SOURCE": "binance"}).service.simulator is None
    with pytest.raises(ValueError, match="ANTMETER_SIM_SIGNAL_STRENGTH"):
        ApiSettings.from_env({"ANTMETER_SIM_SIGNAL_STRENGTH": "strong"})


def test_the_pipeline_feature_settings_reach_the_api_and_a_bad_key_is_named():
    service = ApiSettings.from_env(
        {"ANTMETER_SETTINGS": '{"interval": "1h", "features": {"rsi_windows": [7], "macd": null}}'}
    ).service
    assert service.interval == "1h"
    assert service.feature_config.rsi_windows == (7,) and service.feature_config.macd is None
    assert ApiSettings.from_env({}).service.feature_config.rsi_windows == (14,)
    with pytest.raises(ValueError, match=r"ANTMETER_SETTINGS\.features\.rsi_windowz"):
        ApiSettings.from_env({"ANTMETER_SETTINGS": '{"features": {"rsi_windowz": [7]}}'})
