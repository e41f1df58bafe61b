"""Alerts on confident signals, delivered to a real loopback webhook server."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from antmeter.live.alerts import (
    WebhookAlerter,
    alert_on_predictions,
    confident_signals,
    parse_thresholds,
)
from antmeter_testkit.servers.webhook_server import running_webhook


def prediction_rows(confidences: list[float], horizons: list[int], up: list[bool]) -> pd.DataFrame:
    conf = np.asarray(confidences)
    prob_up = np.where(up, conf, 1 - conf)
    return pd.DataFrame(
        {
            "symbol": "BTCUSDT",
            "prediction_time": pd.date_range("2024-03-05", periods=len(conf), freq="min", tz="UTC"),
            "horizon_min": horizons,
            "model_name": "antmeter-lstm",
            "model_version": "3",
            "prob_down": 1 - prob_up,
            "prob_flat": np.nan,
            "prob_up": prob_up,
            "predicted_class": np.asarray(up, dtype="int64"),
            "confidence": conf,
            "predicted_return": 0.001,
            "created_at": pd.Timestamp("2024-03-05T01:00Z"),
        }
    )


def test_thresholds_parse_and_reject_bad_settings():
    assert parse_thresholds('{"5": 0.7, "30": 0.6}') == {5: 0.7, 30: 0.6}
    assert parse_thresholds(None) == {}
    for bad, needle in (
        ("[0.7]", "JSON object"),
        ('{"5": 1.5}', "(0, 1]"),
        ('{"x": 0.7}', "'x'"),
        ("{", "JSON"),
    ):
        with pytest.raises(ValueError, match="ANTMETER_ALERT_THRESHOLDS") as info:
            parse_thresholds(bad)
        assert needle in str(info.value)


def test_only_predictions_at_or_over_their_horizons_threshold_are_signals():
    rows = prediction_rows([0.9, 0.55, 0.8, 0.7], [5, 5, 30, 10], [True, True, False, True])
    signals = confident_signals(rows, {5: 0.7, 30: 0.8})
    assert [(s["horizon_min"], s["direction"], s["confidence"]) for s in signals] == [
        (5, "up", 0.9),
        (30, "down", 0.8),
    ]
    first = signals[0]
    assert first["symbol"] == "BTCUSDT" and first["model_version"] == "3"
    assert first["as_of"] == "2024-03-05T00:00:00+00:00"


def test_signals_are_delivered_with_retries_and_at_most_once(tmp_path):
    rows = prediction_rows([0.9, 0.95], [5, 5], [True, False])
    with running_webhook(fail_first=2) as hook:
        sent, alerter = alert_on_predictions(rows, {5: 0.7}, hook.url, tmp_path, timeout_s=5)
        assert sent == 2
        alerter.wait(30)
        payloads = hook.wait_for(2, timeout_s=10)
        assert hook.attempts == 4  # two 503s, retried
        assert sorted(p["direction"] for p in payloads) == ["down", "up"]
        # a re-run of the predictions (same rows, a new process' alerter) sends nothing again
        again, _ = alert_on_predictions(rows, {5: 0.7}, hook.url, tmp_path, timeout_s=5)
        assert again == 0
        assert WebhookAlerter(hook.url, tmp_path).send_in_background(confident_signals(rows, {5: 0.7})) == 0
        assert len(hook.payloads) == 2


def test_sending_never_waits_for_the_webhook(tmp_path):
    rows = prediction_rows([0.9], [5], [True])
    with running_webhook(hold=True) as hook:
        sent, alerter = alert_on_predictions(rows, {5: 0.7}, hook.url, tmp_path, timeout_s=10)
        assert sent == 1
        assert hook.arrived.wait(10)
        # the call returned while the webhook still holds the request unanswered
        assert hook.payloads == [] and not hook.release.is_set()
        hook.release.set()
        alerter.wait(30)
        assert len(hook.wait_for(1, timeout_s=10)) == 1


def test_a_dead_webhook_is_given_up_after_the_retries_without_logging_its_url(tmp_path, caplog):
    with running_webhook() as hook:
        url = hook.url
    # the server is closed now: every attempt is refused
    alerter = WebhookAlerter(url, tmp_path, timeout_s=1, attempts=2, backoff_s=0.01)
    rows = prediction_rows([0.9], [5], [True])
    with caplog.at_level(logging.INFO, logger="antmeter.alerts"):
        assert alerter.send_in_background(confident_signals(rows, {5: 0.7})) == 1
        alerter.wait(30)
    assert "not delivered" in caplog.text and "after 2 attempt(s)" in caplog.text
    assert "secret-token-abc123" not in caplog.text and "127.0.0.1" not in caplog.text


def test_a_client_error_is_not_retried(tmp_path):
    rows = prediction_rows([0.9], [5], [True])
    with running_webhook(fail_first=5, fail_status=400) as hook:
        _, alerter = alert_on_predictions(rows, {5: 0.7}, hook.url, tmp_path, timeout_s=5)
        alerter.wait(30)
        assert hook.attempts == 1 and hook.payloads == []
