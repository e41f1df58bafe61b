"""The API's configuration, read from the same environment variables as the pipeline's resources.

Defaults are the embedded default of ``bash run.sh main`` (SQLite store and local MLflow store under
``data/``). Secrets (the operator token, database passwords inside URLs) come only from the
environment and are never logged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from antmeter.features.pipeline import feature_config_from_settings
from antmeter.live.service import ServiceSettings
from antmeter.market.simulator import SimulatorConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
ALL_MODEL_TYPES = ("lstm", "transformer", "patchtst")
OPERATOR_TOKEN_ENV = "ANTMETER_API_OPERATOR_TOKEN"


def _data_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("ANTMETER_DATA_DIR") or REPO_ROOT / "data").resolve()


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _model_types(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("ANTMETER_MODEL_TYPES", "")
    chosen = tuple(dict.fromkeys(t.strip().lower() for t in raw.split(",") if t.strip()))
    unknown = [t for t in chosen if t not in ALL_MODEL_TYPES]
    if unknown:
        raise ValueError(
            f"ANTMETER_MODEL_TYPES: unknown model type(s) {unknown}; choose from {ALL_MODEL_TYPES}"
        )
    return chosen or ALL_MODEL_TYPES


def _simulator(env: Mapping[str, str]) -> SimulatorConfig | None:
    """The simulator the pipeline's candles come from (the same variables as its candle source), for
    the oracle ceiling next to the accuracy figures; None when candles are not simulated."""
    if (env.get("ANTMETER_CANDLE_SOURCE") or "simulator") != "simulator":
        return None
    strength = env.get("ANTMETER_SIM_SIGNAL_STRENGTH")
    try:
        extra = {} if not strength else {"signal_strength": float(strength)}
    except ValueError:
        raise ValueError(f"ANTMETER_SIM_SIGNAL_STRENGTH must be a number, got {strength!r}") from None
    return SimulatorConfig(
        signal_flip_at=env.get("ANTMETER_SIM_SIGNAL_FLIP_AT") or None,
        plant_patterns=env.get("ANTMETER_SIM_PATTERNS", "off") == "on",
        **extra,
    )


@dataclass(frozen=True)
class ApiSettings:
    """Where the API reads from and what it serves."""

    store_url: str
    tracking_uri: str
    cache_dir: Path
    dagster_url: str
    operator_token: str | None = field(default=None, repr=False)
    max_body_bytes: int = 4_000_000
    champion_refresh_s: float = 5.0
    service: ServiceSettings = field(default_factory=ServiceSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiSettings:
        """``ANTMETER_STORE_URL``, ``MLFLOW_TRACKING_URI``, ``ANTMETER_DATA_DIR``, ``ANTMETER_MODEL_TYPES``,
        ``ANTMETER_API_DEFAULT_MODEL``, ``ANTMETER_API_DAGSTER_URL``, ``ANTMETER_API_OPERATOR_TOKEN``,
        ``ANTMETER_API_MAX_BODY_BYTES``, ``ANTMETER_SETTINGS`` (interval, task, staleness, horizon, features)."""
        env = os.environ if environ is None else environ
        data = _data_dir(env)
        overrides = json.loads(env.get("ANTMETER_SETTINGS") or "{}")
        model_types = _model_types(env)
        default_model = env.get("ANTMETER_API_DEFAULT_MODEL") or None
        if default_model is not None and default_model not in model_types:
            raise ValueError(f"ANTMETER_API_DEFAULT_MODEL {default_model!r} is not one of {model_types}")
        service = ServiceSettings(
            model_types=model_types,
            default_model_type=default_model,
            interval=overrides.get("interval", "1m"),
            task=overrides.get("task", "binary"),
            stale_after_minutes=int(
                env.get("ANTMETER_API_STALE_AFTER_MINUTES") or overrides.get("stale_after_minutes", 10)
            ),
            promotion_metric=overrides.get("promotion_metric", "log_loss"),
            primary_horizon=int(overrides.get("primary_horizon", 5)),
            simulator=_simulator(env),
            # the pipeline's feature settings, so the API computes the features its champions were trained on
            feature_config=feature_config_from_settings(
                overrides.get("features") or {}, prefix="ANTMETER_SETTINGS.features"
            ),
        )
        return cls(
            store_url=env.get("ANTMETER_STORE_URL") or f"sqlite:///{data / 'market.sqlite'}",
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data / 'mlflow' / 'mlflow.db'}",
            cache_dir=data / "api" / "champions",
            dagster_url=(env.get("ANTMETER_API_DAGSTER_URL") or "http://127.0.0.1:3000").rstrip("/"),
            operator_token=env.get(OPERATOR_TOKEN_ENV) or None,
            max_body_bytes=_int_env(env, "ANTMETER_API_MAX_BODY_BYTES", 4_000_000),
            service=service,
        )
