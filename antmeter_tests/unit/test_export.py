"""ONNX export, INT8 quantization and parity on small trained models; no pickle anywhere."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from antmeter.learn.bundle import ONNX_FP32, SERVING_FILE, ServingModel
from antmeter.learn.datasets import FeatureScaler, FeatureSchema
from antmeter.learn.lightning_loop import load_weights, predict, save_weights, train_model
from antmeter.learn.models import build_model
from antmeter.learn.onnx import (
    OPSET,
    OnnxPredictor,
    check_parity,
    export_onnx,
    parity_report,
    quantize_int8,
)

WINDOW, FEATURES, HORIZONS = 24, 6, (1, 3)
TINY = {
    "lstm": {"lstm_units": [24, 12], "dense_units": 8},
    "transformer": {"d_model": 16, "n_heads": 2, "depth": 1, "d_ff": 32},
    "patchtst": {
        "patch_len": 8,
        "stride": 4,
        "d_model": 16,
        "n_heads": 2,
        "depth": 1,
        "d_ff": 32,
        "pooling": "cls",
    },
}
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads on a shared 2-core machine; restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data(n_classes: int) -> tuple[Subset, Subset, np.ndarray, np.ndarray]:
    """Windows where the last steps of feature 0 set the returns; 500 train / 300 validation samples."""
    rng = np.random.default_rng(11)
    n = 800
    x = rng.normal(size=(n, WINDOW, FEATURES)).astype(np.float32)
    drive = x[:, -3:, 0].mean(axis=1)
    y_reg = np.stack([drive * h + 0.3 * rng.normal(size=n) for h in HORIZONS], axis=1).astype(np.float32)
    if n_classes == 2:
        y_class = (y_reg > 0).astype(np.int64)
    else:
        y_class = np.digitize(y_reg, [-0.3, 0.3]).astype(np.int64)
    full = TensorDataset(
        torch.from_numpy(x),
        torch.from_numpy(y_class),
        torch.from_numpy(y_reg),
        torch.zeros(n, dtype=torch.int64),
    )
    return Subset(full, range(500)), Subset(full, range(500, n)), x[500:], y_class[500:]


@pytest.mark.parametrize(
    ("model_type", "task"),
    [("lstm", "binary"), ("transformer", "three_class"), ("patchtst", "binary"), ("patchtst", "three_class")],
)
def test_trained_model_exports_quantizes_and_keeps_parity(model_type: str, task: str, tmp_path: Path) -> None:
    n_classes = 2 if task == "binary" else 3
    train_ds, val_ds, x_val, y_val = _data(n_classes)
    result = train_model(
        model_type,
        train_ds,
        val_ds,
        n_features=FEATURES,
        window=WINDOW,
        horizons=HORIZONS,
        n_classes=n_classes,
        params=TINY[model_type],
        seed=5,
        checkpoint_dir=tmp_path / "checkpoints",
        max_epochs=3,
        patience=3,
        batch_size=50,
        lr=5e-3,
    )
    assert (
        result.history[-1]["val_class_loss"] < result.history[0]["val_class_loss"]
    )  # it did learn something
    # the exported model is the one rebuilt from safetensors + JSON, as a deployment would do it
    model = load_weights(save_weights(result.model, tmp_path / "weights"))
    fp32 = export_onnx(model, FEATURES, WINDOW, tmp_path / "model.onnx")
    int8 = quantize_int8(fp32, tmp_path / "model.int8.onnx")

    report = parity_report(model, fp32, int8, x_val, task, y_class=y_val)
    assert check_parity(report) == [], report
    assert report["fp32_max_abs_proba_diff"] <= 1e-4 and report["int8_max_abs_proba_diff"] <= 0.02
    assert report["int8_decisive_cells"] > 0.5 * y_val.size
    assert abs(report["int8_log_loss_increase"]) <= 0.005
    # the trained model beats the uninformed log loss, so the parity is checked on a meaningful model
    assert report["torch_log_loss"] < np.log(n_classes)

    graph = onnx.load(str(int8 if model_type == "lstm" else fp32))
    assert [o.name for o in graph.graph.output] == ["proba", "regression"]
    assert graph.graph.input[0].name == "x"
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert onnx.load(str(fp32)).opset_import[0].version == OPSET
    if model_type == "lstm":
        assert any(node.op_type == "DynamicQuantizeLSTM" for node in graph.graph.node)


def test_onnx_predictor_handles_any_batch_size_and_checks_shapes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(
        "lstm", n_features=FEATURES, window=WINDOW, horizons=HORIZONS, n_classes=3, params=TINY["lstm"]
    )
    path = export_onnx(model.eval(), FEATURES, WINDOW, tmp_path / "m.onnx")
    predictor = OnnxPredictor(path, intra_op_threads=1)
    for n in (1, 33):
        x = np.random.default_rng(n).normal(size=(n, WINDOW, FEATURES)).astype(np.float32)
        proba, regression = predictor.predict(x)
        torch_proba, torch_regression = predict(model, x)
        assert proba.shape == (n, len(HORIZONS), 3) and regression.shape == (n, len(HORIZONS))
        np.testing.assert_allclose(proba, torch_proba, atol=1e-5)
        np.testing.assert_allclose(regression, torch_regression, atol=1e-5)
    with pytest.raises(ValueError, match=r"expects inputs of shape \(N, 24, 6\)"):
        predictor.predict(np.zeros((2, WINDOW, FEATURES + 1), dtype=np.float32))


def test_served_bundle_scales_windows_and_unscales_forecasts_in_any_batching(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = build_model(
        "lstm", n_features=FEATURES, window=WINDOW, horizons=HORIZONS, n_classes=2, params=TINY["lstm"]
    )
    export_onnx(model.eval(), FEATURES, WINDOW, tmp_path / ONNX_FP32)
    rng = np.random.default_rng(3)
    raw = (5.0 + 2.0 * rng.normal(size=(70, WINDOW, FEATURES))).astype(np.float32)
    schema = FeatureSchema(tuple(f"f{i}" for i in range(FEATURES)), ("float32",) * FEATURES)
    scaler = FeatureScaler.fit(raw.reshape(-1, FEATURES), schema)
    scaler.save(tmp_path)
    target = {"mean": [0.01, -0.02], "std": [2.0, 3.0]}
    (tmp_path / SERVING_FILE).write_text(
        json.dumps({"window": WINDOW, "horizons": list(HORIZONS), "target_scaler": target})
    )
    bundle = ServingModel.load(tmp_path)
    assert bundle.precision == "fp32"

    proba, forecast = bundle.predict_windows(raw)  # one session call
    torch_proba, torch_regression = predict(model, scaler.transform(raw))
    np.testing.assert_allclose(proba, torch_proba, atol=1e-5)
    np.testing.assert_allclose(forecast, torch_regression * target["std"] + target["mean"], atol=1e-5)
    batched = bundle.predict_windows(raw, batch_size=16)  # five calls, concatenated
    np.testing.assert_allclose(batched[0], proba, atol=1e-6)
    np.testing.assert_allclose(batched[1], forecast, atol=1e-6)
    single = bundle.predict_windows(raw[5:6])
    np.testing.assert_allclose(single[0], proba[5:6], atol=1e-6)
    with pytest.raises(ValueError, match=r"expects windows of shape \(N, 24, 6\)"):
        bundle.predict_windows(raw[:, :, :-1])


def test_parity_check_catches_an_export_of_a_different_model(tmp_path: Path) -> None:
    torch.manual_seed(1)
    exported = build_model(
        "lstm", n_features=FEATURES, window=WINDOW, horizons=HORIZONS, n_classes=2, params=TINY["lstm"]
    )
    other = build_model(
        "lstm", n_features=FEATURES, window=WINDOW, horizons=HORIZONS, n_classes=2, params=TINY["lstm"]
    )
    fp32 = export_onnx(exported.eval(), FEATURES, WINDOW, tmp_path / "m.onnx")
    int8 = quantize_int8(fp32, tmp_path / "m.int8.onnx")
    x = np.random.default_rng(0).normal(size=(64, WINDOW, FEATURES)).astype(np.float32)
    assert check_parity(parity_report(exported, fp32, int8, x, "binary")) == []
    problems = check_parity(parity_report(other.eval(), fp32, int8, x, "binary"))
    assert any(p.startswith("fp32_max_abs_proba_diff") for p in problems)
    with pytest.raises(ValueError, match="needs 3 classes"):
        parity_report(exported, fp32, int8, x, "three_class")


def test_check_parity_applies_each_threshold() -> None:
    good = {
        "fp32_max_abs_proba_diff": 5e-5,
        "fp32_max_abs_regression_diff": 9e-5,
        "int8_max_abs_proba_diff": 0.049,
        "int8_class_agreement_decisive": 0.99,
        "int8_log_loss_increase": 0.0049,
    }
    assert check_parity(good) == []
    assert check_parity({k: v for k, v in good.items() if k != "int8_log_loss_increase"}) == []
    for key, bad in [
        ("fp32_max_abs_proba_diff", 2e-4),
        ("fp32_max_abs_regression_diff", 2e-4),
        ("int8_max_abs_proba_diff", 0.06),
        ("int8_class_agreement_decisive", 0.98),
        ("int8_log_loss_increase", 0.006),
        ("fp32_max_abs_proba_diff", float("nan")),
    ]:
        problems = check_parity({**good, key: bad})
        assert len(problems) == 1 and problems[0].startswith(key), (key, problems)


def test_no_pickle_in_model_code() -> None:
    """Weights travel as safetensors/JSON; any torch.load must be weights_only=True."""
    sources = sorted((REPO_ROOT / "antmeter").rglob("*.py"))
    assert REPO_ROOT / "antmeter" / "learn" / "lightning_loop.py" in sources
    for source in sources:
        text = source.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import pickle|from pickle|import dill|import joblib)", text, re.M), source
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (source, call)
        assert "mlflow.pytorch.log_model" not in text and "torch.save(model" not in text, source
