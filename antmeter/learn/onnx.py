"""ONNX export of the multi-task models, dynamic INT8 quantization, an ONNX Runtime predictor, and a
parity check between the PyTorch model, its fp32 export and its INT8 export.

The exported graph takes ``x [batch, window, features]`` float32 and returns ``proba [batch, H, C]``
(softmax applied inside the graph) and ``regression [batch, H]`` (standardized units), with a dynamic batch
axis. Export uses the TorchScript exporter (``dynamo=False``): the dynamo export of ``nn.LSTM`` makes
``quantize_dynamic`` fail with a shape-inference error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

OPSET = 17
INPUT_NAME = "x"
OUTPUT_NAMES = ("proba", "regression")
_OUTPUT_LIST = list(OUTPUT_NAMES)  # what InferenceSession.run takes, built once
TASK_CLASSES = {"binary": 2, "three_class": 3}

FP32_TOLERANCE = 1e-4
# The worst cell of N x H probabilities is a coarse guard against broken quantization, not a measure
# of quality: the gate scores the INT8 model itself, and class agreement on decisive cells and the
# log-loss increase below bound what matters. Its value depends on the CPU's integer kernels: the same
# ci-preset LSTM gave 0.021-0.026 on an AVX2 EPYC without VNNI (per channel, 7-bit), under 0.02 on
# AVX-512 VNNI machines.
INT8_PROBA_TOLERANCE = 0.05
INT8_MIN_AGREEMENT = 0.99
INDIFFERENCE_MARGIN = 0.05
INT8_MAX_LOG_LOSS_INCREASE = 0.005


class _ProbabilityWrapper(nn.Module):
    """The model with softmax applied to its logits, as exported."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, regression = self.model(x)
        return torch.softmax(logits, dim=-1), regression


def export_onnx(model: nn.Module, n_features: int, window: int, path: str | os.PathLike[str]) -> Path:
    """Export ``model`` (eval mode, CPU) to ONNX opset 17 with a dynamic batch axis; returns the path.

    The file is written next to its final name and renamed, then checked with ``onnx.checker``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _ProbabilityWrapper(model).cpu().eval()
    example = torch.zeros(2, window, n_features, dtype=torch.float32)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the LSTM batch-size warning concerns variable-length sequences; ours are fixed-length windows
            warnings.filterwarnings("ignore", message=".*batch_size other than 1.*")
            # tracing notes about shape checks inside nn.LSTM and the exporter's own deprecation notice
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings(
                "ignore", message="The feature will be removed", category=DeprecationWarning
            )
            warnings.filterwarnings(
                "ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning
            )
            torch.onnx.export(
                wrapper,
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}},
                do_constant_folding=True,
            )
        onnx.checker.check_model(str(tmp))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


@contextlib.contextmanager
def _without_preprocessing_hint() -> Iterator[None]:
    """Drop onnxruntime's root-logger advice to run its pre-processing (it suits static quantization)."""
    root = logging.getLogger()
    hint = _DropMessage("pre-processing before quantization")
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def quantize_int8(fp32_path: str | os.PathLike[str], int8_path: str | os.PathLike[str]) -> Path:
    """Dynamic INT8 quantization (QInt8 weights, activations quantized at run time) of an fp32 export.

    Weights per output channel with a 7-bit range: on x86 CPUs without VNNI (AVX2, AVX-512F) ONNX
    Runtime's u8s8 kernels add pairs of products in int16 and saturate at full 8-bit range. Measured on
    an AVX2 EPYC with the ci-preset LSTM: max |p_int8 - p_torch| 0.057 with the defaults, 0.026 with
    ``reduce_range`` alone, 0.020 with both."""
    target = Path(int8_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with _without_preprocessing_hint():
            quantize_dynamic(
                str(fp32_path), str(tmp), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True
            )
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


class OnnxPredictor:
    """ONNX Runtime inference on the CPU: ``predict(x [N, W, F]) -> (proba [N, H, C], regression [N, H])``.

    ``per_window=True`` scores each window on its own. A dynamically quantized (INT8) graph takes one
    activation scale per tensor from the whole batch, so windows scored together change each other's
    predictions; served INT8 models (and their parity check) score one window at a time.
    """

    def __init__(self, path: str | os.PathLike[str], intra_op_threads: int = 1, per_window: bool = False):
        self.per_window = per_window
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        shape = self.session.get_inputs()[0].shape
        self.window, self.n_features = int(shape[1]), int(shape[2])

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the graph on float32 windows ``[N, window, features]``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.window, self.n_features):
            raise ValueError(
                f"{self.path.name} expects inputs of shape (N, {self.window}, {self.n_features}), got {x.shape}"
            )
        if self.per_window and len(x) > 1:
            probas, regressions = zip(
                *(self.session.run(_OUTPUT_LIST, {INPUT_NAME: x[i : i + 1]}) for i in range(len(x))),
                strict=True,
            )
            return np.concatenate(probas), np.concatenate(regressions)
        proba, regression = self.session.run(_OUTPUT_LIST, {INPUT_NAME: x})
        return proba, regression


