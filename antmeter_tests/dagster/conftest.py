"""Fixtures for the Dagster-level tests: an ephemeral instance with the ``symbols`` partitions, resources
pointing at a tmp data directory and a real market store, and helpers to materialize and inspect runs."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from antmeter.market.store import OHLCV, MarketStore
from antmeter_assets.partitions import CLOCK_SETTINGS
from antmeter_resources import (
    AlertWebhookResource,
    AntmeterSettings,
    CandleSourceResource,
    MarketStoreResource,
    MlflowResource,
    NewsSourceResource,
)
from antmeter_resources import resources as resources_module

SYMBOL = "BTCUSDT"


def symbol_day(day: str, symbol: str = SYMBOL) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day, "symbol": symbol})


@dataclass
class Pipeline:
    """An ephemeral Dagster instance plus the resources of one test (tmp data dir, real store)."""

    instance: dg.DagsterInstance
    data_dir: Path
    store_url: str
    resources: dict[str, dg.ConfigurableResource] = field(default_factory=dict)

    def materialize(
        self, assets: Sequence[dg.AssetsDefinition], partition_key=None, run_config=None, **overrides
    ) -> dg.ExecuteInProcessResult:
        """Materialize ``assets`` in one run (errors are recorded, not raised); ``overrides`` replace resources."""
        return dg.materialize(
            assets,
            partition_key=partition_key,
            run_config=run_config,
            instance=self.instance,
            resources={**self.resources, **overrides},
            raise_on_error=False,
        )

    def use_candles(self, candles: CandleSourceResource) -> None:
        self.resources["candles"] = candles

    def market(self) -> MarketStore:
        store = MarketStore(self.store_url)
        store.migrate()
        return store

    def stored_rows(self, symbol: str = SYMBOL) -> int:
        return self.market().candle_stats(symbol, "1m")["rows"]

    def insert_raw_candles(self, rows: list[dict], symbol: str = SYMBOL) -> None:
        """Write rows straight into the ``ohlcv`` table, bypassing validation (a corrupt store)."""
        engine = sa.create_engine(self.store_url)
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.insert(OHLCV),
                    [
                        {
                            "symbol": symbol,
                            "interval": "1m",
                            "source": "corrupt",
                            "ingested_at": pd.Timestamp.now(tz="UTC").floor("s"),
                            **row,
                        }
                        for row in rows
                    ],
                )
        finally:
            engine.dispose()


@contextlib.contextmanager
def lstm_pipeline(
    tmp: Path, symbols: Sequence[str], policy: dict, candles: CandleSourceResource
) -> Iterator[tuple[Pipeline, pytest.MonkeyPatch]]:
    """An LSTM-only ``ci`` pipeline (two training days) on its own ephemeral instance, the retrain
    policy set through ``ANTMETER_RETRAIN_POLICY``; the monkeypatch moves the clock (``ANTMETER_NOW``)."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("ANTMETER_RETRAIN_POLICY", json.dumps(policy))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("symbols", list(symbols))
    pipeline = make_pipeline(
        instance, tmp / "data", f"sqlite:///{tmp / 'market.sqlite'}", model_types=["lstm"], preset="ci",
        training_days=2,
    )  # fmt: skip
    pipeline.use_candles(candles)
    try:
        yield pipeline, monkeypatch
    finally:
        monkeypatch.undo()
        instance.dispose()


def train_lstm(pipeline: Pipeline, run_config: dict | None = None) -> dict:
    """The dataset, the LSTM candidate and its gate in one run; returns the gate's metadata."""
    from antmeter_assets import models

    names = ("training_dataset", "lstm_candidate", "lstm_champion")
    trained = pipeline.materialize(
        [a for a in models.model_assets if a.key.path[0] in names], run_config=run_config
    )
    assert trained.success, trained.get_step_failure_events()
    (gate,) = trained.asset_materializations_for_node("lstm_champion")
    return {k: v.value for k, v in gate.metadata.items()}


def harvest_days(
    pipeline: Pipeline, days: Sequence[str], symbols: Sequence[str], featurize: Sequence[str] = ()
) -> None:
    """Harvest ``days`` of every symbol, and build features + labels of the ``featurize`` days."""
    from antmeter_assets import features, market

    for day in days:
        for symbol in symbols:
            assert pipeline.materialize([market.ohlcv], symbol_day(day, symbol)).success
            if day in featurize:
                result = pipeline.materialize([features.features, features.labels], symbol_day(day, symbol))
                assert result.success


def evaluate_retrain_sensor(pipeline: Pipeline, cursor: str | None = None):
    """One evaluation of ``retrain_on_drift`` on the pipeline's instance: (its result, the new cursor)."""
    from antmeter_assets import automation

    context = dg.build_sensor_context(
        instance=pipeline.instance,
        cursor=cursor,
        resources={k: pipeline.resources[k] for k in ("settings", "store")},
    )
    return automation.retrain_on_drift(context), context.cursor


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    """The run's asset check evaluations by check name."""
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def step_error(result: dg.ExecuteInProcessResult) -> str:
    """The messages of the run's (first) step failure and of the errors that caused it."""
    failures = result.get_step_failure_events()
    assert failures, "expected a failed step"
    error, messages = failures[0].step_failure_data.error, []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def write_candle_csv(frame: pd.DataFrame, directory: Path, symbol: str = SYMBOL) -> Path:
    """A candle file in the file source's layout (``<dir>/<SYMBOL>.csv``, ISO open times)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{symbol}.csv"
    frame.to_csv(path, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    return path


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as ephemeral:
        ephemeral.add_dynamic_partitions("symbols", [SYMBOL])
        yield ephemeral


def make_pipeline(instance: dg.DagsterInstance, data_dir: Path, store_url: str, **settings) -> Pipeline:
    return Pipeline(
        instance=instance,
        data_dir=data_dir,
        store_url=store_url,
        resources={
            "settings": AntmeterSettings(data_dir=str(data_dir), **settings),
            "store": MarketStoreResource(url=store_url),
            "candles": CandleSourceResource(kind="simulator"),
            "news": NewsSourceResource(kind="simulator"),
            "mlflow": MlflowResource(
                tracking_uri=f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}",
                artifact_root=(data_dir / "mlflow" / "artifacts").as_uri(),
            ),
            "alerts": AlertWebhookResource(),
        },
    )


@pytest.fixture
def pipeline(instance, tmp_path, sqlite_url) -> Pipeline:
    """Simulator candles into a SQLite market store."""
    return make_pipeline(instance, tmp_path / "data", sqlite_url)


@pytest.fixture(autouse=True)
def _release_market_stores() -> Iterator[None]:
    """The store resource caches one engine per URL for the process; drop this test's engines afterwards."""
    yield
    with resources_module._STORES_LOCK:
        for store in resources_module._STORES.values():
            store.engine.dispose()
        resources_module._STORES.clear()


@pytest.fixture(autouse=True)
def _wall_clock(monkeypatch) -> None:
    """Tests run on the wall clock unless they pin one (``ANTMETER_NOW``) themselves."""
    for name in CLOCK_SETTINGS:
        monkeypatch.delenv(name, raising=False)
