"""Resource classes. Heavy libraries (torch, mlflow) are imported lazily inside methods so the
code location loads fast."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pandas as pd
from pydantic import Field

from antmeter.market.candles import DayWindow, closed_before, validate_candles

log = logging.getLogger("antmeter.resources")

REPO_ROOT = Path(__file__).resolve().parents[1]
_STORES: dict[str, Any] = {}
_STORES_LOCK = threading.Lock()
ALL_MODEL_TYPES = ("lstm", "transformer", "patchtst")


def default_data_dir() -> Path:
    """Where the embedded default keeps its files: ``$ANTMETER_DATA_DIR`` or ``<repo>/data``."""
    return Path(os.environ.get("ANTMETER_DATA_DIR") or REPO_ROOT / "data").resolve()


def enabled_model_types() -> list[str]:
    """The model types this deployment trains and serves: ``ANTMETER_MODEL_TYPES`` (comma-separated,
    e.g. ``lstm``), by default all of them. It also decides which model assets the code location has."""
    raw = os.environ.get("ANTMETER_MODEL_TYPES", "")
    chosen = list(dict.fromkeys(t.strip().lower() for t in raw.split(",") if t.strip()))
    unknown = [t for t in chosen if t not in ALL_MODEL_TYPES]
    if unknown:
        raise ValueError(
            f"ANTMETER_MODEL_TYPES: unknown model type(s) {unknown}; choose from {list(ALL_MODEL_TYPES)}"
        )
    return chosen or list(ALL_MODEL_TYPES)


class AntmeterSettings(dg.ConfigurableResource):
    """Pipeline-wide settings: symbols, horizons, model types, training window, promotion rule."""

    data_dir: str = Field(default_factory=lambda: str(default_data_dir()))
    interval: str = "1m"
    horizons: list[int] = [5, 10, 30]
    primary_horizon: int = 5
    task: str = "binary"
    model_types: list[str] = Field(default_factory=enabled_model_types)
    preset: str = "laptop"
    training_days: int = 14
    serving_days: int = 1
    promotion_metric: str = "log_loss"
    promotion_margin: float = 0.001
    stale_after_minutes: int = 10
    fee_bps: float = 10.0

    def path(self, *parts: str) -> Path:
        """An absolute path under the data directory (parents created)."""
        target = Path(self.data_dir).joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def feature_config(self):
        from antmeter.features.pipeline import FeatureConfig

        return FeatureConfig()

    def label_config(self):
        from antmeter.features.labels import LabelConfig

        return LabelConfig(horizons=tuple(self.horizons))


class MarketStoreResource(dg.ConfigurableResource):
    """The market store: SQLite file by default, PostgreSQL when ``ANTMETER_STORE_URL`` is set."""

    url: str = Field(default_factory=lambda: f"sqlite:///{default_data_dir() / 'market.sqlite'}")

    def get(self):
        """The process-wide ``MarketStore`` for this URL, migrated once."""
        from antmeter.market.store import MarketStore

        with _STORES_LOCK:
            if self.url not in _STORES:
                if self.url.startswith("sqlite:///"):
                    Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                store = MarketStore(self.url)
                store.migrate()
                _STORES[self.url] = store
            return _STORES[self.url]


class CandleSourceResource(dg.ConfigurableResource):
    """Where minute candles come from: ``simulator`` (default), ``binance`` or ``file``."""

    kind: str = "simulator"
    seed: int = 7
    anchor_date: str = "2024-01-01"
    predictable: bool = True
    signal_flip_at: str | None = None
    signal_strength: float | None = None  # None: the simulator's default
    binance_base_url: str = "https://api.binance.com"
    binance_timeout_s: float = 10.0
    file_dir: str | None = None
    plant_patterns: bool = False  # chart-pattern templates at known spans (ANTMETER_SIM_PATTERNS=on)

    def simulator_config(self):
        from antmeter.market.simulator import SimulatorConfig

        return SimulatorConfig(
            seed=self.seed,
            anchor_date=self.anchor_date,
            predictable=self.predictable,
            signal_flip_at=self.signal_flip_at,
            plant_patterns=self.plant_patterns,
            **({} if self.signal_strength is None else {"signal_strength": self.signal_strength}),
        )

    def fetch_day(
        self, symbol: str, day: dt.date | str, now: pd.Timestamp, interval: str = "1m"
    ) -> pd.DataFrame:
        """The closed candles of one UTC day for ``symbol`` (today's partition: up to ``now``)."""
        window = DayWindow.of(day)
        if self.kind == "simulator":
            from antmeter.market.simulator import simulate_day

            candles = simulate_day(symbol, window.start.date(), self.simulator_config()).candles
        elif self.kind == "binance":
            from antmeter.market.binance import BinanceConfig, BinanceKlinesClient

            client = BinanceKlinesClient(
                BinanceConfig(base_url=self.binance_base_url, timeout_s=self.binance_timeout_s)
            )
            candles = client.fetch_klines(symbol, interval, window.start, min(window.end, now), now=now)
        elif self.kind == "file":
            candles = self._read_file(symbol)
            in_day = (candles["open_time"] >= window.start) & (candles["open_time"] < window.end)
            candles = candles[in_day].reset_index(drop=True)
        else:
            raise ValueError(f"candle source kind must be simulator, binance or file, got {self.kind!r}")
        return validate_candles(closed_before(candles, now, interval), source=f"{self.kind}:{symbol}:{day}")

    def _read_file(self, symbol: str) -> pd.DataFrame:
        from antmeter.market.file_import import read_candle_file

        if not self.file_dir:
            raise ValueError("candle source 'file' needs file_dir (env ANTMETER_CANDLE_FILE_DIR)")
        for suffix in (".parquet", ".csv"):
            path = Path(self.file_dir) / f"{symbol}{suffix}"
            if path.exists():
                return read_candle_file(path)
        raise FileNotFoundError(f"no {symbol}.parquet or {symbol}.csv in {self.file_dir}")


class NewsSourceResource(dg.ConfigurableResource):
    """Where articles come from: ``simulator`` (offline default) or ``live`` (RSS + token APIs)."""

    kind: str = "simulator"
    seed: int = 11
    rss_feeds: list[str] | None = None
    cryptopanic_token: str | None = None
    newsapi_key: str | None = None
    ollama_url: str | None = None
    ollama_model: str = "llama3.2"

    def scorer(self):
        """The sentiment scorer: Ollama with lexicon fallback when configured, else the lexicon."""
        from antmeter.news.sentiment import LexiconScorer, OllamaScorer

        lexicon = LexiconScorer()
        if self.ollama_url:
            return OllamaScorer(base_url=self.ollama_url, model=self.ollama_model, fallback=lexicon)
        return lexicon


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking + registry. Default: a local SQLite-backed store under ``data/mlflow``."""

    tracking_uri: str = Field(
        default_factory=lambda: f"sqlite:///{default_data_dir() / 'mlflow' / 'mlflow.db'}"
    )
    # Only used when the tracking store is local; a tracking server decides its own artifact store.
    artifact_root: str | None = Field(
        default_factory=lambda: (default_data_dir() / "mlflow" / "artifacts").as_uri()
    )
    experiment: str = "antmeter"
    model_prefix: str = "antmeter"

    def registered_name(self, model_type: str) -> str:
        return f"{self.model_prefix}-{model_type}"

    def client(self):
        """An ``MlflowClient`` bound to this store; also points the fluent API at it."""
        import mlflow

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        client = mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        if client.get_experiment_by_name(self.experiment) is None:
            try:
                local = not self.tracking_uri.startswith(("http://", "https://"))
                client.create_experiment(
                    self.experiment, artifact_location=self.artifact_root if local else None
                )
            except Exception:  # another process created it first
                if client.get_experiment_by_name(self.experiment) is None:
                    raise
        mlflow.set_experiment(self.experiment)
        return client


class AlertWebhookResource(dg.ConfigurableResource):
    """Posts alerts as JSON to ``ANTMETER_ALERT_WEBHOOK_URL`` when it is set."""

    url: str | None = None
    timeout_s: float = 5.0

    def post(self, payload: dict[str, Any]) -> bool:
        """Send ``payload``; returns False (and logs) when no URL is configured or delivery fails."""
        if not self.url:
            log.warning("alert (no webhook configured): %s", json.dumps(payload, default=str))
            return False
        try:
            response = httpx.post(self.url, json=payload, timeout=self.timeout_s)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.error("alert webhook failed: %s", exc)
            return False
        return True


def _env_or(name: str, default: Any) -> Any:
    return dg.EnvVar(name) if os.environ.get(name) else default


def _env_float(name: str) -> float | None:
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def settings_overrides() -> dict[str, Any]:
    """``ANTMETER_SETTINGS``: a JSON object overriding fields of :class:`AntmeterSettings`, e.g.
    ``{"training_days": 7, "serving_days": 0, "preset": "ci"}`` (model types: ``ANTMETER_MODEL_TYPES``)."""
    raw = os.environ.get("ANTMETER_SETTINGS")
    if not raw:
        return {}
    try:
        overrides = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"ANTMETER_SETTINGS is not valid JSON: {exc}") from None
    if not isinstance(overrides, dict):
        raise ValueError(f"ANTMETER_SETTINGS must be a JSON object, got {type(overrides).__name__}")
    allowed = set(AntmeterSettings.model_fields) - {"data_dir", "model_types"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(
            f"ANTMETER_SETTINGS: unknown or not overridable setting(s) {unknown}; choose from "
            f"{sorted(allowed)} (data_dir: ANTMETER_DATA_DIR, model_types: ANTMETER_MODEL_TYPES)"
        )
    return overrides


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """The resources of the code location: embedded defaults, overridden by environment variables."""
    return {
        "settings": AntmeterSettings(
            data_dir=_env_or("ANTMETER_DATA_DIR", str(default_data_dir())), **settings_overrides()
        ),
        "store": MarketStoreResource(url=_env_or("ANTMETER_STORE_URL", MarketStoreResource().url)),
        "candles": CandleSourceResource(
            kind=_env_or("ANTMETER_CANDLE_SOURCE", "simulator"),
            binance_base_url=_env_or("ANTMETER_BINANCE_BASE_URL", "https://api.binance.com"),
            file_dir=_env_or("ANTMETER_CANDLE_FILE_DIR", None),
            signal_flip_at=_env_or("ANTMETER_SIM_SIGNAL_FLIP_AT", None),
            signal_strength=_env_float("ANTMETER_SIM_SIGNAL_STRENGTH"),
            plant_patterns=os.environ.get("ANTMETER_SIM_PATTERNS", "off") == "on",
        ),
        "news": NewsSourceResource(
            kind=_env_or("ANTMETER_NEWS_SOURCE", "simulator"),
            cryptopanic_token=_env_or("CRYPTOPANIC_TOKEN", None),
            newsapi_key=_env_or("NEWSAPI_KEY", None),
            ollama_url=_env_or("ANTMETER_OLLAMA_URL", None),
        ),
        "mlflow": MlflowResource(
            tracking_uri=_env_or("MLFLOW_TRACKING_URI", MlflowResource().tracking_uri),
            artifact_root=_env_or("ANTMETER_MLFLOW_ARTIFACT_ROOT", MlflowResource().artifact_root),
        ),
        "alerts": AlertWebhookResource(url=_env_or("ANTMETER_ALERT_WEBHOOK_URL", None)),
    }
