"""Resource classes. Heavy libraries (torch, mlflow) are imported lazily inside methods so the
code location loads fast."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pandas as pd
from pydantic import Field, field_validator

from antmeter.market.candles import DayWindow, closed_before, validate_candles
from antmeter.market.redaction import get_logger, redact, redact_url, register_secret
from antmeter.market.symbols import path_under, validate_symbol

log = get_logger("antmeter.resources")

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


class FeatureSettings(dg.Config):
    """The feature configuration as settings (launchpad, YAML, ``ANTMETER_SETTINGS`` JSON ``features``).

    One field per :class:`antmeter.features.pipeline.FeatureConfig` field, same names and defaults;
    ``null`` (or ``[]`` for lists) switches a feature off. ``custom`` takes dotted paths of plug-in
    feature functions (``"package.module:function"``).
    """

    rsi_windows: list[int] = [14]
    macd: list[int] | None = [12, 26, 9]
    bollinger: list[float] | None = [20, 2.0]
    ema_windows: list[int] = [9, 21, 50]
    sma_windows: list[int] = [10, 30]
    atr_window: int | None = 14
    adx_window: int | None = 14
    stoch: list[int] | None = [14, 3]
    mfi_window: int | None = 14
    cci_window: int | None = None
    vwap_window: int | None = 60
    obv_window: int | None = 60
    return_lags: list[int] = [1, 5, 15, 30, 60]
    volatility_windows: list[int] = [15, 60]
    volume_avg_window: int | None = 60
    include_sentiment: bool = True
    custom: list[str] = []

    def to_feature_config(self):
        """The validated ``FeatureConfig``; ValueError naming ``settings.features.<key>`` otherwise."""
        from antmeter.features.pipeline import feature_config_from_settings

        return feature_config_from_settings({name: getattr(self, name) for name in type(self).model_fields})


class AntmeterSettings(dg.ConfigurableResource):
    """Pipeline-wide settings: symbols, horizons, model types, training window, promotion rule."""

    data_dir: str = Field(default_factory=lambda: str(default_data_dir()))
    interval: str = "1m"  # candle interval: 1m, 5m, 15m, 1h, 4h or 1d
    horizons: list[int] = [5, 10, 30]  # in candles of the interval
    window: int = Field(default=60, ge=2)  # candles per sample: the models' input length
    sample_stride: int | None = Field(default=None, ge=1)  # candles between samples (None: the preset's)
    primary_horizon: int = 5
    task: str = "binary"
    model_types: list[str] = Field(default_factory=enabled_model_types)
    preset: str = "laptop"
    training_days: int = 14
    serving_days: int = 0
    promotion_metric: str = "log_loss"
    promotion_margin: float = 0.0
    promotion_level: float = 0.05
    promotion_min_effective_samples: float = 50.0
    # the newest share of the training window's sample times the gate scores on (more rows: more power)
    holdout_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    seeds: list[int] = [0]
    stale_after_minutes: int = 10
    fee_bps: float = 10.0
    entry_delay_candles: int = 0
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    hpo_trials: int = Field(default=0, ge=0)  # finished trials per study (0: no search, the default)
    hpo_minutes: float | None = Field(default=2.0, gt=0)  # no new trial starts after this
    hpo_storage_url: str | None = None  # default: the market store's database

    @field_validator("interval")
    @classmethod
    def _supported_interval(cls, value: str) -> str:
        from antmeter.market.candles import interval_timedelta

        try:
            interval_timedelta(value)
        except ValueError as exc:
            raise ValueError(f"settings.interval: {exc}") from None
        return value

    def path(self, *parts: str) -> Path:
        """An absolute path under the data directory (parents created)."""
        target = Path(self.data_dir).joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def stale_after(self) -> pd.Timedelta:
        """How old the newest candle's close may be: the next candle may come ``stale_after_minutes``
        late (``stale_after_minutes`` itself on 1-minute candles)."""
        from antmeter.market.candles import stale_limit

        return stale_limit(self.interval, self.stale_after_minutes)

    def gate_config(self):
        """The promotion gate's settings (per-row loss, level, non-inferiority margin)."""
        from antmeter.registry.promotion import GateConfig

        return GateConfig(
            metric=self.promotion_metric,
            horizon=self.primary_horizon,
            level=self.promotion_level,
            margin=self.promotion_margin,
            min_effective_samples=self.promotion_min_effective_samples,
            interval=self.interval,
        )

    def retrain_policy(self):
        """The retraining policy: ``ANTMETER_RETRAIN_POLICY`` (JSON fields of ``RetrainPolicy``) at this
        deployment's primary horizon and candle interval -- the one source for the report and the sensor."""
        return retrain_policy(self.primary_horizon, self.interval)

    def feature_config(self):
        """The feature configuration of these settings (``features``), validated."""
        return self.features.to_feature_config()

    def label_config(self):
        from antmeter.features.labels import LabelConfig

        return LabelConfig(horizons=tuple(self.horizons), interval=self.interval)


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
    binance_deadline_s: float = 300.0  # the whole fetch of one partition, retries and waits included
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
        return self.fetch_day_report(symbol, day, now, interval)[0]

    def fetch_day_report(
        self, symbol: str, day: dt.date | str, now: pd.Timestamp, interval: str = "1m"
    ) -> tuple[pd.DataFrame, tuple]:
        """(closed candles of one UTC day, exchange outages in it): outages are stretches the exchange
        confirmed it has no candles for (only the ``binance`` source can report them)."""
        validate_symbol(symbol)
        window = DayWindow.of(day)
        outages: tuple = ()
        if self.kind == "simulator":
            from antmeter.market.simulator import simulate_day

            candles = simulate_day(symbol, window.start.date(), self.simulator_config(), interval).candles
        elif self.kind == "binance":
            from antmeter.market.binance import BinanceConfig, BinanceKlinesClient

            config = BinanceConfig(
                base_url=self.binance_base_url,
                timeout_s=self.binance_timeout_s,
                deadline_s=self.binance_deadline_s,
            )
            with BinanceKlinesClient(config) as client:
                report = client.fetch_klines_report(
                    symbol, interval, window.start, min(window.end, now), now=now
                )
            candles, outages = report.candles, report.outages
        elif self.kind == "file":
            candles = self._read_file(symbol, interval)
            in_day = (candles["open_time"] >= window.start) & (candles["open_time"] < window.end)
            candles = candles[in_day].reset_index(drop=True)
        else:
            raise ValueError(f"candle source kind must be simulator, binance or file, got {self.kind!r}")
        source = f"{self.kind}:{symbol}:{day}"
        return validate_candles(closed_before(candles, now, interval), source, interval, now=now), outages

    def _read_file(self, symbol: str, interval: str) -> pd.DataFrame:
        from antmeter.market.file_import import read_candle_file

        if not self.file_dir:
            raise ValueError("candle source 'file' needs file_dir (env ANTMETER_CANDLE_FILE_DIR)")
        for suffix in (".parquet", ".csv"):
            path = path_under(self.file_dir, f"{validate_symbol(symbol)}{suffix}")
            if path.exists():
                return read_candle_file(path, interval)  # the wall clock bounds open times
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
    """Posts alerts as JSON to ``ANTMETER_ALERT_WEBHOOK_URL`` when it is set (a secret: never logged).

    ``thresholds`` (``ANTMETER_ALERT_THRESHOLDS``, JSON horizon -> confidence) decides which new
    predictions are confident signals (see :mod:`antmeter.live.alerts`)."""

    url: str | None = None
    timeout_s: float = 5.0
    thresholds: str | None = None

    def post(self, payload: dict[str, Any]) -> bool:
        """Send ``payload``; returns False (and logs) when no URL is configured or delivery fails."""
        if not self.url:
            log.warning("alert (no webhook configured): %s", json.dumps(payload, default=str))
            return False
        register_secret(self.url)  # a Slack-style webhook URL is itself the secret
        try:
            response = httpx.post(self.url, json=payload, timeout=self.timeout_s)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.HTTPStatusError):
                problem = f"HTTP {exc.response.status_code}"
            else:
                problem = redact(f"{type(exc).__name__}: {exc}")
            log.error("alert webhook %s failed: %s", redact_url(self.url), problem)
            return False
        return True

    def signal(self, predictions: pd.DataFrame, state_dir: Path):
        """Post the confident signals among new prediction rows in the background; (new, alerter)."""
        from antmeter.live.alerts import alert_on_predictions, parse_thresholds

        return alert_on_predictions(
            predictions, parse_thresholds(self.thresholds), self.url, state_dir, self.timeout_s
        )


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


