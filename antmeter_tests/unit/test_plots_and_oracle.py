"""What users look at: narrow tables, embedded plots within the size limit, and the simulator's
oracle ceiling scored on the same sample rows as the models."""

from __future__ import annotations

import base64
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from antmeter.features.labels import LabelConfig, compute_labels
from antmeter.learn import plots
from antmeter.learn.datasets import DatasetSpec, build_samples
from antmeter.learn.oracle import oracle_metrics
from antmeter.market.simulator import SimulatorConfig, simulate_range

HORIZONS = (5, 10, 30)


def _tidy() -> pd.DataFrame:
    rows = []
    for model in ("lstm", "majority", "oracle"):
        for horizon in HORIZONS:
            for metric in plots.DEFAULT_METRICS:
                if model == "oracle" and metric != "accuracy":
                    continue
                rows.append(
                    {"model": model, "horizon": horizon, "metric": metric, "value": 0.5 + horizon / 1e3}
                )
    return pd.DataFrame(rows)


def test_metrics_tables_are_one_per_horizon_and_narrow():
    text = plots.metrics_markdown(_tidy())
    parts = text.split("\n\n")
    assert parts[0::2] == ["**5 min**", "**10 min**", "**30 min**"]
    for table in parts[1::2]:
        lines = table.splitlines()
        assert [c.strip() for c in lines[0].split("|")[1:-1]] == ["model", *plots.DEFAULT_METRICS]
        assert [line.split("|")[1].strip() for line in lines[2:]] == ["lstm", "majority", "oracle"]
        assert "nan" not in table  # the oracle's missing metrics are blank
        assert max(map(len, lines)) < 160


def test_plots_cover_every_horizon_and_embed_under_the_limit(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(400, len(HORIZONS)))
    p_up = rng.uniform(size=(400, len(HORIZONS)))
    proba = np.stack([1 - p_up, p_up], axis=-1)
    paths = [
        plots.plot_confusion(y, proba, HORIZONS, tmp_path / "c.png", "lstm holdout"),
        plots.plot_calibration(y, proba, HORIZONS, tmp_path / "k.png", "lstm holdout"),
        plots.plot_predictions_vs_outcomes(
            p_up - 0.5, rng.normal(size=p_up.shape), HORIZONS, tmp_path / "p.png", "x"
        ),
    ]
    for path in paths:
        markdown = plots.image_markdown(path, "plot")
        png = base64.b64decode(markdown.split("base64,", 1)[1].rstrip(")"))
        assert png.startswith(b"\x89PNG") and len(png) <= plots.MAX_EMBEDDED_BYTES
    # a picture over the limit is shrunk, not dropped
    small = plots.image_markdown(paths[0], "plot", max_bytes=8_000)
    assert len(base64.b64decode(small.split("base64,", 1)[1].rstrip(")"))) <= 8_000
    assert plots.class_names(2) == ("not up", "up") and plots.class_names(3) == ("down", "flat", "up")


def test_drift_table_is_sorted_by_psi_with_symbol_model_and_integer_counts():
    drift = pd.DataFrame(
        {
            "feature": ["a", "b", "c"],
            "psi": [0.01, 0.3, 0.1],
            "status": ["ok", "alert", "watch"],
            "n_reference": [100.0, 100.0, 100.0],
            "n_current": [60.0, 60.0, 60.0],
            "noise_floor": [0.02, 0.02, 0.02],
        }
    )
    lines = plots.drift_markdown(drift, ["BTCUSDT"], ["antmeter-lstm"]).splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:4]] == ["symbol", "model", "feature"]
    assert [line.split("|")[3].strip() for line in lines[2:]] == ["b", "c", "a"]
    assert {tuple(c.strip() for c in line.split("|")[6:8]) for line in lines[2:]} == {("100", "60")}


def test_nested_results_become_a_long_table():
    pnl = {"lstm v1 BTCUSDT": {"fee_bps": 10.0, "strategy": {"net_bps": 1.23456, "sharpe": 0.5}}}
    lines = plots.long_markdown(pnl, ("series", "book", "field")).splitlines()
    body = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    assert body == [
        ["lstm v1 BTCUSDT", "fee_bps", "", "10"],
        ["lstm v1 BTCUSDT", "strategy", "net_bps", "1.2346"],
        ["lstm v1 BTCUSDT", "strategy", "sharpe", "0.5"],
    ]


def _simulated_samples(predictable: bool):
    config = SimulatorConfig(seed=7, predictable=predictable)
    day = simulate_range("BTCUSDT", dt.date(2024, 1, 2), dt.date(2024, 1, 3), config)
    candles = day.candles
    frame = compute_labels(candles, LabelConfig(horizons=HORIZONS))
    frame["ret"] = np.log(candles["close"]).diff().to_numpy()
    samples = build_samples({"BTCUSDT": frame}, ["ret"], DatasetSpec(window=10, horizons=HORIZONS))
    return samples, config


@pytest.mark.parametrize("predictable", [True, False])
def test_oracle_accuracy_on_the_same_rows(predictable):
    """The planted signal gives the oracle ~0.55-0.59 at 5 minutes (the simulator's documented
    ceiling); without it the oracle is a coin. Scored against the samples' own labels."""
    samples, config = _simulated_samples(predictable)
    rows = np.arange(len(samples))
    ceiling = oracle_metrics(samples, rows, config).set_index("horizon")["value"]
    assert list(ceiling.index) == list(HORIZONS)
    if predictable:
        assert 0.54 < ceiling[5] < 0.62, ceiling
    else:
        assert abs(ceiling[5] - 0.5) < 0.03, ceiling
    # a subset is scored on that subset only
    half = oracle_metrics(samples, rows[: len(rows) // 2], config).set_index("horizon")["value"]
    assert not np.allclose(half.to_numpy(), ceiling.to_numpy())


def test_oracle_on_verified_rows_matches_the_simulators_ceiling():
    """Rows given by (symbol, candle, horizon, realized direction), as the verification report has them:
    on every row of two days the per-row calls average to the simulator's own ``bayes_ceiling``."""
    from antmeter.learn.oracle import oracle_accuracy_of_rows
    from antmeter.market.simulator import bayes_ceiling

    config = SimulatorConfig(seed=7)
    day = simulate_range("BTCUSDT", dt.date(2024, 1, 2), dt.date(2024, 1, 3), config)
    close = day.candles.set_index("open_time")["close"]
    frames = []
    for horizon in (5, 30):
        future = close.shift(-horizon).dropna()
        frames.append(
            pd.DataFrame(
                {
                    "symbol": "BTCUSDT",
                    "open_time": future.index,
                    "horizon_min": horizon,
                    "realized_up": (np.log(future / close.loc[future.index]) > 0).astype(int).to_numpy(),
                }
            )
        )
    rows = pd.concat(frames, ignore_index=True)
    correct = oracle_accuracy_of_rows(rows, config)
    expected = bayes_ceiling(day.hidden, day.candles, (5, 30))
    for horizon in (5, 30):
        assert correct[rows["horizon_min"] == horizon].mean() == pytest.approx(expected[horizon], abs=1e-12)
