"""Typed Dagster resources for Antmeter: the store, candle and news sources, MLflow, settings.

Every resource is a ``ConfigurableResource`` whose defaults are the embedded, offline setup
(simulated market, SQLite store, local MLflow store under ``data/``); a deployment overrides
them through environment variables (see :func:`resources_from_env`). Secrets (API tokens,
webhook URLs, database passwords) are read only from environment variables.
"""

from antmeter_resources.resources import (
    AlertWebhookResource,
    AntmeterSettings,
    CandleSourceResource,
    MarketStoreResource,
    MlflowResource,
    NewsSourceResource,
    default_data_dir,
    resources_from_env,
)

__all__ = [
    "AlertWebhookResource",
    "AntmeterSettings",
    "CandleSourceResource",
    "MarketStoreResource",
    "MlflowResource",
    "NewsSourceResource",
    "default_data_dir",
    "resources_from_env",
]