def retrain_policy(primary_horizon: int | None = None, interval: str | None = None):
    """``ANTMETER_RETRAIN_POLICY`` as a ``RetrainPolicy``; its horizon and candle interval default to
    ``primary_horizon`` / ``interval`` (the settings'), unless the JSON sets them."""
    from antmeter.live.policy import RetrainPolicy

    raw = os.environ.get("ANTMETER_RETRAIN_POLICY") or "{}"
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"ANTMETER_RETRAIN_POLICY is not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ValueError(f"ANTMETER_RETRAIN_POLICY must be a JSON object, got {raw!r}")
    unknown = sorted(set(values) - set(RetrainPolicy.__dataclass_fields__))
    if unknown:
        raise ValueError(
            f"ANTMETER_RETRAIN_POLICY: unknown field(s) {unknown}; choose from "
            f"{sorted(RetrainPolicy.__dataclass_fields__)}"
        )
    defaults = {"horizon": primary_horizon, "interval": interval}
    return RetrainPolicy(**{k: v for k, v in defaults.items() if v is not None}, **values)


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
    if "features" in overrides:
        features = overrides["features"]
        if not isinstance(features, dict):
            raise ValueError(f"ANTMETER_SETTINGS: features must be a JSON object, got {features!r}")
        bad = sorted(set(features) - set(FeatureSettings.model_fields))
        if bad:
            raise ValueError(
                f"ANTMETER_SETTINGS: unknown feature setting(s) {['features.' + k for k in bad]}; "
                f"choose from {sorted(FeatureSettings.model_fields)}"
            )
    return overrides


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """The resources of the code location: embedded defaults, overridden by environment variables."""
    for secret in ("CRYPTOPANIC_TOKEN", "NEWSAPI_KEY", "ANTMETER_ALERT_WEBHOOK_URL"):
        register_secret(os.environ.get(secret))
    return {
        "settings": AntmeterSettings(
            data_dir=_env_or("ANTMETER_DATA_DIR", str(default_data_dir())), **settings_overrides()
        ),
        "store": MarketStoreResource(url=_env_or("ANTMETER_STORE_URL", MarketStoreResource().url)),
        "candles": CandleSourceResource(
            kind=_env_or("ANTMETER_CANDLE_SOURCE", "simulator"),
            binance_base_url=_env_or("ANTMETER_BINANCE_BASE_URL", "https://api.binance.com"),
            binance_deadline_s=_env_float("ANTMETER_BINANCE_DEADLINE_S") or 300.0,
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
        "alerts": AlertWebhookResource(
            url=_env_or("ANTMETER_ALERT_WEBHOOK_URL", None),
            thresholds=_env_or("ANTMETER_ALERT_THRESHOLDS", None),
        ),
    }
