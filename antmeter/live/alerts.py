"""Alerts on confident signals: a new prediction whose confidence reaches its horizon's threshold is
posted as JSON to a webhook, at most once per signal, in the background (never blocking the caller).

A signal is one prediction key (symbol, prediction time, horizon, model name and version). Each is
claimed by creating its marker file under ``state_dir`` exclusively before it is sent, so a re-run
of the predictions (or a second process) never sends it again. The webhook URL is a secret: it is
never logged nor put in an error message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

log = logging.getLogger("antmeter.alerts")

DIRECTIONS = {2: ("down", "up"), 3: ("down", "flat", "up")}


def parse_thresholds(raw: str | None) -> dict[int, float]:
    """``ANTMETER_ALERT_THRESHOLDS``: a JSON object horizon (minutes) -> confidence in (0, 1], e.g.
    ``{"5": 0.7, "30": 0.65}``; empty or unset: no alerts."""
    if not raw:
        return {}
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"ANTMETER_ALERT_THRESHOLDS is not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ValueError(f"ANTMETER_ALERT_THRESHOLDS must be a JSON object horizon -> threshold, got {raw!r}")
    out = {}
    for key, value in values.items():
        try:
            horizon, threshold = int(key), float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"ANTMETER_ALERT_THRESHOLDS: {key!r}: {value!r} is not horizon -> number"
            ) from None
        if horizon < 1 or not 0.0 < threshold <= 1.0:
            raise ValueError(
                f"ANTMETER_ALERT_THRESHOLDS: horizon {key!r} must be >= 1 and threshold {value!r} in (0, 1]"
            )
        out[horizon] = threshold
    return out


def confident_signals(predictions: pd.DataFrame, thresholds: Mapping[int, float]) -> list[dict[str, Any]]:
    """The alert payloads of the prediction rows whose confidence reaches their horizon's threshold."""
    if predictions.empty or not thresholds:
        return []
    binary = predictions["prob_flat"].isna()
    out = []
    for row, is_binary in zip(predictions.itertuples(index=False), binary, strict=True):
        threshold = thresholds.get(int(row.horizon_min))
        if threshold is None or float(row.confidence) < threshold:
            continue
        out.append(
            {
                "symbol": str(row.symbol),
                "horizon_min": int(row.horizon_min),
                "direction": DIRECTIONS[2 if is_binary else 3][int(row.predicted_class)],
                "confidence": float(row.confidence),
                "threshold": threshold,
                "model_name": str(row.model_name),
                "model_version": str(row.model_version),
                "as_of": pd.Timestamp(row.prediction_time).isoformat(),
                "predicted_return": float(row.predicted_return),
            }
        )
    return out


def signal_id(payload: Mapping[str, Any]) -> str:
    """The identity of a signal: its prediction key."""
    key = "|".join(str(payload[k]) for k in ("symbol", "as_of", "horizon_min", "model_name", "model_version"))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass
class WebhookAlerter:
    """Posts signals to ``url`` from a background thread: ``attempts`` tries, each bounded by
    ``timeout_s``, with exponential back-off; a 4xx other than 408/429 is not retried."""

    url: str
    state_dir: Path
    timeout_s: float = 5.0
    attempts: int = 3
    backoff_s: float = 0.5
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)

    def claim(self, payload: Mapping[str, Any]) -> bool:
        """True once per signal (an exclusive marker file); False when it was claimed before."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        marker = self.state_dir / f"{signal_id(payload)}.json"
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump(dict(payload), handle)
        return True

    def send_in_background(self, payloads: list[dict[str, Any]]) -> int:
        """Claim the new signals and post them from a background thread; returns how many were new."""
        new = [p for p in payloads if self.claim(p)]
        if new:
            thread = threading.Thread(target=self._deliver_all, args=(new,), name="antmeter-alerts")
            thread.start()
            self._threads.append(thread)
        return len(new)

    def wait(self, timeout_s: float | None = None) -> None:
        """Wait for background deliveries (tests and process shutdown)."""
        for thread in self._threads:
            thread.join(timeout_s)

    def _deliver_all(self, payloads: list[dict[str, Any]]) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            for payload in payloads:
                self.deliver(client, payload)

    def deliver(self, client: httpx.Client, payload: Mapping[str, Any]) -> bool:
        """Post one signal with retries; logs the outcome without the URL."""
        what = f"{payload['symbol']} {payload['horizon_min']}m {payload['direction']} v{payload['model_version']}"
        for attempt in range(1, self.attempts + 1):
            try:
                response = client.post(self.url, json=dict(payload))
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}"  # the message would name the secret URL
            else:
                if response.is_success:
                    log.info("alert sent: %s (attempt %d)", what, attempt)
                    return True
                problem = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    break
            if attempt < self.attempts:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        log.error("alert not delivered: %s (%s after %d attempt(s))", what, problem, attempt)
        return False


def alert_on_predictions(
    predictions: pd.DataFrame,
    thresholds: Mapping[int, float],
    url: str | None,
    state_dir: Path,
    timeout_s: float = 5.0,
) -> tuple[int, WebhookAlerter | None]:
    """Send the confident signals among new ``predictions`` (without waiting); returns (new, alerter)."""
    signals = confident_signals(predictions, thresholds)
    if not signals or not url:
        return 0, None
    alerter = WebhookAlerter(url=url, state_dir=state_dir, timeout_s=timeout_s)
    return alerter.send_in_background(signals), alerter