def _margin(proba: np.ndarray) -> np.ndarray:
    """Top-two probability gap per row and horizon (equals 2|p - 0.5| for two classes)."""
    top_two = np.sort(proba, axis=-1)[..., -2:]
    return top_two[..., 1] - top_two[..., 0]


def _log_loss(proba: np.ndarray, y_class: np.ndarray) -> float:
    picked = np.take_along_axis(proba.astype(np.float64), y_class[..., None].astype(np.int64), axis=-1)[
        ..., 0
    ]
    return float(-np.log(np.clip(picked, 1e-15, 1.0)).mean())


def parity_report(
    model: nn.Module,
    fp32_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str],
    x: np.ndarray,
    task: str,
    y_class: np.ndarray | None = None,
) -> dict[str, Any]:
    """Compare the torch model, the fp32 export and the INT8 export on the same windows ``x``.

    Reports max absolute differences (probabilities, regression), the INT8 arg-max class agreement on the
    decisive cells (binary: ``|p - 0.5| > 0.05``; three-class: top-two margin ``> 0.05``) and, when labels
    ``y_class [N, H]`` are given, the log loss of each (mean over samples and horizons).
    """
    from antmeter.learn.lightning_loop import predict

    if task not in TASK_CLASSES:
        raise ValueError(f"task must be one of {sorted(TASK_CLASSES)}, got {task!r}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    torch_proba, torch_reg = predict(model, x)
    if torch_proba.shape[-1] != TASK_CLASSES[task]:
        raise ValueError(
            f"task {task!r} needs {TASK_CLASSES[task]} classes, the model outputs {torch_proba.shape[-1]}"
        )
    fp32_proba, fp32_reg = OnnxPredictor(fp32_path).predict(x)
    int8_proba, int8_reg = OnnxPredictor(int8_path, per_window=True).predict(x)  # as it is served
    # binary |p - 0.5| > 0.05 is a top-two margin > 0.1; three-class uses the top-two margin > 0.05
    threshold = 2 * INDIFFERENCE_MARGIN if task == "binary" else INDIFFERENCE_MARGIN
    decisive = _margin(torch_proba) > threshold
    agree = int8_proba.argmax(-1) == torch_proba.argmax(-1)
    report: dict[str, Any] = {
        "task": task,
        "n_samples": int(x.shape[0]),
        "fp32_max_abs_proba_diff": float(np.abs(fp32_proba - torch_proba).max()),
        "fp32_max_abs_regression_diff": float(np.abs(fp32_reg - torch_reg).max()),
        "int8_max_abs_proba_diff": float(np.abs(int8_proba - torch_proba).max()),
        "int8_max_abs_regression_diff": float(np.abs(int8_reg - torch_reg).max()),
        "int8_decisive_cells": int(decisive.sum()),
        "int8_class_agreement_decisive": float(agree[decisive].mean()) if decisive.any() else 1.0,
        "int8_class_agreement_all": float(agree.mean()),
        "fp32_bytes": Path(fp32_path).stat().st_size,
        "int8_bytes": Path(int8_path).stat().st_size,
    }
    if y_class is not None:
        labels = np.asarray(y_class)
        if labels.shape != torch_proba.shape[:2]:
            raise ValueError(f"y_class must have shape {torch_proba.shape[:2]}, got {labels.shape}")
        report["torch_log_loss"] = _log_loss(torch_proba, labels)
        report["int8_log_loss"] = _log_loss(int8_proba, labels)
        report["int8_log_loss_increase"] = report["int8_log_loss"] - report["torch_log_loss"]
    return report


def check_parity(report: Mapping[str, Any]) -> list[str]:
    """The problems in a :func:`parity_report` (an empty list means the exports may be used)."""
    problems = []
    for key in ("fp32_max_abs_proba_diff", "fp32_max_abs_regression_diff"):
        if not report[key] <= FP32_TOLERANCE:
            problems.append(f"{key} = {report[key]:.3g} exceeds {FP32_TOLERANCE:g}")
    if not report["int8_max_abs_proba_diff"] <= INT8_PROBA_TOLERANCE:
        problems.append(
            f"int8_max_abs_proba_diff = {report['int8_max_abs_proba_diff']:.3g} exceeds {INT8_PROBA_TOLERANCE:g}"
        )
    if not report["int8_class_agreement_decisive"] >= INT8_MIN_AGREEMENT:
        problems.append(
            f"int8_class_agreement_decisive = {report['int8_class_agreement_decisive']:.4f} "
            f"below {INT8_MIN_AGREEMENT:g}"
        )
    increase = report.get("int8_log_loss_increase")
    if increase is not None and not increase <= INT8_MAX_LOG_LOSS_INCREASE:
        problems.append(f"int8_log_loss_increase = {increase:.4g} exceeds {INT8_MAX_LOG_LOSS_INCREASE:g}")
    return problems
