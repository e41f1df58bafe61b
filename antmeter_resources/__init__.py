"""Typed Dagster resources for Antmeter: the store, candle and news sources, MLflow, settings.

Every resource is a ``ConfigurableResource`` whose defaults are the embedded, offline setup
(simulated market, SQLite store, local MLflow store under ``data/``); a deployment overrides
them through environment variables (see :func:`resources_from_env`). Secrets (API tokens,
webhook URLs, database passwords) are read only from environment variables.
"""

from antmeter_resources.resources import (
    ALL_MODEL_TYPES,
    AlertWebhookResource,
    AntmeterSettings,
    CandleSourceResource,
    FeatureSettings,
    MarketStoreResource,
    MlflowResource,
    NewsSourceResource,
    default_data_dir,
    enabled_model_types,
    resources_from_env,
    settings_overrides,
)

__all__ = [
    "ALL_MODEL_TYPES",
    "AlertWebhookResource",
    "AntmeterSettings",
    "FeatureSettings",
    "CandleSourceResource",
    "MarketStoreResource",
    "MlflowResource",
    "NewsSourceResource",
    "default_data_dir",
    "enabled_model_types",
    "resources_from_env",
    "settings_overrides",
]
