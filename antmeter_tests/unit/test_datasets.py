"""Windowed samples: contents, zero-copy windows, exclusion counts, train-only scaling, schema, persistence."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from antmeter.learn.datasets import (
    SCALER_FILE,
    SCHEMA_FILE,
    DatasetSpec,
    FeatureScaler,
    FeatureSchema,
    FeatureSchemaError,
    WindowedDataset,
    build_samples,
)
from antmeter_tests.unit.synthetic_frames import FEATURES, synthetic_frame


def _two_symbols() -> dict[str, pd.DataFrame]:
    btc = synthetic_frame(120, seed=1)
    eth = synthetic_frame(90, seed=2, start="2024-03-01 00:20")
    eth = eth.drop(index=[40, 41]).reset_index(drop=True)  # a two-minute gap
    return {"BTCUSDT": btc, "ETHUSDT": eth}


def test_windows_equal_the_source_rows_and_targets_equal_the_labels():
    frames = _two_symbols()
    spec = DatasetSpec(window=7, horizons=(5, 10), task="three_class")
    samples = build_samples(frames, FEATURES, spec)
    ds = samples.view()
    assert len(ds) == len(samples) > 100
    assert samples.symbols == ("BTCUSDT", "ETHUSDT")
    assert np.all(np.diff(samples.sample_time.astype(np.int64)) >= 0), "samples ordered by time"
    for i in range(len(ds)):
        x, y_class, y_reg, symbol_id = ds[i]
        frame = frames[samples.symbols[int(symbol_id)]]
        t = int(
            np.flatnonzero(frame["open_time"].to_numpy() == pd.Timestamp(samples.sample_time[i], tz="UTC"))[0]
        )
        expected = frame[FEATURES].to_numpy(dtype=np.float32)[t - 6 : t + 1]
        assert x.dtype == torch.float32 and tuple(x.shape) == (7, len(FEATURES))
        np.testing.assert_array_equal(x.numpy(), expected)
        assert (frame["open_time"].iloc[t] - frame["open_time"].iloc[t - 6]) == pd.Timedelta(minutes=6)
        np.testing.assert_array_equal(
            y_class.numpy(), frame.loc[t, ["direction3_5", "direction3_10"]].to_numpy(np.int64)
        )
        np.testing.assert_allclose(
            y_reg.numpy(), frame.loc[t, ["fwd_return_5", "fwd_return_10"]].to_numpy(np.float32)
        )
        assert (
            y_class.dtype == torch.int64 and y_reg.dtype == torch.float32 and symbol_id.dtype == torch.int64
        )


def test_windows_are_views_of_one_shared_matrix():
    frames = _two_symbols()
    samples = build_samples(frames, FEATURES, DatasetSpec(window=9, horizons=(5,)))
    n_rows = sum(len(f) for f in frames.values())
    assert samples.X.shape == (n_rows, len(FEATURES)) and samples.X.dtype == np.float32
    assert samples.X.flags.c_contiguous
    ds = samples.view(np.arange(10, 40))
    for i in (0, 7, 29):
        window = ds[i][0].numpy()
        assert np.shares_memory(window, samples.X)
        assert window.strides == samples.X.strides
    strided = ds.windows()
    assert np.shares_memory(strided, samples.X)
    assert strided.strides == (samples.X.strides[0], samples.X.strides[0], samples.X.strides[1])
    x, y_class, y_reg, symbol_id = ds.batch()
    assert x.shape == (30, 9, len(FEATURES))
    np.testing.assert_array_equal(x, np.stack([ds[i][0].numpy() for i in range(30)]))
    np.testing.assert_array_equal(y_class, samples.y_class[10:40])
    np.testing.assert_array_equal(ds.last_rows(), x[:, -1, :])
    loader = DataLoader(ds, batch_size=8, shuffle=False)
    xb, yb, rb, sb = next(iter(loader))
    assert (
        xb.shape == (8, 9, len(FEATURES)) and yb.shape == (8, 1) and rb.shape == (8, 1) and sb.shape == (8,)
    )
    np.testing.assert_array_equal(xb.numpy(), x[:8])


def _counting_frame() -> pd.DataFrame:
    """50 minutes, minute 20 missing, NaN feature at minute 35, missing labels at minutes 45..49."""
    times = pd.date_range("2024-03-01", periods=50, freq="min", tz="UTC")
    frame = pd.DataFrame({"open_time": times, "a": np.arange(50.0), "b": np.arange(50.0) * 2})
    frame["fwd_return_3"] = 0.01
    frame["up_3"] = 1.0
    frame.loc[35, "a"] = np.nan
    frame.loc[45:, "up_3"] = np.nan
    return frame.drop(index=20).reset_index(drop=True)


def test_exclusion_counts_by_reason():
    frame = _counting_frame()
    samples = build_samples({"X": frame}, ["a", "b"], DatasetSpec(window=5, horizons=(3,)))
    # warmup: minutes 0..3; gap: windows of minutes 21..24 cross minute 20; NaN at 35 spoils windows ending
    # 35..39; minutes 45..49 are unlabeled.
    assert samples.excluded == {"warmup": 4, "gap": 4, "nan_features": 5, "unlabeled": 5, "stride": 0}
    assert len(samples) == 49 - 18
    minutes = (samples.sample_time - np.datetime64("2024-03-01T00:00")).astype("timedelta64[m]").astype(int)
    expected = [m for m in range(50) if m >= 4 and not 20 <= m <= 24 and not 35 <= m <= 39 and m < 45]
    assert minutes.tolist() == expected
    strided = build_samples({"X": frame}, ["a", "b"], DatasetSpec(window=5, stride=2, horizons=(3,)))
    assert strided.excluded["stride"] == sum(m % 2 for m in expected)
    assert (strided.sample_time.astype("datetime64[m]").astype(np.int64) % 2 == 0).all()
    assert strided.metadata()["excluded_by_symbol"]["X"]["stride"] == strided.excluded["stride"]


def test_a_row_failing_several_checks_counts_once_under_the_first():
    frame = _counting_frame()
    frame.loc[frame["open_time"] >= pd.Timestamp("2024-03-01 00:36", tz="UTC"), "up_3"] = np.nan
    samples = build_samples({"X": frame}, ["a", "b"], DatasetSpec(window=5, horizons=(3,)))
    # minutes 36..39 were NaN-feature rows already; only 40..44 become newly unlabeled (plus 45..49)
    assert samples.excluded["nan_features"] == 5 and samples.excluded["unlabeled"] == 10
    assert sum(samples.excluded.values()) + len(samples) == len(frame)


def test_scaler_is_fitted_on_training_window_rows_only():
    frame = synthetic_frame(200, seed=3)
    frame.loc[150:, "noise_0"] += 50.0  # a level shift only in later rows
    samples = build_samples({"S": frame}, FEATURES, DatasetSpec(window=10, horizons=(5,)))
    train = np.arange(0, 60)
    scaler = samples.fit_scaler(train)
    ends = samples.end_index[train]
    rows = sorted({r for e in ends for r in range(e - 9, e + 1)})
    np.testing.assert_array_equal(samples.window_rows(train), rows)
    np.testing.assert_allclose(scaler.mean, samples.X[rows].astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scaler.std, samples.X[rows].astype(np.float64).std(axis=0), rtol=1e-12)
    assert scaler.mean[FEATURES.index("noise_0")] < 1.0, "later shifted rows must not leak into the fit"
    scaled = samples.scaled(scaler)
    assert not np.shares_memory(scaled.X, samples.X)
    assert scaled.end_index is samples.end_index and scaled.y_class is samples.y_class
    np.testing.assert_allclose(scaled.X[rows].mean(axis=0), 0.0, atol=1e-5)
    assert scaled.X[200 - 40 :, FEATURES.index("noise_0")].mean() > 10.0
    with pytest.raises(ValueError, match="already scaled"):
        scaled.scaled(scaler)


def test_constant_feature_gets_unit_std():
    schema = FeatureSchema(("a", "b"), ("float64", "float64"))
    scaler = FeatureScaler.fit(np.array([[1.0, 5.0], [3.0, 5.0]]), schema)
    np.testing.assert_array_equal(scaler.std, [1.0, 1.0])
    np.testing.assert_array_equal(scaler.transform(np.array([[2.0, 5.0]])), [[0.0, 0.0]])


def test_schema_verify_names_every_problem():
    schema = FeatureSchema(("a", "b", "c"), ("float64", "float64", "float32"))
    good = pd.DataFrame({"open_time": pd.to_datetime([0], utc=True), "a": [1.0], "b": [2.0]})
    good["c"] = np.float32(3.0)
    schema.verify(good)
    schema.verify(["a", "b", "c"])
    with pytest.raises(FeatureSchemaError, match=r"missing \['c'\]"):
        schema.verify(["a", "b"])
    with pytest.raises(FeatureSchemaError, match=r"extra \['d'\]"):
        schema.verify(["a", "b", "c", "d"])
    with pytest.raises(
        FeatureSchemaError, match=r"reordered: 'a' at position 1 \(expected 0\), 'b' at position 0"
    ):
        schema.verify(["b", "a", "c"])
    with pytest.raises(FeatureSchemaError, match=r"mistyped: 'c' is float64 \(expected float32\)"):
        schema.verify(good.astype({"c": "float64"}))
    with pytest.raises(FeatureSchemaError, match=r"missing \['b'\]; extra \['x'\]"):
        schema.verify({"a": "float64", "x": "float64", "c": "float32"})
    assert FeatureSchema.from_json(schema.to_json()) == schema
    with pytest.raises(FeatureSchemaError, match="'dtypes'"):
        FeatureSchema.from_json('{"names": ["a"]}')


def test_scaler_save_load_round_trip_without_pickle(tmp_path):
    schema = FeatureSchema(("a", "b"), ("float64", "float64"))
    scaler = FeatureScaler.fit(np.random.default_rng(0).normal(size=(50, 2)) * [1, 10] + [3, -2], schema)
    scaler.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted([SCALER_FILE, SCHEMA_FILE])
    assert json.loads((tmp_path / "model" / SCHEMA_FILE).read_text())["names"] == ["a", "b"]
    loaded = FeatureScaler.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.mean, scaler.mean)
    np.testing.assert_array_equal(loaded.std, scaler.std)
    assert loaded.schema == schema
    # an npz carrying a pickled object array is refused instead of unpickled
    np.savez(tmp_path / "model" / SCALER_FILE, mean=np.array([object(), 1], dtype=object), std=scaler.std)
    with pytest.raises(ValueError, match="allow_pickle"):
        FeatureScaler.load(tmp_path / "model")


def test_scaled_set_rejects_a_scaler_of_other_features():
    frame = synthetic_frame(60, seed=4)
    samples = build_samples({"S": frame}, FEATURES, DatasetSpec(window=5, horizons=(5,)))
    other = FeatureScaler.fit(
        np.ones((3, 4)), FeatureSchema(("x", "signal", "noise_0", "noise_1"), ("float64",) * 4)
    )
    with pytest.raises(FeatureSchemaError, match=r"missing \['x'\]"):
        samples.scaled(other)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns="up_5"), r"symbol 'S': missing column\(s\) \['up_5'\]"),
        (lambda f: f.assign(open_time=f["open_time"].dt.tz_localize(None)), "timezone-aware"),
        (lambda f: f.iloc[[0, 2, 1, *range(3, len(f))]], r"row 2, field 'open_time'"),
        (lambda f: f.assign(up_5=f["up_5"].where(f.index != 12, 3.0)), r"row 12, field 'up_5'"),
        (lambda f: f.astype({"noise_0": "float32"}), r"symbol 'S'.*'noise_0' is float32"),
    ],
)
def test_bad_frames_are_rejected_with_the_row_and_field(mutate, message):
    reference = synthetic_frame(40, seed=5)
    frames = {"R": reference, "S": mutate(synthetic_frame(40, seed=6))}
    with pytest.raises(ValueError, match=message):
        build_samples(frames, FEATURES, DatasetSpec(window=4, horizons=(5,)))


def test_spec_validation():
    with pytest.raises(ValueError, match="task"):
        DatasetSpec(task="ternary")
    with pytest.raises(ValueError, match="window"):
        DatasetSpec(window=0)
    with pytest.raises(ValueError, match="duplicates"):
        DatasetSpec(horizons=(5, 5))
    assert DatasetSpec(task="three_class").class_columns() == [
        "direction3_5",
        "direction3_10",
        "direction3_30",
    ]


def test_dataset_over_an_index_subset():
    samples = build_samples(
        {"S": synthetic_frame(80, seed=7)}, FEATURES, DatasetSpec(window=5, horizons=(5,))
    )
    subset = np.array([3, 17, 40])
    ds = WindowedDataset(samples, subset)
    assert len(ds) == 3
    np.testing.assert_array_equal(ds.sample_time, samples.sample_time[subset])
    np.testing.assert_array_equal(
        ds[1][0].numpy(), samples.X[samples.end_index[17] - 4 : samples.end_index[17] + 1]
    )
    with pytest.raises(IndexError):
        samples.view([len(samples)])


def test_too_short_history_gives_an_empty_set_that_still_batches():
    samples = build_samples({"S": synthetic_frame(3, seed=8)}, FEATURES, DatasetSpec(window=5, horizons=(5,)))
    assert len(samples) == 0 and samples.excluded["warmup"] == 3
    x, y_class, y_reg, symbol_id = samples.view().batch()
    assert x.shape == (0, 5, len(FEATURES)) and y_class.shape == (0, 1) and symbol_id.shape == (0,)


@pytest.mark.parametrize("interval", ["1m", "4h", "1d"])
def test_purge_and_embargo_cover_the_window_and_horizon_on_the_clock_of_the_interval(interval):
    """Windows and horizons count candles; the folds purge and embargo their span in time, so a 4h
    sample's label (2 candles: 8 hours) never overlaps the validation windows it is trained beside."""
    from antmeter.learn.recipe import RecipeConfig, split

    step = pd.Timedelta(interval)
    frame = synthetic_frame(400, seed=5, horizons=(2,))
    frame["open_time"] = pd.date_range("2023-01-01", periods=len(frame), freq=step, tz="UTC").as_unit("ns")
    spec = DatasetSpec(window=6, horizons=(2,), interval=interval)
    assert (spec.window_minutes, spec.max_horizon_minutes) == (
        6 * step.total_seconds() // 60,
        2 * step.total_seconds() // 60,
    )
    samples = build_samples({"S": frame}, FEATURES, spec)
    folds, holdout = split(samples, RecipeConfig(model_type="lstm", n_folds=2, holdout_fraction=0.2))
    times = pd.to_datetime(samples.sample_time, utc=True)
    for fold in [*folds, holdout]:
        val_start = times[fold.validation].min()
        before = times[fold.train][times[fold.train] < val_start]
        # the newest training label ends before the oldest validation window begins
        assert before.max() + 2 * step < val_start - 5 * step
    with pytest.raises(ValueError, match="unsupported candle interval"):
        DatasetSpec(interval="2h")
